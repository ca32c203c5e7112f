"""MLflow runs of the training stage: config, data version, per-epoch metrics, charts and the model."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from cloudlulc import schema
from cloudlulc.data.layout import SPLITS, DatasetLayout
from cloudlulc.models.networks import SegmentationNetwork
from cloudlulc.tracking.model_wrapper import PACKED_CHANNELS, PackedInputModel
from cloudlulc.tracking.provenance import provenance_tags
from cloudlulc.tracking.settings import ABSENT_ERROR_CODES, TrackingError, TrackingSettings, ensure_reachable
from cloudlulc.training.calibration import reliability_figure
from cloudlulc.training.metrics import SegmentationMetrics

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def data_version(dataset: str) -> str:
    """SHA-256 (first 16 hex digits) of the dataset's split files: what a model was trained on."""
    layout = DatasetLayout(dataset)
    digest = hashlib.sha256()
    for split in SPLITS:
        key = layout.split_key(split)
        if layout.storage.exists(key):
            digest.update(split.encode() + b"\0" + layout.storage.read_bytes(key))
    return digest.hexdigest()[:16]


def _flatten(prefix: str, metrics: SegmentationMetrics) -> dict[str, float]:
    values = {
        f"{prefix}oa": metrics.overall_accuracy,
        f"{prefix}macro_f1": metrics.macro_f1,
        f"{prefix}miou": metrics.miou,
    }
    for name, iou in zip(schema.CLASS_NAMES, metrics.iou, strict=False):
        if not np.isnan(iou):
            values[f"{prefix}iou_{name.lower().replace(' ', '_').replace('-', '_')}"] = iou
    return {k: float(v) for k, v in values.items() if not np.isnan(v)}


def evaluation_metrics(result: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
    """Flat MLflow metrics of an evaluation: overall, then ``<prefix>bin_<low>_<high>_miou`` per cloud bin."""
    values = _flatten(prefix, result["overall"])
    for label, metrics in result["bins"].items():
        values[f"{prefix}bin_{label.rstrip('%').replace('-', '_')}_miou"] = float(metrics.miou)
    if "calibration" in result:
        histograms = {
            "": result["calibration"]["overall"],
            **{f"bin_{label.rstrip('%').replace('-', '_')}_": h for label, h in result["calibration"]["bins"].items()},
        }
        values.update({f"{prefix}{name}ece": h.ece() for name, h in histograms.items() if h.count.sum()})
    return values


def confusion_figure(confusion: list[list[int]]) -> Any:
    """A row-normalised confusion matrix as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion, dtype=float)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(6, 5))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axis.set(
        xticks=range(len(matrix)),
        yticks=range(len(matrix)),
        xlabel="prediction",
        ylabel="reference",
        title="Confusion matrix (row-normalised)",
    )
    axis.set_xticklabels(schema.CLASS_NAMES, rotation=45, ha="right")
    axis.set_yticklabels(schema.CLASS_NAMES)
    for (row, col), value in np.ndenumerate(normalised):
        axis.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color="w" if value > 0.5 else "k")
    figure.colorbar(image)
    figure.tight_layout()
    return figure


def cloud_bin_figure(result: dict[str, Any]) -> Any:
    """MIoU per cloud-cover bin as a bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result["bins"])
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.bar(labels, [100 * result["bins"][label].miou for label in labels], color="#4a7ab5", edgecolor="k")
    axis.set(xlabel="cloud cover", ylabel="mIoU (%)", ylim=(0, 100), title="mIoU per cloud-cover bin")
    figure.tight_layout()
    return figure


EXAMPLE_SIZE = 64
"""Side of the logged input example: the smallest tile whose deepest feature map (1/32) is not 1 x 1,
which torch.export would otherwise specialise to a constant size."""


