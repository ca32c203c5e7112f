"""Run a model over a split and score it with the evaluation protocol (overall and per cloud bin)."""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from cloudlulc import schema
from cloudlulc.data.clouds import sample_cloud_cover
from cloudlulc.data.dataset import CloudLULCDataset, Sample
from cloudlulc.data.layout import DatasetLayout, SampleRecord, Split
from cloudlulc.data.metadata import read_metadata
from cloudlulc.errors import DataError
from cloudlulc.models.networks import SIZE_MULTIPLE, SegmentationNetwork
from cloudlulc.training.calibration import CalibrationAccumulator
from cloudlulc.training.metrics import MetricAccumulator, SegmentationMetrics


@dataclass(frozen=True)
class CloudCovers:
    """Cloud cover of each sample of a split, and how many samples each source gave."""

    by_name: dict[str, float]
    sources: dict[str, int]

    def describe(self) -> str:
        """E.g. ``"cloud cover per sample: 4 from clear twin, 12 from metadata.csv"``."""
        return describe_cloud_sources(self.sources)


def describe_cloud_sources(sources: dict[str, int]) -> str:
    """Which source gave how many samples' cloud cover, as one line for people."""
    parts = [f"{count} from {source}" for source, count in sorted(sources.items())]
    return "cloud cover per sample: " + (", ".join(parts) if parts else "none (no samples)")


def cloud_covers(dataset: CloudLULCDataset) -> CloudCovers:
    """Cloud cover of every sample: ``metadata.csv`` where it has one, else derived from the rasters.

    Derived covers (cloud mask, clear twin, or the cloud test on the cloudy image) are remembered per
    dataset and split, so validating every epoch reads them once.
    """
    return _cloud_covers(dataset.layout.root, tuple(dataset.records))


@functools.lru_cache(maxsize=8)
def _cloud_covers(root: str, records: tuple[SampleRecord, ...]) -> CloudCovers:
    layout = DatasetLayout(root)
    metadata = read_metadata(layout)
    stored: dict[str, float] = {}
    if metadata is not None and "cloud_cover" in metadata:
        stored = {
            str(n): float(c)
            for n, c in zip(metadata["name"], metadata["cloud_cover"], strict=True)
            if not math.isnan(c)
        }
    by_name: dict[str, float] = {}
    sources: Counter[str] = Counter()
    for record in records:
        if record.name in stored:
            by_name[record.name], source = stored[record.name], "metadata.csv"
        else:
            by_name[record.name], source = sample_cloud_cover(layout, record)
        sources[source] += 1
    return CloudCovers(by_name, dict(sources))


MODALITIES = ("both", "optical", "sar")
"""What a model is fed: both images, Sentinel-2 only (SAR zeroed), or Sentinel-1 only (optics zeroed)."""


