"""Kubeflow pipelines: compiled YAML, cluster settings, parameter checks, submit/schedule, local runs.

The local runs execute the real components with ``kfp.local`` (subprocesses of this interpreter) on
the embedded defaults: synthetic catalog, local folders, a SQLite MLflow store and the local Triton.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cloudlulc.cli import cli
from components.parameters import MappingParams, ParameterError, TrainingParams, checked
from pipelines import PIPELINES
from pipelines.compile import COMPILED_DIR, compile_all
from pipelines.local import (
    MainJobConfig,
    MainJobLayout,
    PipelineStepError,
    latest_run,
    run_main_job,
    run_training,
    training_params,
)

sys.path.insert(0, str(Path(__file__).parent))
from kfp_api import KfpApiStandIn

GPU_STEPS = {"train-model", "export-model"}


def _platform(document_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline spec, Kubernetes platform spec) of a committed compiled pipeline."""
    spec, platform = yaml.safe_load_all((COMPILED_DIR / f"{document_name}.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_compiled_yaml_is_current(tmp_path: Path):
    fresh = compile_all(tmp_path)
    assert sorted(p.name for p in fresh) == sorted(f"{name}.yaml" for name in PIPELINES)
    for path in fresh:
        committed = COMPILED_DIR / path.name
        assert committed.exists(), f"{committed} missing: run `cloudlulc pipelines compile`"
        assert path.read_text() == committed.read_text(), (
            f"{committed} is out of date with pipelines/*.py: run `cloudlulc pipelines compile` and commit it"
        )


def _all_tasks(spec: dict[str, Any], dag: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every task of a compiled pipeline, nested condition branches included, by task name."""
    found: dict[str, dict[str, Any]] = {}
    for name, task in (dag or spec["root"]["dag"])["tasks"].items():
        found[name] = task
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            found.update(_all_tasks(spec, component["dag"]))
    return found


def _executor(spec: dict[str, Any], task: dict[str, Any]) -> str:
    return str(spec["components"][task["componentRef"]["name"]]["executorLabel"])


def test_training_yaml_carries_gpu_secrets_retries_timeouts_and_caching():
    spec, executors = _platform("training")
    every = {
        name: task
        for name, task in _all_tasks(spec).items()
        if "executorLabel" in spec["components"][task["componentRef"]["name"]]
    }
    assert set(every) >= {
        "ingest-acquisitions",
        "validate-data",
        "require-valid",
        "train-model",
        "evaluate-and-gate",
        "export-model",
        "promote-model",
        "report-refusal",
    }
    containers = {label: spec["deploymentSpec"]["executors"][label]["container"] for label in executors}
    for name in GPU_STEPS:
        label = _executor(spec, every[name])
        resources = containers[label]["resources"]
        assert resources["accelerator"]["resourceCount"] == "1"
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert "cloudlulc-cuda" in containers[label]["image"]
        assert executors[label]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert executors[label]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    for name, task in every.items():
        label = _executor(spec, task)
        assert int(executors[label]["activeDeadlineSeconds"]) > 0, f"{name} has no timeout"
        assert task.get("cachingOptions", {}).get("enableCache", False) == (name == "check-training-params")
        if name not in GPU_STEPS:
            assert "cloudlulc-cuda" not in containers[label]["image"], f"{name} needs no GPU image"
        if name not in {"check-training-params", "require-valid", "report-refusal"}:
            secrets = {s["secretName"] for s in executors[label].get("secretAsEnv", [])}
            assert "cloudlulc-s3" in secrets, f"{name} gets no S3 credentials"
    assert every["ingest-acquisitions"]["retryPolicy"]["maxRetryCount"] == 3
    assert "retryPolicy" not in every["check-training-params"]
    # compile and promote run under the gate's condition, the refusal note under its opposite
    conditions = [t["triggerPolicy"]["condition"] for t in _all_tasks(spec).values() if "triggerPolicy" in t]
    assert any("'promote'" in c and "==" in c for c in conditions) and any("!" in c for c in conditions)
    # credentials never travel as parameters
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in parameters if any(word in p.lower() for word in ("secret", "password", "key", "token"))]


def test_mapping_yaml_maps_after_validation_with_secrets():
    spec, executors = _platform("regional-mapping")
    tasks = spec["root"]["dag"]["tasks"]
    assert "require-valid" in tasks["map-region"]["dependentTasks"]
    assert "check-mapping-params" in tasks["ingest-acquisitions"]["dependentTasks"]
    exec_map = tasks["map-region"]["componentRef"]["name"].replace("comp-", "exec-")
    assert {s["secretName"] for s in executors[exec_map]["secretAsEnv"]} == {"cloudlulc-s3"}
    assert {c["configMapName"] for c in executors[exec_map]["configMapAsEnv"]} == {"cloudlulc-settings"}


@pytest.mark.parametrize(
    ("model", "values", "named"),
    [
        (TrainingParams, {"epochs": 0}, "epochs"),
        (TrainingParams, {"epochs": "many"}, "epochs"),
        (TrainingParams, {"crop_size": 100}, "crop_size"),
        (TrainingParams, {"bbox": "10,50,5,40"}, "bbox"),
        (TrainingParams, {"start": "2026-07-01", "end": "2026-06-01"}, "start"),
        (TrainingParams, {"architecture": "resnet"}, "architecture"),
        (MappingParams, {"tile": 100}, "tile"),
        (MappingParams, {"tile": 128, "overlap": 64}, "overlap"),
        (MappingParams, {"region": "a b"}, "region"),
        (MappingParams, {"colour": "red"}, "colour"),
    ],
)
def test_bad_parameters_are_refused_naming_them(model: Any, values: dict[str, Any], named: str):
    with pytest.raises(ParameterError, match=named):
        checked(model, values)


def test_submit_and_schedule_through_the_kfp_api(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(Path.cwd()))  # kfp.Client reads ~/.config/kfp/context.json if present
    runner = CliRunner()
    with KfpApiStandIn() as api:
        base = ["--host", api.host, "--token", "t0k", "--namespace", "team-geo"]
        result = runner.invoke(
            cli,
            [
                "pipelines",
                "submit",
                "training",
                *base,
                "--param",
                "epochs=5",
                "--param",
                "tensorrt=false",
                "--run-name",
                "retrain-now",
            ],
        )
        assert result.exit_code == 0, result.output
        result = runner.invoke(
            cli,
            [
                "pipelines",
                "schedule",
                "regional-mapping",
                *base,
                "--name",
                "lyon-weekly",
                "--cron",
                "0 0 6 * * 1",
                "--param",
                "region=lyon",
                "--param",
                "bbox=4.7,45.6,5.0,45.9",
            ],
        )
        assert result.exit_code == 0, result.output
        refused = runner.invoke(cli, ["pipelines", "submit", "training", *base, "--param", "epochs=-1"])
        assert isinstance(refused.exception, ParameterError) and refused.exception.exit_code == 2
        assert "epochs" in str(refused.exception)
        requests_before = len(api.requests)
        bad_cron = runner.invoke(
            cli, ["pipelines", "schedule", "regional-mapping", *base, "--name", "x", "--cron", "0 6 * * 1"]
        )
        assert bad_cron.exit_code != 0 and len(api.requests) == requests_before
    (run,) = api.posted("/apis/v2beta1/runs")
    assert run["display_name"] == "retrain-now"
    assert run["runtime_config"]["parameters"] == {"epochs": 5, "tensorrt": False}
    assert run["service_account"] == "cloudlulc-pipeline-runner"
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "cloudlulc-training"
    (job,) = api.posted("/apis/v2beta1/recurringruns")
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 6 * * 1"
    assert job["max_concurrency"] in (1, "1") and job["no_catchup"] is True
    assert job["runtime_config"]["parameters"] == {"region": "lyon", "bbox": "4.7,45.6,5.0,45.9"}
    auth = {value for r in api.requests for key, value in r.headers.items() if key.lower() == "authorization"}
    assert auth == {"Bearer t0k"}
    assert {r.query.get("namespace", ["team-geo"])[0] for r in api.requests} == {"team-geo"}


def test_unreachable_kfp_api_fails_naming_it():
    from pipelines.submit import KubeflowError

    result = CliRunner().invoke(cli, ["pipelines", "submit", "training", "--host", "http://127.0.0.1:9"])
    assert isinstance(result.exception, KubeflowError) and result.exception.exit_code == 4
    assert "127.0.0.1:9" in str(result.exception)


# --- local runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The main job on a small configuration: both pipelines locally, once for this module."""
    out = tmp_path_factory.mktemp("main-job")
    config = MainJobConfig(
        scene_size=768, epochs=3, tile=256, first_min_miou=0.0, first_min_oa=0.0
    )  # mechanics, not model quality
    result = run_main_job(out, config, echo=lambda line: None)
    yield result, config
    from cloudlulc.serving import LocalTriton

    LocalTriton(result.layout.triton).stop()


def test_main_job_runs_both_pipelines_to_published_maps(main_job: Any):
    from mlflow import MlflowClient

    from cloudlulc.io.rasters import validate_cog
    from cloudlulc.serving import LocalTriton, ModelRepository

    result, _ = main_job
    layout: MainJobLayout = result.layout
    assert result.maps, "no map was published"
    for path in result.maps:
        validate_cog(str(path))
        areas = json.loads(path.with_name(path.stem + "_areas.json").read_text())
        assert areas["mapped_pixels"] > 0
        assert path.with_name(path.stem + "_quicklook.png").stat().st_size > 1000
    assert result.map_agreement is not None and 0.0 < result.map_agreement <= 1.0  # quality: the full main job
    assert len(result.validation_reports) == 2 and all(p.stat().st_size > 0 for p in result.validation_reports)
    run = MlflowClient(layout.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and "test_miou" in run.data.metrics
    assert ModelRepository(str(layout.repository)).versions("cloudlulc_cpu") == [1]
    assert "promoted" in result.gate
    assert LocalTriton(layout.triton).state() is None, "the main job must stop the Triton it started"
    summary = result.summary()
    for where in (str(layout.dataset), str(result.maps[0]), "mlflow ui --backend-store-uri"):
        assert where in summary


def test_gate_refusal_ends_green_without_compile_or_promote(main_job: Any):
    from cloudlulc.serving import ModelRepository
    from cloudlulc.tracking.registry import CHAMPION, Registry

    result, config = main_job
    layout: MainJobLayout = result.layout
    params = {**training_params(layout, config, result.acquisitions), "epochs": 1, "min_gain": 1.0}
    run_training(params, layout.pipeline_root)  # raises if any step failed
    run = latest_run(layout.pipeline_root, "cloudlulc-training")
    assert (run / "report-refusal" / "note").read_text().startswith("# Gate refused")
    assert not (run / "export-model").exists() and not (run / "promote-model").exists()
    registry = Registry(layout.tracking_uri, "cloudlulc")
    assert registry.alias_version(CHAMPION) == "1"
    assert ModelRepository(str(layout.repository)).versions("cloudlulc_cpu") == [1]


def test_failing_validation_stops_before_training_with_the_report(main_job: Any):
    from cloudlulc.tracking.registry import Registry

    result, config = main_job
    layout: MainJobLayout = result.layout
    broken = layout.root / "data" / "broken-set"
    shutil.copytree(layout.dataset, broken)
    chip = sorted((broken / "Opt_S2_cloudy").glob("*.tif"))[0]
    chip.write_bytes(chip.read_bytes()[:300])  # a truncated upload
    versions_before = len(Registry(layout.tracking_uri, "cloudlulc").client.search_model_versions("name='cloudlulc'"))
    params = {**training_params(layout, config, result.acquisitions), "data_uri": str(broken)}
    with pytest.raises(PipelineStepError, match="require-valid"):
        run_training(params, layout.pipeline_root)
    run = latest_run(layout.pipeline_root, "cloudlulc-training")
    report = (run / "validate-data" / "report").read_text()
    assert chip.stem in report
    assert not (run / "train-model").exists()
    versions_after = len(Registry(layout.tracking_uri, "cloudlulc").client.search_model_versions("name='cloudlulc'"))
    assert versions_after == versions_before


def test_parameters_are_refused_before_any_step_runs(main_job: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    from kfp import local

    from pipelines.training import training

    result, config = main_job
    layout: MainJobLayout = result.layout
    params = training_params(layout, config, result.acquisitions)
    with pytest.raises(ParameterError, match="crop_size"):
        run_training({**params, "crop_size": 96 + 1}, tmp_path)
    assert not list(tmp_path.glob("cloudlulc-training-*")), "a step ran despite a refused parameter"
    # a run started without the client-side check (as from the Kubeflow UI) stops at its first step
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    with pytest.raises(RuntimeError, match="check-training-params"):
        training(**{**params, "learning_rate": 5.0})
    logs = capfd.readouterr()
    assert "parameter 'learning_rate'" in logs.out + logs.err
    steps_run = {path.name for path in tmp_path.glob("cloudlulc-training-*/*")}
    assert not steps_run - {"check-training-params"}, f"steps ran after the check failed: {steps_run}"


def test_missing_secret_fails_the_step_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    from kfp import local

    from components.ingest import ingest_acquisitions

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    with pytest.raises(RuntimeError, match="FAILURE"):
        ingest_acquisitions(
            catalog="s3://cloudlulc/catalog",
            bbox="4.27,45.05,4.41,45.15",
            start="2026-06-01",
            end="2026-06-30",
            max_cloud=100.0,
            s1_collection="sentinel-1-grd",
            out_uri="s3://cloudlulc/data/CloudLULC-Set",
            mode="chips",
            chip_size=128,
            labels="",
            label_table="worldcover",
        )
    logs = capfd.readouterr()
    text = logs.out + logs.err
    assert "AWS_ACCESS_KEY_ID" in text and "cloudlulc-s3" in text