class RunLogger:
    """Logs one training run; created by :func:`tracked_run`."""

    def __init__(self, mlflow_module: Any, run_id: str, experiment_id: str) -> None:
        self.mlflow = mlflow_module
        self.run_id = run_id
        self.experiment_id = experiment_id

    def log_dataset(self, uri: str, digest: str) -> None:
        """Record the dataset as the run's input (source and digest), so MLflow's UI lists what it trained on."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        name = uri.rstrip("/").rsplit("/", 1)[-1] or uri
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow registers two local-folder source types and says so
            source = resolve_dataset_source(uri)
        dataset = MetaDataset(source, name=name, digest=digest)  # type: ignore[abstract]  # MLflow's documented use
        self.mlflow.log_input(dataset, context="training")

    def log_epoch(self, epoch: int, record: dict[str, float]) -> None:
        """Per-epoch losses and validation metrics."""
        self.mlflow.log_metrics({k: v for k, v in record.items() if k != "epoch" and not np.isnan(v)}, step=epoch)

    def log_evaluation(self, result: dict[str, Any], prefix: str = "test_") -> dict[str, float]:
        """Test metrics, the confusion matrix and the per-cloud-bin chart."""
        import matplotlib.pyplot as plt

        metrics = evaluation_metrics(result, prefix)
        self.mlflow.log_metrics(metrics)
        for name, figure in (
            ("confusion_matrix.png", confusion_figure(result["confusion"])),
            ("miou_per_cloud_bin.png", cloud_bin_figure(result)),
            ("reliability_diagram.png", reliability_figure(result["calibration"])),
        ):
            self.mlflow.log_figure(figure, f"plots/{name}")
            plt.close(figure)
        self.mlflow.log_dict({"confusion": result["confusion"]}, "metrics/confusion.json")
        return metrics

    def log_model(self, network: SegmentationNetwork, size: int = EXAMPLE_SIZE) -> str:
        """Log the network (MLflow 3 ``name=`` API) with a small input example and signature; return its URI.

        MLflow stores it as a ``pt2`` program (torch.export: loading runs no pickled code), exported with
        batch, height and width dynamic (``-1`` in the signature), so pyfunc users predict on any tile
        size the network takes (a multiple of 32). The network config travels in the model metadata so
        the two-input network can be rebuilt for fine-tuning and export. The example (batch 2, so that
        the batch stays dynamic; quarter steps keep its JSON small) only traces the program.
        """
        wrapped = PackedInputModel(network).eval()
        shape = (2, PACKED_CHANNELS, size, size)
        example = (np.random.default_rng(0).integers(0, 5, shape) / 4).astype(np.float32)  # 0, 0.25 ... 1: short JSON
        info = self.mlflow.pytorch.log_model(
            wrapped,
            name="model",
            input_example=example,
            signature=packed_signature(network.config.num_classes),
            serialization_format="pt2",
            metadata={"network": json.dumps(network.config.model_dump(mode="json"))},
            pip_requirements=loading_requirements(),
        )
        return str(info.model_uri)


def packed_signature(num_classes: int) -> Any:
    """``float32 [B,14,H,W] -> float32 [B,K,H,W]`` with B, H and W free (``-1``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, PACKED_CHANNELS, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes, -1, -1))]),
    )


def loading_requirements() -> list[str]:
    """What loading the exported program needs, pinned to the versions that logged it.

    Not cloudlulc: the program carries no Python code of ours, and cloudlulc is no published package,
    so naming it would invite a look-alike from a public index.
    """
    from importlib.metadata import version

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={version('numpy')}"]


@contextmanager
def tracked_run(
    settings: TrackingSettings,
    run_name: str,
    params: dict[str, Any],
    tags: dict[str, str],
    *,
    resume_run_id: str | None = None,
) -> Iterator[RunLogger]:
    """Start an MLflow run (system metrics on), log params and tags, end it FAILED if the block raises.

    ``resume_run_id`` continues that run instead (a retried step), unless it finished or is gone.
    """
    ensure_reachable(settings.tracking_uri)
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        experiment = mlflow.get_experiment_by_name(settings.experiment)
        if experiment is None:
            mlflow.create_experiment(settings.experiment, artifact_location=settings.artifact_location())
        mlflow.set_experiment(settings.experiment)
    except Exception as error:  # MLflow raises MlflowException, requests errors, SQLAlchemy errors...
        raise TrackingError(
            f"MLflow at {settings.tracking_uri}: cannot open experiment {settings.experiment!r}: {error}"
        ) from error
    resume = resume_run_id if resume_run_id and _unfinished(mlflow, resume_run_id) else None
    try:
        with mlflow.start_run(run_id=resume, run_name=None if resume else run_name, log_system_metrics=True) as run:
            mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
            mlflow.set_tags({**tags, **provenance_tags()})
            yield RunLogger(mlflow, run.info.run_id, run.info.experiment_id)
    except MlflowException as error:  # a request MLflow gave up on mid-run (the run is ended FAILED first)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrackingError(f"MLflow at {settings.tracking_uri}: {first_line}") from error


def _unfinished(mlflow_module: Any, run_id: str) -> bool:
    """Whether ``run_id`` exists and did not finish (killed or failed: a retry may continue it).

    A run the server does not know (deleted, or recorded against another server) is not resumed; a
    server that fails to answer is a TrackingError, not a reason to start a second run.
    """
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_module.get_run(run_id).info.status != "FINISHED"
    except MlflowException as error:
        if error.error_code in ABSENT_ERROR_CODES:
            return False
        raise TrackingError(f"MLflow: cannot read run {run_id} to resume it: {error}") from error
