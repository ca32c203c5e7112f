"""Kubeflow pipelines: compiled YAML, cluster settings, parameter checks, submit/schedule, local runs.

The local runs execute the real components with ``kfp.local`` (subprocesses of this interpreter) on
the embedded defaults: synthetic catalog, local folders, a SQLite MLflow store and the local Triton.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
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
from kfp_api import KfpApiStandIn, Recorded

GPU_STEPS = {"train-model", "export-model"}

RECURRING_RUNS = "/apis/v2beta1/recurringruns"


@dataclass
class KfpSchedulesStandIn(KfpApiStandIn):
    """``KfpApiStandIn`` that also keeps the recurring runs it creates, for the schedules commands.

    Answers the v2beta1 endpoints ``kfp.Client`` calls for them: list (paged by ``page_size`` and
    ``page_token``, the list under ``recurringRuns`` as the API names it), get, ``:disable``,
    ``:enable`` and delete; a listing shows the asked namespace's runs only, and an unknown id is a 404,
    as from the API server.
    """

    recurring_runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def seed(
        self,
        name: str,
        *,
        pipeline: str = "cloudlulc-regional-mapping",
        cron: str = "0 0 6 * * 1",
        namespace: str = "team-geo",
    ) -> str:
        """A recurring run as the API server would hold it; returns its id."""
        run_id = f"job-{len(self.recurring_runs) + 1}"
        self.recurring_runs[run_id] = {
            "recurring_run_id": run_id,
            "namespace": namespace,
            "display_name": name,
            "trigger": {"cron_schedule": {"cron": cron}},
            "mode": "ENABLE",
            "status": "ENABLED",
            "max_concurrency": "1",
            "no_catchup": True,
            "pipeline_spec": {"pipeline_spec": {"pipelineInfo": {"name": pipeline}}, "platform_spec": {}},
        }
        return run_id

    def calls(self, method: str | None = None) -> list[tuple[str, str]]:
        """(method, path) of the requests to the recurring-runs endpoints, in order."""
        return [
            (r.method, r.path)
            for r in self.requests
            if r.path.startswith(RECURRING_RUNS) and (method is None or r.method == method)
        ]

    def __enter__(self) -> KfpSchedulesStandIn:
        super().__enter__()
        assert self._server is not None
        api = self
        base: Any = self._server.RequestHandlerClass

        class Handler(base, BaseHTTPRequestHandler):  # the stand-in's handler; named again for what it is
            def _one(self, request: Recorded) -> tuple[str, str]:
                """(id, action) of ``/recurringruns/<id>[:action]``."""
                run_id, _, action = request.path.removeprefix(RECURRING_RUNS + "/").partition(":")
                return run_id, action

            def do_GET(self) -> None:
                if not self.path.startswith(RECURRING_RUNS):
                    return super().do_GET()
                request = self._record("GET")
                if request.path == RECURRING_RUNS:
                    namespace = request.query.get("namespace", [""])[0]
                    runs = [r for r in api.recurring_runs.values() if r.get("namespace", namespace) == namespace]
                    offset = int(request.query.get("page_token", ["0"])[0] or 0)
                    size = int(request.query.get("page_size", ["0"])[0] or 0) or len(runs)
                    page = {"recurringRuns": runs[offset : offset + size], "total_size": len(runs)}
                    if offset + size < len(runs):
                        page["next_page_token"] = str(offset + size)
                    return self._answer(200, page)
                run_id, _ = self._one(request)
                if run_id not in api.recurring_runs:
                    return self._answer(404, {"error": f"recurring run {run_id} not found", "code": 5})
                return self._answer(200, api.recurring_runs[run_id])

            def do_POST(self) -> None:
                if not self.path.startswith(RECURRING_RUNS):
                    return super().do_POST()
                request = self._record("POST")
                if request.path == RECURRING_RUNS:  # create: kept, so it can be listed and managed
                    run_id = f"job-{len(api.recurring_runs) + 1}"
                    api.recurring_runs[run_id] = {**request.body, "recurring_run_id": run_id, "status": "ENABLED"}
                    return self._answer(200, api.recurring_runs[run_id])
                run_id, action = self._one(request)
                if run_id not in api.recurring_runs or action not in ("enable", "disable"):
                    return self._answer(404, {"error": f"recurring run {run_id} not found", "code": 5})
                enable = action == "enable"
                api.recurring_runs[run_id].update(
                    mode="ENABLE" if enable else "DISABLE", status="ENABLED" if enable else "DISABLED"
                )
                return self._answer(200, {})

            def do_DELETE(self) -> None:
                request = self._record("DELETE")
                run_id, _ = self._one(request)
                if not request.path.startswith(RECURRING_RUNS + "/") or run_id not in api.recurring_runs:
                    return self._answer(404, {"error": f"recurring run {run_id} not found", "code": 5})
                del api.recurring_runs[run_id]
                return self._answer(200, {})

        self._server.RequestHandlerClass = Handler
        return self


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


def test_every_pipeline_parameter_has_its_description_in_the_compiled_ir():
    from components.parameters import MappingParams, TrainingParams

    for name, model in (("training", TrainingParams), ("regional-mapping", MappingParams)):
        spec, _ = _platform(name)
        parameters = spec["root"]["inputDefinitions"]["parameters"]
        assert set(parameters) == set(model.model_fields)
        for parameter, definition in parameters.items():
            description = definition.get("description", "")
            assert description.startswith(str(model.model_fields[parameter].description).strip()), parameter
    tile = _platform("regional-mapping")[0]["root"]["inputDefinitions"]["parameters"]["tile"]
    assert "Range: >= 32, <= 4096, multiple of 32." in tile["description"]


def test_both_pipelines_end_in_a_run_summary_whatever_happens():
    for name, summary in (("training", "summarize-training-run"), ("regional-mapping", "summarize-mapping-run")):
        spec, _ = _platform(name)
        root = spec["root"]["dag"]["tasks"]
        assert set(root) == {summary, "exit-handler-1"}, set(root)
        assert root[summary]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
        assert root[summary]["dependentTasks"] == ["exit-handler-1"]


def _outputs(task_folder: Path) -> dict[str, Any]:
    """The executor output ``kfp.local`` wrote for a step (its artifacts' URIs and metadata)."""
    return json.loads((task_folder / "executor_output.json").read_text())


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
    conditions = [t["triggerPolicy"].get("condition", "") for t in _all_tasks(spec).values() if "triggerPolicy" in t]
    assert any("'promote'" in c and "==" in c for c in conditions) and any("!" in c for c in conditions)
    # credentials never travel as parameters
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert not [p for p in parameters if any(word in p.lower() for word in ("secret", "password", "key", "token"))]


def test_mapping_yaml_maps_after_validation_with_secrets():
    spec, executors = _platform("regional-mapping")
    tasks = _all_tasks(spec)
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


def test_compiled_mapping_resolves_dates_from_the_schedule_and_never_caches_ingest_or_map():
    from kfp import dsl

    spec, _ = _platform("regional-mapping")
    tasks = _all_tasks(spec)
    for name in ("ingest-acquisitions", "validate-data", "require-valid", "map-region"):
        assert not tasks[name].get("cachingOptions", {}).get("enableCache", False), f"{name} may be cached"
    for name in ("ingest-acquisitions", "map-region"):  # the scheduled time, resolved by Kubeflow per run
        inputs = tasks[name]["inputs"]["parameters"]
        assert inputs["scheduled"]["runtimeValue"]["constant"] == dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER
        assert inputs["window_days"] == {"componentInputParameter": "pipelinechannel--window_days"}
    assert tasks["map-region"]["inputs"]["parameters"]["target_date"] == {
        "componentInputParameter": "pipelinechannel--end"
    }
    root = spec["root"]["inputDefinitions"]["parameters"]
    assert root["start"]["defaultValue"] == root["end"]["defaultValue"] == ""  # relative unless pinned
    # training keeps its fixed dates: no scheduled time reaches its ingest step
    training, _ = _platform("training")
    ingest = _all_tasks(training)["ingest-acquisitions"]["inputs"]["parameters"]
    assert "scheduled" not in ingest and "window_days" not in ingest
    assert training["root"]["inputDefinitions"]["parameters"]["end"]["defaultValue"] == TrainingParams().end


def _schedules(api: KfpApiStandIn, *args: str) -> Any:
    base = ["--host", api.host, "--token", "t0k", "--namespace", "team-geo"]
    return CliRunner().invoke(cli, ["pipelines", "schedules", *args, *base])


def test_schedules_list_pause_resume_and_delete_by_name_or_id(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(Path.cwd()))  # kfp.Client reads ~/.config/kfp/context.json if present
    with KfpSchedulesStandIn() as api:
        created = CliRunner().invoke(
            cli,
            [
                "pipelines",
                "schedule",
                "regional-mapping",
                *("--host", api.host, "--token", "t0k", "--namespace", "team-geo"),
                *("--name", "lyon-weekly", "--cron", "0 0 6 * * 1", "--param", "region=lyon"),
            ],
        )
        assert created.exit_code == 0, created.output
        assert "warning" not in created.stderr  # relative dates: each run maps its scheduled day
        assert api.recurring_runs["job-1"]["runtime_config"]["parameters"] == {"region": "lyon"}
        api.seed("training-monthly", pipeline="cloudlulc-training", cron="0 0 2 1 * *")

        listed = _schedules(api, "list")
        assert listed.exit_code == 0, listed.output
        assert listed.output.splitlines() == [
            "lyon-weekly (job-1): cron '0 0 6 * * 1', enabled, pipeline cloudlulc-regional-mapping",
            "training-monthly (job-2): cron '0 0 2 1 * *', enabled, pipeline cloudlulc-training",
        ]
        (listing,) = [r for r in api.requests if r.method == "GET" and r.path == RECURRING_RUNS]
        assert listing.query["namespace"] == ["team-geo"]

        before = len(api.calls())
        paused = _schedules(api, "pause", "lyon-weekly")
        assert paused.exit_code == 0, paused.output
        assert paused.output == (
            "paused lyon-weekly (job-1): cron '0 0 6 * * 1', paused, pipeline cloudlulc-regional-mapping\n"
        )
        assert api.calls()[before:] == [
            ("GET", RECURRING_RUNS),  # the name, resolved through the listing
            ("POST", f"{RECURRING_RUNS}/job-1:disable"),
            ("GET", f"{RECURRING_RUNS}/job-1"),  # the state it now has
        ]
        assert api.recurring_runs["job-1"]["status"] == "DISABLED"
        assert "lyon-weekly (job-1): cron '0 0 6 * * 1', paused," in _schedules(api, "list").output

        before = len(api.calls())
        resumed = _schedules(api, "resume", "job-1")
        assert resumed.exit_code == 0, resumed.output
        assert resumed.output.startswith("resumed lyon-weekly (job-1): cron '0 0 6 * * 1', enabled,")
        assert api.calls()[before:] == [
            ("GET", RECURRING_RUNS),
            ("POST", f"{RECURRING_RUNS}/job-1:enable"),
            ("GET", f"{RECURRING_RUNS}/job-1"),
        ]

        before = len(api.calls())
        deleted = _schedules(api, "delete", "training-monthly")
        assert deleted.exit_code == 0, deleted.output
        assert deleted.output.startswith("deleted training-monthly (job-2): cron '0 0 2 1 * *', enabled,")
        assert api.calls()[before:] == [("GET", RECURRING_RUNS), ("DELETE", f"{RECURRING_RUNS}/job-2")]
        assert set(api.recurring_runs) == {"job-1"}
        pinned = CliRunner().invoke(
            cli,
            [
                "pipelines",
                "schedule",
                "regional-mapping",
                *("--host", api.host, "--token", "t0k", "--namespace", "team-geo"),
                *("--name", "lyon-frozen", "--cron", "0 0 6 * * 1", "--param", "end=2026-06-30"),
            ],
        )
        assert pinned.exit_code == 0, pinned.output
        assert "warning: end=2026-06-30 is fixed: every run of 'lyon-frozen' maps that date again" in pinned.stderr
    auth = {value for r in api.requests for key, value in r.headers.items() if key.lower() == "authorization"}
    assert auth == {"Bearer t0k"}


def test_schedules_found_by_id_beyond_the_listing_and_over_pages(monkeypatch: pytest.MonkeyPatch):
    import pipelines.submit

    monkeypatch.setenv("HOME", str(Path.cwd()))
    monkeypatch.setattr(pipelines.submit, "PAGE_SIZE", 2)
    with KfpSchedulesStandIn() as api:
        for region in ("lyon", "nice", "pau", "brest", "metz"):
            api.seed(f"{region}-weekly")
        listed = _schedules(api, "list")
        assert listed.exit_code == 0, listed.output
        assert [line.split()[0] for line in listed.output.splitlines()] == [
            "lyon-weekly",
            "nice-weekly",
            "pau-weekly",
            "brest-weekly",
            "metz-weekly",
        ]
        pages = [r.query for r in api.requests if r.method == "GET" and r.path == RECURRING_RUNS]
        assert [q.get("page_token", [""])[0] for q in pages] == ["", "2", "4"]
        assert {q["page_size"][0] for q in pages} == {"2"}

        paused = _schedules(api, "pause", "metz-weekly")  # on the last page
        assert paused.exit_code == 0, paused.output
        assert api.recurring_runs["job-5"]["status"] == "DISABLED"

        # an id the namespace's listing does not show (another profile's): asked for by id
        elsewhere = api.seed("far-weekly", namespace="team-far")
        assert "far-weekly" not in _schedules(api, "list").output
        deleted = _schedules(api, "delete", elsewhere)
        assert deleted.exit_code == 0, deleted.output
        assert deleted.output.startswith(f"deleted far-weekly ({elsewhere}):")
        assert api.calls()[-2:] == [
            ("GET", f"{RECURRING_RUNS}/{elsewhere}"),
            ("DELETE", f"{RECURRING_RUNS}/{elsewhere}"),
        ]
        assert elsewhere not in api.recurring_runs


def test_schedules_refuse_unknown_and_ambiguous_names_and_misuse(monkeypatch: pytest.MonkeyPatch):
    from cloudlulc.errors import UsageError

    monkeypatch.setenv("HOME", str(Path.cwd()))
    monkeypatch.delenv("KFP_HOST", raising=False)
    with KfpSchedulesStandIn() as api:
        first, second = api.seed("lyon-weekly"), api.seed("lyon-weekly")
        api.seed("nice-weekly")
        for action in ("pause", "resume", "delete"):
            unknown = _schedules(api, action, "paris-weekly")
            assert isinstance(unknown.exception, UsageError) and unknown.exception.exit_code == 2
            assert "'paris-weekly'" in str(unknown.exception) and "team-geo" in str(unknown.exception)
            twice = _schedules(api, action, "lyon-weekly")
            assert isinstance(twice.exception, UsageError) and twice.exception.exit_code == 2
            assert f"2 schedules are named 'lyon-weekly' ({first}, {second})" in str(twice.exception)
        # nothing was changed: only listings, and the look-up of the unknown name as an id
        assert {call for call in api.calls() if call[0] != "GET"} == set()
        assert ("GET", f"{RECURRING_RUNS}/paris-weekly") in api.calls()
        assert all(run["status"] == "ENABLED" for run in api.recurring_runs.values())

        requests_before = len(api.requests)
        runner = CliRunner()
        assert runner.invoke(cli, ["pipelines", "schedules", "pause", "--host", api.host]).exit_code == 2  # no name
        assert runner.invoke(cli, ["pipelines", "schedules", "stop", "lyon-weekly"]).exit_code == 2
        assert runner.invoke(cli, ["pipelines", "schedules", "list", "--host", api.host, "extra"]).exit_code == 2
        no_host = runner.invoke(cli, ["pipelines", "schedules", "list"])
        assert isinstance(no_host.exception, UsageError) and no_host.exception.exit_code == 2
        assert "KFP_HOST" in str(no_host.exception)
        assert len(api.requests) == requests_before, "misuse reached the API"


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
    assert all(path.suffix == ".html" for path in result.validation_reports)


def test_the_gate_draws_a_confusion_matrix_and_metric_names_have_no_spaces(main_job: Any):
    from cloudlulc import schema

    result, _ = main_job
    runs = sorted(result.layout.pipeline_root.glob("cloudlulc-*-*"))
    names = set()
    for run in runs:
        for output in run.glob("*/executor_output.json"):
            for artifacts in json.loads(output.read_text()).get("artifacts", {}).values():
                for artifact in artifacts["artifacts"]:
                    names |= {key for key, value in artifact.get("metadata", {}).items() if isinstance(value, float)}
    assert names and all(re.fullmatch(r"[a-z0-9_]+", name) for name in names), sorted(names)
    gate = latest_run(result.layout.pipeline_root, "cloudlulc-training") / "evaluate-and-gate"
    (confusion,) = _outputs(gate)["artifacts"]["confusion"]["artifacts"]
    matrix = confusion["metadata"]["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == list(schema.CLASS_NAMES)
    assert sum(sum(row["row"]) for row in matrix["rows"]) > 0
    metrics = _outputs(gate)["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert 0 <= metrics["test_miou"] <= 1


def test_each_run_ends_with_a_summary_of_what_serves_and_is_published(main_job: Any):
    result, _ = main_job
    training_run = latest_run(result.layout.pipeline_root, "cloudlulc-training")
    page = (training_run / "summarize-training-run" / "summary.md").read_text()
    assert page.startswith("# Run succeeded") and "| champion (registry) | version 1 |" in page
    assert "cloudlulc_cpu v1" in page and "`train-model`" in page and "Stopped by" not in page
    mapping_run = latest_run(result.layout.pipeline_root, "cloudlulc-regional-mapping")
    page = (mapping_run / "summarize-mapping-run" / "summary.md").read_text()
    assert "| newest product of demo | demo-20260731 (2 product(s) in the catalogue) |" in page


def test_main_job_ends_with_two_region_products_the_second_with_its_change(main_job: Any):
    from cloudlulc.products.build import published_item
    from cloudlulc.products.catalog import read_items
    from cloudlulc.products.stac_validation import validate_item

    result, _ = main_job
    assert [path.stem for path in result.products] == ["demo-20260630", "demo-20260731"]
    items = read_items(str(result.layout.maps), "demo")
    assert [item.id for item in items] == ["demo-20260630", "demo-20260731"]
    for item in items:
        validate_item(item.to_dict())
        assert sum(item.properties["cloudlulc:areas_km2"].values()) > 0
        assert item.properties["cloudlulc:served_model"] == "cloudlulc_cpu"
    june, july = items
    assert "change" not in june.assets and "change" in july.assets
    assert july.properties["cloudlulc:previous_item_id"] == june.id
    assert published_item(str(result.products[1])).id == july.id
    summary = result.summary()
    for item in result.products:
        assert str(item) in summary and str(item.with_name(item.stem + "_report.html")) in summary
    report_artifacts = sorted(result.layout.pipeline_root.glob("cloudlulc-regional-mapping-*/map-region*/report.html"))
    assert report_artifacts and "<html" in report_artifacts[-1].read_text()[:200].lower()


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
    report = (run / "validate-data" / "report.html").read_text()
    assert chip.stem in report
    assert not (run / "train-model").exists()
    versions_after = len(Registry(layout.tracking_uri, "cloudlulc").client.search_model_versions("name='cloudlulc'"))
    assert versions_after == versions_before
    page = (run / "summarize-training-run" / "summary.md").read_text()
    assert page.startswith("# Run failed") and "**Stopped by `require-valid`**" in page, page
    assert "validation failed" in page and "report.html" in page
    assert "`validate-data`" in page and "`train-model`" not in page
    assert "| champion (registry) | version 1 |" in page


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
    assert not steps_run - {"check-training-params", "summarize-training-run"}, (
        f"steps ran after the check: {steps_run}"
    )
    (page,) = tmp_path.glob("cloudlulc-training-*/summarize-training-run/summary.md")
    assert page.read_text().startswith("# Run failed")


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
