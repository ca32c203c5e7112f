"""Tracking, registry and gate against a real MLflow server process on loopback."""

from pathlib import Path

import numpy as np
import pytest

from cloudlulc.tracking import (
    GateConfig,
    Registry,
    TrackingError,
    TrackingSettings,
    decide,
    run_gate_stage,
    run_train_stage,
)
from cloudlulc.training.config import load_train_config
from cloudlulc.training.metrics import scores


def _result(miou_matrix_diag: float, bins: dict[str, float]) -> dict:
    """An evaluation result whose mIoU follows the given accuracy (2 classes)."""

    def metrics(accuracy: float):
        hits = int(accuracy * 100)
        return scores(np.array([[hits, 100 - hits], [100 - hits, hits]]))

    return {"overall": metrics(miou_matrix_diag), "bins": {k: metrics(v) for k, v in bins.items()}}


def test_gate_decisions():
    config = GateConfig(min_miou_gain=0.01, max_bin_regression=0.02, first_min_miou=0.3, first_min_oa=0.5)
    good = _result(0.9, {"0-10%": 0.95, "90-100%": 0.8})
    assert decide(good, None, config).promote
    assert "absolute thresholds" in decide(_result(0.3, {}), None, config).reason
    better = _result(0.95, {"0-10%": 0.97, "90-100%": 0.85})
    assert decide(better, good, config).promote
    assert "below the required" in decide(good, good, config).reason
    regresses = _result(0.95, {"0-10%": 0.99, "90-100%": 0.6})
    decision = decide(regresses, good, config)
    assert not decision.promote and "cloud bin 90-100% regresses" in decision.reason


@pytest.fixture(scope="module")
def tracked_set(synthetic_set) -> Path:
    return synthetic_set(16, 4)


def _config(dataset: Path, output: Path):
    return load_train_config(
        None,
        [
            f"dataset={dataset}",
            f"output_dir={output}",
            "epochs=2",
            "batch_size=4",
            "crop_size=64",
            "max_steps_per_epoch=2",
        ],
    )


def test_train_register_and_gate_on_a_real_server(mlflow_server: str, tracked_set: Path, tmp_path: Path):
    import mlflow
    from mlflow import MlflowClient

    settings = TrackingSettings(tracking_uri=mlflow_server, experiment="gate-test", registered_model="cloudlulc-test")
    first = run_train_stage(_config(tracked_set, tmp_path / "first"), settings, progress=False)
    assert first.version == "1" and 0 <= first.test_metrics["test_miou"] <= 1

    client = MlflowClient(mlflow_server)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["architecture"] == "cloudlulc_net" and len(run.data.params["data_version"]) == 16
    assert [m.step for m in client.get_metric_history(first.run_id, "val_miou")] == [1, 2]
    assert any(k.startswith("test_bin_") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "plots")}
    assert artifacts == {"plots/confusion_matrix.png", "plots/miou_per_cloud_bin.png", "plots/reliability_diagram.png"}
    model = mlflow.pyfunc.load_model("models:/cloudlulc-test@challenger")
    probabilities = model.predict(np.random.default_rng(0).random((1, 14, 64, 64), dtype=np.float32))
    assert probabilities.shape == (1, 6, 64, 64)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    promoted = run_gate_stage(str(tracked_set), settings, GateConfig(first_min_miou=0.0, first_min_oa=0.0))
    assert promoted.promote and "first champion" in promoted.reason
    registry = Registry(mlflow_server, "cloudlulc-test")
    assert registry.alias_version("champion") == "1"

    second = run_train_stage(_config(tracked_set, tmp_path / "second"), settings, progress=False)
    assert second.version == "2" and registry.alias_version("challenger") == "2"
    refused = run_gate_stage(str(tracked_set), settings, GateConfig(min_miou_gain=1.0))
    assert not refused.promote and "below the required" in refused.reason
    assert registry.alias_version("champion") == "1"
    tags = client.get_model_version("cloudlulc-test", "2").tags
    assert tags["gate.decision"] == "refused" and tags["gate.champion_version"] == "1"
    assert '"miou"' in tags["gate.challenger_metrics"] and '"miou"' in tags["gate.champion_metrics"]
    assert client.get_model_version("cloudlulc-test", "1").tags["gate.decision"] == "promoted"


