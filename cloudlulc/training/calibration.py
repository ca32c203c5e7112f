"""Calibrated confidence: temperature scaling fitted on the validation split, and the calibration error.

A map's confidence band is only useful if 0.8 means "right 8 times in 10". One temperature T divides
the logits before the softmax (Guo et al., 2017: one parameter, argmax unchanged); it is fitted by
minimising the negative log-likelihood of validation pixels and stored in the network
(``SegmentationNetwork.temperature``), so every predictor applies it. The expected calibration error
(ECE) is measured with equal-width confidence bins, overall and per cloud-cover bin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cloudlulc import schema
from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.models.networks import SegmentationNetwork

CONFIDENCE_BINS = 15
"""Equal-width confidence bins of the ECE and the reliability diagram (the common choice)."""
FIT_PIXELS = 1_000_000
"""Validation pixels the temperature is fitted on at most (an even subsample of every batch)."""
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass
class ReliabilityHistogram:
    """Per confidence bin: pixels, summed confidence and correct pixels."""

    count: np.ndarray = field(default_factory=lambda: np.zeros(CONFIDENCE_BINS, np.int64))
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(CONFIDENCE_BINS, np.float64))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(CONFIDENCE_BINS, np.int64))

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Add pixels: top-class probability and whether the top class was right (1-D, same length)."""
        index = np.minimum((confidence * CONFIDENCE_BINS).astype(np.int64), CONFIDENCE_BINS - 1)
        self.count += np.bincount(index, minlength=CONFIDENCE_BINS)
        self.confidence += np.bincount(index, weights=confidence, minlength=CONFIDENCE_BINS)
        self.correct += np.bincount(index, weights=correct, minlength=CONFIDENCE_BINS).astype(np.int64)

    def ece(self) -> float:
        """Expected calibration error: pixel-weighted mean |accuracy - confidence| over the bins (NaN if empty)."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        used = self.count > 0
        gap = np.abs(self.correct[used] / self.count[used] - self.confidence[used] / self.count[used])
        return float((self.count[used] * gap).sum() / total)

    def as_dict(self) -> dict[str, object]:
        """ECE and the diagram's points (mean confidence and accuracy per non-empty bin) for JSON."""
        used = self.count > 0
        return {
            "ece": None if np.isnan(self.ece()) else self.ece(),
            "pixels": int(self.count.sum()),
            "bin_count": self.count.tolist(),
            "bin_confidence": np.where(used, self.confidence / np.maximum(self.count, 1), np.nan).tolist(),
            "bin_accuracy": np.where(used, self.correct / np.maximum(self.count, 1), np.nan).tolist(),
        }


class CalibrationAccumulator:
    """Reliability histograms over an evaluation: overall and per cloud-cover bin of each sample."""

    def __init__(self) -> None:
        self.overall = ReliabilityHistogram()
        self.by_bin = {schema.cloud_bin_label(low): ReliabilityHistogram() for low, _ in schema.CLOUD_BINS}

    def update(self, probabilities: torch.Tensor, reference: torch.Tensor, cloud_cover: list[float]) -> None:
        """Add a batch: probabilities [B,K,H,W], labels [B,H,W] (255 skipped), one cover per sample."""
        confidence, predicted = probabilities.max(dim=1)
        for index in range(probabilities.shape[0]):
            keep = reference[index] != schema.IGNORE_INDEX
            top = confidence[index][keep].double().cpu().numpy()
            right = (predicted[index][keep] == reference[index][keep]).cpu().numpy().astype(np.float64)
            self.overall.add(top, right)
            self.by_bin[schema.cloud_bin_label(float(cloud_cover[index]))].add(top, right)

    def result(self) -> dict[str, object]:
        """``overall`` and per-bin histograms (bins without pixels left out)."""
        return {
            "overall": self.overall,
            "bins": {label: histogram for label, histogram in self.by_bin.items() if histogram.count.sum()},
        }


@torch.no_grad()
def validation_logits(
    model: SegmentationNetwork,
    dataset: CloudLULCDataset,
    *,
    batch_size: int = 4,
    device: torch.device | None = None,
    max_pixels: int = FIT_PIXELS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw logits [N,K] and labels [N] of labelled pixels, an even subsample of at most ``max_pixels``."""
    device = device or torch.device("cpu")
    was_training = model.training
    model.eval()
    logits_parts, label_parts = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = model(batch["optical"].to(device), batch["sar"].to(device)).float().cpu()
        labels = batch["label"]
        keep = labels != schema.IGNORE_INDEX
        logits_parts.append(logits.permute(0, 2, 3, 1)[keep])
        label_parts.append(labels[keep])
    model.train(was_training)
    logits, labels = torch.cat(logits_parts), torch.cat(label_parts)
    if len(labels) > max_pixels:
        step = -(-len(labels) // max_pixels)
        logits, labels = logits[::step], labels[::step]
    return logits, labels


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` under ``softmax(logits / T)``."""
    if len(labels) == 0:
        return 1.0
    log_t = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100, line_search_fn="strong_wolfe")
    low, high = (float(np.log(v)) for v in TEMPERATURE_RANGE)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.clamp(low, high).exp(), labels.long())
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().clamp(low, high).exp())


def calibration_error(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """ECE of pixels [N,K] / [N] at ``temperature``."""
    histogram = ReliabilityHistogram()
    confidence, predicted = torch.softmax(logits / temperature, dim=1).max(dim=1)
    histogram.add(confidence.double().numpy(), (predicted == labels).numpy().astype(np.float64))
    return histogram.ece()


def calibrate(
    model: SegmentationNetwork, dataset: CloudLULCDataset, *, device: torch.device | None = None
) -> dict[str, float]:
    """Fit the temperature on ``dataset`` (the validation split), store it in ``model``, return the figures.

    The temperature minimising the validation NLL is kept only if it does not raise the validation
    ECE, the figure every evaluation reports; otherwise (a model whose logits carry little yet, as
    after a few steps, drives the fit to the bound) the model stays uncalibrated (T = 1), and
    ``fitted_temperature`` records what the fit found.
    """
    logits, labels = validation_logits(model, dataset, device=device)
    fitted = fit_temperature(logits, labels)
    before, after = calibration_error(logits, labels, 1.0), calibration_error(logits, labels, fitted)
    temperature = fitted if after <= before else 1.0
    model.temperature.fill_(temperature)
    return {
        "temperature": temperature,
        "fitted_temperature": fitted,
        "val_ece_uncalibrated": before,
        "val_ece": min(before, after),
    }


def reliability_figure(calibration: dict[str, object]) -> Any:
    """Reliability diagram: accuracy against confidence, overall and per cloud bin, ECE in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    overall = calibration["overall"]
    bins = calibration["bins"]
    assert isinstance(overall, ReliabilityHistogram) and isinstance(bins, dict)
    curves = [("overall", overall, 2.2), *((f"cloud {label}", histogram, 1.0) for label, histogram in bins.items())]
    for name, histogram, width in curves:
        used = histogram.count > 0
        confidence, accuracy = (
            values[used] / histogram.count[used] for values in (histogram.confidence, histogram.correct)
        )
        label = f"{name} (ECE {100 * histogram.ece():.1f} %)"
        axis.plot(
            confidence,
            accuracy,
            marker="o",
            markersize=3,
            linewidth=width,
            color="k" if name == "overall" else None,
            label=label,
        )
    axis.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence (top-class probability)",
        ylabel="accuracy",
        title="Reliability diagram",
    )
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    return figure