def feed(optical: torch.Tensor, sar: torch.Tensor, modalities: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs with the missing modality zeroed, as a missing modality is fed everywhere."""
    if modalities not in MODALITIES:
        raise ValueError(f"unknown modalities {modalities!r}; choose from {', '.join(MODALITIES)}")
    if modalities == "optical":
        return optical, torch.zeros_like(sar)
    if modalities == "sar":
        return torch.zeros_like(optical), sar
    return optical, sar


@torch.no_grad()
def evaluate_model(
    model: SegmentationNetwork,
    dataset: CloudLULCDataset,
    *,
    batch_size: int = 4,
    device: torch.device | None = None,
    modalities: str = "both",
) -> dict[str, object]:
    """Metrics of ``model`` on every sample of ``dataset`` (deterministic path, full patches).

    ``modalities`` feeds Sentinel-2 only or Sentinel-1 only (see :data:`MODALITIES`).
    """
    device = device or torch.device("cpu")
    covers = cloud_covers(dataset)
    accumulator = MetricAccumulator(model.config.num_classes)
    calibration = CalibrationAccumulator()
    was_training = model.training
    model.eval()
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_same_size_batch):
        logits = model(*feed(batch["optical"].to(device), batch["sar"].to(device), modalities))
        names = list(batch["name"])
        cover = [covers.by_name[n] for n in names]
        accumulator.update(logits.argmax(dim=1).cpu(), batch["label"], cover)
        calibration.update(torch.softmax(logits.float() / model.temperature, dim=1).cpu(), batch["label"], cover)
    model.train(was_training)
    return {**accumulator.result(), "calibration": calibration.result(), "cloud_cover_sources": covers.sources}


def _same_size_batch(samples: list[Sample]) -> dict[str, Any]:
    """Stack samples into a batch; samples of different sizes are a DataError naming both, not a stack error."""
    first = samples[0]
    for sample in samples[1:]:
        if sample["label"].shape != first["label"].shape:
            (rows, cols), (first_rows, first_cols) = sample["label"].shape, first["label"].shape
            raise DataError(
                sample["name"],
                f"sample is {cols} x {rows} pixels while {first['name']} is {first_cols} x {first_rows}: "
                "a split's patches must share one size",
            )
    return default_collate(samples)


def evaluation_dataset(
    root: str, split: Split, exclude: tuple[str, ...] = (), *, in_memory: bool = False
) -> CloudLULCDataset:
    """The deterministic dataset the protocol evaluates on (full patches, sides multiples of the network's stride)."""
    return CloudLULCDataset(root, split, exclude=exclude, size_multiple=SIZE_MULTIPLE, in_memory=in_memory)


def load_trained_model(checkpoint: str) -> SegmentationNetwork:
    """The network saved in a training checkpoint, in eval mode."""
    from pathlib import Path

    from cloudlulc.models.config import ModelConfig
    from cloudlulc.models.networks import build_model
    from cloudlulc.training.checkpoints import load_checkpoint

    state = load_checkpoint(Path(checkpoint))
    model = build_model(ModelConfig.model_validate(state["network"]))
    model.load_state_dict(state["model"])
    return model.eval()


def evaluation_document(result: dict[str, object]) -> dict[str, object]:
    """The protocol's result as plain JSON-ready values."""
    overall = result["overall"]
    bins = result["bins"]
    assert isinstance(overall, SegmentationMetrics) and isinstance(bins, dict)
    return {
        "overall": overall.as_dict(),
        "bins": {label: metrics.as_dict() for label, metrics in bins.items()},
        "cloud_cover_sources": result.get("cloud_cover_sources", {}),
        "calibration": _calibration_document(result["calibration"]),  # type: ignore[arg-type]
        "confusion": result["confusion"],
    }


def _calibration_document(calibration: dict[str, Any]) -> dict[str, object]:
    return {
        "overall": calibration["overall"].as_dict(),
        "bins": {label: histogram.as_dict() for label, histogram in calibration["bins"].items()},
    }


def evaluation_bin_records(result: dict[str, object]) -> list[dict[str, object]]:
    """One record per cloud-cover bin with pixels, lowest cover first: what plotting tools (DVC plots) read.

    Each record has the same keys: ``cloud_bin`` (the bin's label, e.g. ``"30-60%"``), ``miou``, ``oa``,
    ``macro_f1`` (None where undefined) and ``pixels``.
    """
    bins = result["bins"]
    assert isinstance(bins, dict)
    records: list[dict[str, object]] = []
    for label, metrics in bins.items():
        assert isinstance(metrics, SegmentationMetrics)
        scores = metrics.as_dict()
        records.append(
            {
                "cloud_bin": label,
                "miou": scores["miou"],
                "oa": scores["overall_accuracy"],
                "macro_f1": scores["macro_f1"],
                "pixels": metrics.pixels,
            }
        )
    return records


def evaluation_table(result: dict[str, object]) -> str:
    """OA / macro F1 / mIoU overall and per cloud bin, then per-class IoU and F1, as aligned text."""
    overall = result["overall"]
    bins = result["bins"]
    assert isinstance(overall, SegmentationMetrics) and isinstance(bins, dict)
    calibration = result["calibration"]
    assert isinstance(calibration, dict)
    histograms = {"overall": calibration["overall"], **calibration["bins"]}
    lines = [f"{'subset':<10} {'pixels':>10} {'OA':>7} {'F1':>7} {'mIoU':>7} {'ECE':>7}"]
    for label, metrics in [("overall", overall), *bins.items()]:
        ece = histograms[label].ece() if label in histograms else float("nan")
        lines.append(
            f"{label:<10} {metrics.pixels:>10} {metrics.overall_accuracy:>7.2%} {metrics.macro_f1:>7.2%} "
            f"{metrics.miou:>7.2%} {ece:>7.2%}"
        )
    if "cloud_cover_sources" in result:
        lines.append(describe_cloud_sources(result["cloud_cover_sources"]))  # type: ignore[arg-type]
    lines.append("")
    lines.append(f"{'class':<14} {'IoU':>7} {'F1':>7}")
    for name, iou, f1 in zip(schema.CLASS_NAMES, overall.iou, overall.f1, strict=False):
        lines.append(f"{name:<14} {iou:>7.2%} {f1:>7.2%}")
    return "\n".join(lines)
