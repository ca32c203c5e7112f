"""The evaluation protocol's numbers: OA, macro F1, mIoU, per-class IoU and F1, overall and per cloud bin.

Everything derives from confusion matrices (rows: reference, columns: prediction; label 255 ignored),
counted by torchmetrics, so results accumulate exactly over batches. A class that appears neither in
the reference nor in the prediction has an undefined IoU/F1 (NaN) and is left out of the means; a
class that is predicted but absent from the reference scores 0. The scores of a matrix are the few
lines of arithmetic in :func:`scores` (torchmetrics has no public API taking a matrix); a test checks
them against torchmetrics' Jaccard index, F1 score and accuracy on the same labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from cloudlulc import schema


def confusion_matrix(
    prediction: torch.Tensor | np.ndarray, reference: torch.Tensor | np.ndarray, num_classes: int = schema.NUM_CLASSES
) -> np.ndarray:
    """[K,K] int64 counts of (reference, prediction) pairs; reference pixels of 255 are skipped."""
    predicted = torch.as_tensor(prediction).reshape(-1).long()
    truth = torch.as_tensor(reference).reshape(-1).long()
    keep = truth != schema.IGNORE_INDEX
    if bool((truth[keep] >= num_classes).any()) or bool((truth[keep] < 0).any()):
        raise ValueError(f"reference holds values outside 0..{num_classes - 1} and {schema.IGNORE_INDEX}")
    counts = multiclass_confusion_matrix(
        predicted, truth, num_classes, ignore_index=schema.IGNORE_INDEX, validate_args=False
    )
    return counts.cpu().numpy().astype(np.int64)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Scores of one confusion matrix; per-class lists follow the class ids."""

    overall_accuracy: float
    macro_f1: float
    miou: float
    iou: list[float]
    f1: list[float]
    pixels: int

    def as_dict(self) -> dict[str, object]:
        """Plain dict with class names for JSON and MLflow; undefined scores (NaN) become None."""
        values: dict[str, object] = {k: _defined(v) for k, v in asdict(self).items() if k not in {"iou", "f1"}}
        values["iou"] = {name: _defined(v) for name, v in zip(schema.CLASS_NAMES, self.iou, strict=False)}
        values["f1"] = {name: _defined(v) for name, v in zip(schema.CLASS_NAMES, self.f1, strict=False)}
        return values


def _defined(value: float | int) -> float | int | None:
    return None if isinstance(value, float) and np.isnan(value) else value


def scores(matrix: np.ndarray) -> SegmentationMetrics:
    """OA, per-class IoU and F1, and their means over defined classes."""
    matrix = matrix.astype(np.float64)
    true_positive = np.diag(matrix)
    false_positive = matrix.sum(axis=0) - true_positive
    false_negative = matrix.sum(axis=1) - true_positive
    total = matrix.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = true_positive / (true_positive + false_positive + false_negative)
        f1 = 2 * true_positive / (2 * true_positive + false_positive + false_negative)
    defined = ~np.isnan(iou)
    return SegmentationMetrics(
        overall_accuracy=float(true_positive.sum() / total) if total else float("nan"),
        macro_f1=float(f1[defined].mean()) if defined.any() else float("nan"),
        miou=float(iou[defined].mean()) if defined.any() else float("nan"),
        iou=[float(v) for v in iou],
        f1=[float(v) for v in f1],
        pixels=int(total),
    )


class MetricAccumulator:
    """Confusion matrices over a whole evaluation: overall and per cloud-cover bin of each sample."""

    def __init__(self, num_classes: int = schema.NUM_CLASSES) -> None:
        self.num_classes = num_classes
        self.overall = np.zeros((num_classes, num_classes), np.int64)
        self.by_bin = {schema.cloud_bin_label(low): self.overall.copy() for low, _ in schema.CLOUD_BINS}

    def update(self, prediction: torch.Tensor, reference: torch.Tensor, cloud_cover: list[float] | None = None) -> None:
        """Add a batch [B,H,W]; ``cloud_cover`` (fractions, one per sample) fills the bins."""
        for index in range(prediction.shape[0]):
            matrix = confusion_matrix(prediction[index], reference[index], self.num_classes)
            self.overall += matrix
            if cloud_cover is not None:
                self.by_bin[schema.cloud_bin_label(float(cloud_cover[index]))] += matrix

    def result(self) -> dict[str, object]:
        """``overall`` metrics, ``bins`` metrics (bins without pixels left out) and the raw matrices."""
        return {
            "overall": scores(self.overall),
            "bins": {label: scores(matrix) for label, matrix in self.by_bin.items() if matrix.sum()},
            "confusion": self.overall.tolist(),
        }