def test_unreachable_tracking_server_fails_fast_before_training(tracked_set: Path, tmp_path: Path):
    from conftest import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match=f"{uri} is unreachable"):
        run_train_stage(_config(tracked_set, tmp_path / "run"), TrackingSettings(tracking_uri=uri), progress=False)
    assert not (tmp_path / "run").exists(), "nothing trained, nothing written"


def test_embedded_default_local_sqlite_store(tracked_set: Path, tmp_path: Path):
    store = tmp_path / "mlflow"
    store.mkdir()
    settings = TrackingSettings(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    result = run_train_stage(_config(tracked_set, tmp_path / "run"), settings, progress=False)
    assert result.version == "1"
    assert (store / "artifacts").is_dir(), "artifacts land beside the local store"


def test_cli_gate_defaults_mirror_gate_config():
    from cloudlulc.cli import evaluate

    options = {p.name: p for p in evaluate.params}
    for name, field in GateConfig.model_fields.items():  # each threshold is a flag with the model's default
        assert options[name].default == field.default, name
    assert "--min-gain" in options["min_miou_gain"].opts


def test_fine_tune_from_a_registered_model(mlflow_server: str, tracked_set: Path, tmp_path: Path):
    import torch

    from cloudlulc.tracking import load_registered_network

    settings = TrackingSettings(tracking_uri=mlflow_server, experiment="finetune", registered_model="cloudlulc-ft")
    run_train_stage(_config(tracked_set, tmp_path / "first"), settings, progress=False)
    source = load_registered_network(settings, "challenger").state_dict()
    config = load_train_config(
        None,
        [
            f"dataset={tracked_set}",
            f"output_dir={tmp_path / 'tuned'}",
            "epochs=1",
            "batch_size=4",
            "crop_size=64",
            "max_steps_per_epoch=2",
            "init=models:/cloudlulc-ft/1",
            "freeze_encoders=true",
        ],
    )
    tuned = run_train_stage(config, settings, progress=False)
    assert tuned.version == "2"
    weights = load_registered_network(settings, "challenger").state_dict()
    assert torch.equal(
        weights["optical_encoder.stages.0.0.0.0.weight"], source["optical_encoder.stages.0.0.0.0.weight"]
    )
    assert not torch.equal(weights["decoder.classify.weight"], source["decoder.classify.weight"])


class _Payload:
    """Unpickling this creates a folder: what a crafted registered model would smuggle in."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


def test_a_pickled_registered_model_is_refused_unrun(mlflow_server: str, tmp_path: Path):
    import json

    import mlflow
    import torch

    from cloudlulc.models.config import model_config
    from cloudlulc.tracking.stages import load_network

    class Carrier(torch.nn.Module):
        def __init__(self, marker: Path) -> None:
            super().__init__()
            self.payload = _Payload(marker)

    marker = tmp_path / "PAYLOAD-RAN"
    settings = TrackingSettings(tracking_uri=mlflow_server, experiment="pickle-test", registered_model="crafted")
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_experiment("pickle-test")
    network = json.dumps(model_config("cloudlulc_net", "tiny").model_dump(mode="json"))
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(
            Carrier(marker),
            name="model",
            serialization_format="pickle",
            pip_requirements=["torch"],
            metadata={"network": network},
        )
    with pytest.raises(TrackingError, match=f"cannot load {info.model_uri}"):
        load_network(settings, info.model_uri)
    assert not marker.exists(), "loading a registered model ran code from its pickle"


def test_a_request_mlflow_refuses_mid_run_is_a_tracking_error_and_the_run_ends_failed(mlflow_server: str):
    from mlflow import MlflowClient

    from cloudlulc.tracking.runs import tracked_run

    settings = TrackingSettings(tracking_uri=mlflow_server, experiment="refused-mid-run")
    started: list[str] = []

    def change_a_logged_param() -> None:
        with tracked_run(settings, "refused", {"epochs": 1}, {}) as logger:
            started.append(logger.run_id)
            logger.mlflow.log_param("epochs", 2)  # MLflow refuses to change a logged param

    with pytest.raises(TrackingError, match=f"MLflow at {mlflow_server}: .*") as caught:
        change_a_logged_param()
    assert caught.value.exit_code == 4
    assert MlflowClient(mlflow_server).get_run(started[0]).info.status == "FAILED"
