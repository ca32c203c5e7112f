"""Losses and metrics of training and of the evaluation protocol."""

from cloudlulc.training.losses import CloudLULCLoss, LossWeights
from cloudlulc.training.metrics import MetricAccumulator, SegmentationMetrics, confusion_matrix, scores

__all__ = ["CloudLULCLoss", "LossWeights", "MetricAccumulator", "SegmentationMetrics", "confusion_matrix", "scores"]
