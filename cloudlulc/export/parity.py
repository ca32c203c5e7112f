"""Parity of an exported model with PyTorch on real samples: the gate every export must pass.

A runner is any ``(optical [B,12,H,W], sar [B,2,H,W]) -> probs [B,6,H,W]`` function over float32
numpy arrays, so PyTorch, ONNX Runtime, TensorRT and a Triton client are compared the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.errors import DataError
from cloudlulc.models.networks import SIZE_MULTIPLE, SegmentationNetwork

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]

MAX_ABS_DIFF = 1e-4
MIN_ARGMAX_AGREEMENT = 0.999


@dataclass(frozen=True)
class ParityReport:
    """How far a candidate runner is from the reference on the same inputs."""

    samples: int
    pixels: int
    max_abs_diff: float
    argmax_agreement: float
    max_abs_limit: float
    min_agreement: float

    @property
    def passed(self) -> bool:
        """Both limits hold."""
        return self.max_abs_diff <= self.max_abs_limit and self.argmax_agreement >= self.min_agreement

    def summary(self) -> str:
        """One line for logs and error messages."""
        return (
            f"max |dp| {self.max_abs_diff:.2e} (limit {self.max_abs_limit:.0e}), argmax agreement "
            f"{self.argmax_agreement:.4%} (limit {self.min_agreement:.1%}) on {self.samples} samples"
        )

    def to_json(self) -> str:
        """The report with its verdict, for the file beside the export."""
        return json.dumps({**asdict(self), "passed": self.passed}, indent=2) + "\n"


def torch_runner(network: SegmentationNetwork) -> Runner:
    """The PyTorch reference: the network's calibrated probabilities, on the CPU in float32."""
    network = network.eval().cpu()

    def run(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return network.probabilities(torch.from_numpy(optical), torch.from_numpy(sar)).numpy()

    return run


def parity_samples(dataset: str, count: int = 8, split: str = "test") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Up to ``count`` real samples of a CloudLULC-Set split, centre-cropped to a multiple of the model stride."""
    probe = CloudLULCDataset(dataset, split)  # type: ignore[arg-type]
    if len(probe) == 0:
        raise DataError(dataset, f"split {split!r} holds no samples for the parity check")
    first = probe[0]["optical"]
    side = min(first.shape[-2:]) // SIZE_MULTIPLE * SIZE_MULTIPLE
    if side == 0:
        raise DataError(dataset, f"patches of {tuple(first.shape[-2:])} px are smaller than {SIZE_MULTIPLE} px")
    samples = CloudLULCDataset(dataset, split, crop_size=side)  # type: ignore[arg-type]
    for index in range(min(count, len(samples))):
        item = samples[index]
        yield item["optical"][None].numpy(), item["sar"][None].numpy()


def check_parity(
    reference: Runner,
    candidate: Runner,
    samples: Iterator[tuple[np.ndarray, np.ndarray]],
    *,
    max_abs_diff: float = MAX_ABS_DIFF,
    min_agreement: float = MIN_ARGMAX_AGREEMENT,
) -> ParityReport:
    """Run both on every sample; worst absolute probability difference and share of equal argmax."""
    worst, agree, pixels, count = 0.0, 0, 0, 0
    for optical, sar in samples:
        expected = reference(optical, sar)
        actual = candidate(optical, sar)
        if actual.shape != expected.shape:
            raise ValueError(f"candidate returned {actual.shape}, reference {expected.shape}")
        worst = max(worst, float(np.abs(actual.astype(np.float32) - expected).max()))
        agree += int((actual.argmax(axis=1) == expected.argmax(axis=1)).sum())
        pixels += expected.shape[0] * expected.shape[2] * expected.shape[3]
        count += expected.shape[0]
    if count == 0:
        raise ValueError("no samples for the parity check")
    return ParityReport(count, pixels, worst, agree / pixels, max_abs_diff, min_agreement)
