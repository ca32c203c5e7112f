"""The train and gate stages as library functions (the CLI, components and DVC call these)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cloudlulc.models.config import ModelConfig
from cloudlulc.models.networks import SegmentationNetwork, build_model
from cloudlulc.tracking.provenance import run_url
from cloudlulc.tracking.registry import CHALLENGER, CHAMPION, GateConfig, GateDecision, Registry
from cloudlulc.tracking.runs import RunLogger, data_version, evaluation_metrics, tracked_run
from cloudlulc.tracking.settings import TrackingError, TrackingSettings, ensure_reachable
from cloudlulc.training.config import TrainConfig
from cloudlulc.training.durable import DurableWork, read_run_record, write_run_record
from cloudlulc.training.evaluation import evaluate_model, evaluation_dataset
from cloudlulc.training.trainer import check_training_paths, train


@dataclass(frozen=True)
class TrainStageResult:
    """What the train stage produced."""

    run_id: str
    model_uri: str
    version: str
    test_metrics: dict[str, float]
    run_url: str | None = None
    """The run's page in MLflow's UI (None for a local store)."""


def run_train_stage(
    config: TrainConfig, settings: TrackingSettings, *, progress: bool = True, work_uri: str | None = None
) -> TrainStageResult:
    """Train, evaluate on the test split, log everything to MLflow, register as ``challenger``.

    The model version is registered only after the run's model is fully logged; a failure before
    that leaves a FAILED run and no new version. A rerun into the same ``output_dir`` (or, with
    ``work_uri``, a retried step on a fresh machine: see :class:`DurableWork`) resumes from the last
    checkpoint and continues the same MLflow run, so a preempted step ends as an unbroken one would.
    """
    ensure_reachable(settings.tracking_uri)  # before anything is written: a wrong URI leaves no folder behind
    check_training_paths(config)
    work = DurableWork(work_uri, Path(config.output_dir)) if work_uri else None
    resumed_epoch = work.restore() if work else 0
    params: dict[str, Any] = config.model_dump(mode="json", exclude={"output_dir"})  # scratch, new per attempt
    params.update({f"network.{k}": v for k, v in config.network().model_dump(mode="json").items()})
    tags = {"data_version": data_version(config.dataset), "architecture": config.architecture, "size": config.size}
    previous = read_run_record(config.output_dir).get("mlflow_run_id")
    with tracked_run(settings, f"{config.architecture}-{config.size}", params, tags, resume_run_id=previous) as logger:
        _record_run(
            logger, config, work, tags["data_version"], resumed=previous == logger.run_id, resumed_epoch=resumed_epoch
        )
        init_state = None
        if config.init and config.init.startswith("models:/"):
            init_state = load_network(settings, config.init).state_dict()
            logger.mlflow.set_tag("init_model", config.init)

        def epoch_done(epoch: int, record: dict[str, float]) -> None:
            logger.log_epoch(epoch, record)
            if work:
                work.save_newest()

        result = train(config, progress=progress, on_epoch_end=epoch_done, init_state=init_state)
        if work:
            work.save_newest()  # the calibrated rewrite of the last checkpoint
        if result.calibration:
            logger.mlflow.log_metrics(result.calibration)
        test = evaluate_model(result.model, evaluation_dataset(config.dataset, "test"))
        metrics = logger.log_evaluation(test)
        model_uri = logger.log_model(result.model.cpu())
        version = Registry(settings.tracking_uri, settings.registered_model).register_challenger(
            model_uri, logger.run_id
        )
    page = run_url(settings.tracking_uri, logger.experiment_id, logger.run_id)
    return TrainStageResult(logger.run_id, model_uri, version, metrics, page)


def _record_run(
    logger: RunLogger, config: TrainConfig, work: DurableWork | None, digest: str, *, resumed: bool, resumed_epoch: int
) -> None:
    """Before the first epoch: the run record (durable too), the dataset as the run's input, what was resumed."""
    write_run_record(config.output_dir, {"mlflow_run_id": logger.run_id})
    if work:
        work.save_record()
    if resumed:
        logger.mlflow.set_tag("resumed_from_epoch", str(resumed_epoch))
    else:
        logger.mlflow.log_param("data_version", digest)
        logger.log_dataset(config.dataset, digest)


def load_registered_network(settings: TrackingSettings, alias: str) -> SegmentationNetwork:
    """The two-input network behind ``models:/<name>@<alias>``."""
    return load_network(settings, f"models:/{settings.registered_model}@{alias}")


def load_network(settings: TrackingSettings, uri: str) -> SegmentationNetwork:
    """The two-input network behind a ``models:/`` URI, rebuilt from its config and weights."""
    import json

    import mlflow

    ensure_reachable(settings.tracking_uri)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    try:
        info = mlflow.models.get_model_info(uri)
    except Exception as error:  # MlflowException, OSError
        raise TrackingError(f"cannot load {uri} from {settings.tracking_uri}: {error}") from error
    metadata = info.metadata or {}
    if "network" not in metadata:
        raise TrackingError(f"{uri} carries no network config in its metadata; was it logged by cloudlulc?")
    if (info.flavors.get("pytorch") or {}).get("code"):
        raise TrackingError(f"{uri} bundles Python code to import on load; refused (cloudlulc models carry none)")
    try:
        with _pickle_refused():
            program = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as error:  # MlflowException, OSError, torch load errors
        raise TrackingError(f"cannot load {uri} from {settings.tracking_uri}: {error}") from error
    network = build_model(ModelConfig.model_validate(json.loads(metadata["network"])))
    weights = {k.removeprefix("network."): v for k, v in program.state_dict().items()}
    network.load_state_dict(weights)
    return network.eval()


def run_gate_stage(dataset: str, settings: TrackingSettings, config: GateConfig | None = None) -> GateDecision:
    """Evaluate challenger and champion on the test split of ``dataset`` and apply the gate."""
    ensure_reachable(settings.tracking_uri)
    registry = Registry(settings.tracking_uri, settings.registered_model)
    challenger_version = registry.alias_version(CHALLENGER)
    if challenger_version is None:
        raise TrackingError(f"{settings.registered_model} has no {CHALLENGER} version at {settings.tracking_uri}")
    champion_version = registry.alias_version(CHAMPION)
    test_set = evaluation_dataset(dataset, "test")
    with torch.no_grad():
        challenger = evaluate_model(load_registered_network(settings, CHALLENGER), test_set)
        champion = evaluate_model(load_registered_network(settings, CHAMPION), test_set) if champion_version else None
    decision = registry.apply_gate(challenger_version, challenger, champion_version, champion, config or GateConfig())
    scores = evaluation_metrics(challenger)
    return dataclasses.replace(decision, challenger_metrics=scores, challenger_confusion=list(challenger["confusion"]))  # type: ignore[call-overload]


@contextmanager
def _pickle_refused() -> Iterator[None]:
    """Let MLflow load only pickle-free ``pt2`` archives (its default would unpickle, i.e. run, a payload)."""
    variable = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    previous = os.environ.get(variable)
    os.environ[variable] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = previous
