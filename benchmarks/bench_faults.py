"""Network faults across the loop: each fault kind in front of S3, MLflow and Triton, per stage.

A :class:`faultproxy.FaultProxy` sits between a stage's real client and a real loopback server (moto S3,
MLflow with SQLite, the local Triton). Stages: ``ingest`` and ``validate`` (S3), ``train_logging`` (MLflow),
``map`` and ``promote`` (Triton, gRPC). Each (fault, stage) pair is run as a subprocess, so that a hung
run can be killed and its exit code read:

* ``held``: the fault stays on for the whole run: exit code, seconds, whether it ended within the
  stage's deadline, and what it left behind (objects with wrong bytes, a catalogue pointing at missing
  items, an MLflow run left RUNNING or FINISHED with metrics missing).
* ``cleared``: the fault is cleared ``--clear-after`` seconds after the run's first connection: whether
  the run still succeeds, and how long after the clearing it finished (``recovery_s``; compare with the
  fault-free run's seconds).
* ``late`` (blackhole and reset; MLflow and map): the fault starts once the run is under way: for MLflow
  past its health check and first API connection, so only MLflow's own retries stand between it and a
  hang; for map once Triton has answered its first tiles (gRPC keeps one connection, so it is cut mid-stream).

A run still going at its stage's cap (``--cap``, per stage ``--stage-caps map=200,...``) is killed and
counted as cut; it is "stuck" only when the cap is at least three times its deadline and it was still
going (see docs/benchmarks.md "Network faults").

    cd benchmarks && python bench_faults.py                       # about 25 min on 2 cores
    cd benchmarks && python bench_faults.py --stages validate,map,promote --faults none,reset --out /tmp/f.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the proxy is a test tool; the library does not carry it

from common import free_port, loopback_server, machine, mlflow_command  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

from cloudlulc.tracking.settings import mlflow_request_deadline_s  # noqa: E402

BIN = Path(sys.executable).parent
FAULTS: dict[str, dict[str, float]] = {
    "none": {},
    "latency": {"ms": 100},
    "bandwidth": {"bytes_per_s": 256_000},
    "reset": {"after_bytes": 8_000},
    "blackhole": {},
    "slow_close": {"s": 2},
}
# Seconds a stage may take before it must have answered, derived from the clients' settings (see the table
# in docs/benchmarks.md). S3 calls are 5 boto attempts of at most 10 s connect + 60 s read plus standard-mode
# waits (at most 20 s each); validate reads and writes through the same client. The MLflow stage starts
# with a 5 s health check that turns an unreachable server into exit 4; after it, a failing request takes
# at most mlflow_request_deadline_s() under the project's MLflow bounds, and a run that fails mid-way
# makes one more (MLflow ends it FAILED). A Triton request: no retry after 120 s, the last try up to 60 s.
# Promote: load (one request), wait_ready (300 s + 15 s settle), the golden check, and the rollback's reload.
TRITON_CALL_S = 120 + 60
DEADLINES = {
    "ingest": 5 * 70 + 4 * 20,
    "validate": 5 * 70 + 4 * 20,
    "train_logging": 5 + 2 * mlflow_request_deadline_s(),
    "map": TRITON_CALL_S,
    "promote": 3 * TRITON_CALL_S + 315,
}
# Per-stage kill caps (seconds; --cap and --stage-caps override) sized so the whole benchmark takes about
# 25 min on 2 cores: long enough for the MLflow late blackhole (one or two requests of at most 74 s) and a
# map's blackholed request (two 60 s tries) to end on their own; an S3 blackhole (about 5 min) is cut, its
# deadline listed beside it. A promotion's blackholed Triton ends by itself in about 70 s (gRPC gives up
# connecting after about 20 s a try), so its cap only guards against a hang.
CAPS = {"ingest": 90.0, "validate": 90.0, "train_logging": 170.0, "map": 150.0, "promote": 120.0}
STAGES = ("ingest", "validate", "train_logging", "map", "promote")
EPOCHS = 3


@dataclass
class Run:
    """One subprocess run of a stage under a fault."""

    stage: str
    fault: str
    mode: str
    exit_code: int | None
    seconds: float
    deadline_s: float
    within_deadline: bool
    cut: bool
    stuck: bool
    recovery_s: float | None
    left_behind: dict[str, Any]
    error: str
    proxy: dict[str, int]


def _run(
    command: list[str], env: dict[str, str], cap: float, on_start: Callable[[], None]
) -> tuple[int | None, float, str]:
    """Run ``command`` in its own group; kill the group at ``cap`` s. (exit code or None, seconds, last stderr line)."""
    start = time.monotonic()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    on_start()
    try:
        _, stderr = process.communicate(timeout=cap)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
        code = None
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    lines = [line for line in lines if line.startswith("error")] or lines
    return code, time.monotonic() - start, (lines[-1] if lines else "")[:300]


class S3Stage:
    """``cloudlulc ingest synthetic --out s3://...``: a catalogue uploaded object by object, catalog.json last."""

    name = "ingest"

    def __init__(self, endpoint: str, env: dict[str, str]) -> None:
        import boto3

        self.endpoint = endpoint
        self.env = env
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.client.create_bucket(Bucket="bench")
        self.reference: dict[str, str] = {}

    def command(self, tag: str) -> list[str]:
        """The stage's command line, writing under the prefix ``tag``."""
        return [str(BIN / "cloudlulc"), "ingest", "synthetic", "--out", f"s3://bench/{tag}", "--size", "128"]

    def objects(self, tag: str) -> dict[str, str]:
        """Key (below the run's prefix) to SHA-256, read straight from the server, not through the proxy."""
        found: dict[str, str] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=f"{tag}/"):
            for item in page.get("Contents", []):
                body = self.client.get_object(Bucket="bench", Key=item["Key"])["Body"].read()
                found[item["Key"].removeprefix(f"{tag}/")] = hashlib.sha256(body).hexdigest()
        return found

    def left_behind(self, tag: str, exit_code: int | None) -> dict[str, Any]:
        """Objects with bytes other than the fault-free run's, and a catalogue whose items are not all there."""
        found = self.objects(tag)
        wrong = sorted(k for k, v in found.items() if k in self.reference and self.reference[k] != v)
        unknown = sorted(k for k in found if k not in self.reference)
        missing = sorted(k for k in self.reference if k not in found)
        dangling = "catalog.json" in found and bool(missing)
        return {
            "objects": len(found),
            "expected": len(self.reference),
            "wrong_bytes": wrong,
            "unexpected": unknown,
            "catalog_with_missing_items": dangling,
            "half_written": len(wrong) + len(unknown) + int(dangling) + int(exit_code == 0 and bool(missing)),
        }


EXITS_AS_THE_CLI = """except CloudLULCError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(error.exit_code)
except Exception as error:
    print(f"error (unmapped {type(error).__name__}): {error}", file=sys.stderr)
    sys.exit(1)
"""
"""The end of a child script's ``try``: a project error as the CLI reports it (its line, its exit code)."""


TRAIN_LOGGING = (
    """
import sys, tempfile, pathlib
from cloudlulc.errors import CloudLULCError
from cloudlulc.tracking.runs import tracked_run
from cloudlulc.tracking.settings import TrackingSettings
settings = TrackingSettings(tracking_uri=sys.argv[1], experiment="faults")
try:
    with tracked_run(settings, sys.argv[2], {"epochs": EPOCHS}, {"bench": "faults"}) as logger:
        for epoch in range(EPOCHS):
            logger.log_epoch(epoch, {"loss": 1.0 / (epoch + 1), "miou": 0.1 * epoch})
        note = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
        note.write_text("x" * 50_000)
        logger.mlflow.log_artifact(str(note))
""".replace("EPOCHS", str(EPOCHS))
    + EXITS_AS_THE_CLI
)


class MlflowStage:
    """Train logging as ``run_train_stage`` does it (``tracked_run``, per-epoch metrics, an artifact)."""

    name = "train_logging"
    late_faults = ("blackhole", "reset")

    @staticmethod
    def under_way(before: dict[str, int], now: dict[str, int]) -> bool:
        """Past the health check (connection 1) and into the first API connection."""
        return now["connections"] >= before["connections"] + 2

    def __init__(self, url: str) -> None:
        self.url = url
        self.proxied = url

    def command(self, tag: str) -> list[str]:
        """The stage's command line, logging a run named ``tag`` through the proxy."""
        return [sys.executable, "-c", TRAIN_LOGGING, self.proxied, tag]

    def left_behind(self, tag: str, exit_code: int | None) -> dict[str, Any]:
        """Runs left RUNNING, and finished runs with metrics or the artifact missing (read without the proxy)."""
        import mlflow

        client = mlflow.MlflowClient(self.url)
        experiment = client.get_experiment_by_name("faults")
        runs = (
            []
            if experiment is None
            else client.search_runs([experiment.experiment_id], f"attributes.run_name = '{tag}'")
        )
        statuses = [r.info.status for r in runs]
        incomplete = 0
        for r in runs:
            if r.info.status == "FINISHED":
                history = client.get_metric_history(r.info.run_id, "loss")
                artifacts = [a.path for a in client.list_artifacts(r.info.run_id)]
                incomplete += int(len(history) != EPOCHS or "note.txt" not in artifacts)
        running = statuses.count("RUNNING")
        lost = int(exit_code == 0 and statuses.count("FINISHED") != 1)
        return {
            "runs": statuses,
            "left_running": running,
            "finished_incomplete": incomplete,
            "half_written": running + incomplete + lost,
        }


class ValidateStage:
    """``cloudlulc validate s3://.../set --report-dir s3://.../<tag> --quarantine``: reads a set, writes its report."""

    name = "validate"
    OUTPUTS = ("report.json", "report.html", "quarantine.txt")

    def __init__(self, endpoint: str, env: dict[str, str]) -> None:
        import boto3

        self.endpoint = endpoint
        self.env = env
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        self.reference: dict[str, Any] = {}

    def command(self, tag: str) -> list[str]:
        """Validate the set through the proxy, the report under ``validate/<tag>``."""
        report = f"s3://bench/validate/{tag}"
        return [str(BIN / "cloudlulc"), "validate", "s3://bench/set", "--report-dir", report, "--quarantine"]

    def outputs(self, tag: str) -> dict[str, bytes]:
        """The report files of run ``tag``, read straight from the server."""
        found: dict[str, bytes] = {}
        for name in self.OUTPUTS:
            with suppress(self.client.exceptions.NoSuchKey):
                found[name] = self.client.get_object(Bucket="bench", Key=f"validate/{tag}/{name}")["Body"].read()
        return found

    @staticmethod
    def summary(found: dict[str, bytes]) -> dict[str, Any] | None:
        """Verdict and counts of a report.json, or None when it is missing or not whole JSON."""
        try:
            document = json.loads(found["report.json"])
        except (KeyError, ValueError):
            return None
        return {k: document.get(k) for k in ("success", "sample_count")} | {
            "failures": len(document.get("failures", []))
        }

    def left_behind(self, tag: str, exit_code: int | None) -> dict[str, Any]:
        """Report files cut short or differing from the fault-free run's, or only some of them."""
        found = self.outputs(tag)
        expected = set(self.reference["files"])
        summary = self.summary(found)
        truncated = int("report.json" in found and summary != self.reference["summary"])
        truncated += int("report.html" in found and not found["report.html"].rstrip().endswith(b"</html>"))
        partial = bool(found) and set(found) != expected
        return {
            "files": sorted(found),
            "expected": sorted(expected),
            "truncated": truncated,
            "partial_set": partial,
            "half_written": truncated + int(partial) + int(exit_code == 0 and set(found) != expected),
        }


def _scene(folder: Path) -> tuple[Path, Path]:
    """A seeded 200 x 260 px Sentinel-2 / Sentinel-1 pair on one UTM grid (as tests/test_serving.py draws it)."""
    import numpy as np
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from cloudlulc import schema
    from cloudlulc.io.rasters import RasterProfile, write_raster

    rng = np.random.default_rng(11)
    crs, transform = CRS.from_epsg(32632), from_origin(700_000.0, 5_000_000.0, 10, 10)
    optical, sar = folder / "s2.tif", folder / "s1.tif"
    dn = (1000 + 2000 * rng.random((12, 200, 260))).astype(np.uint16)
    write_raster(str(optical), dn, RasterProfile(crs, transform, nodata=0, descriptions=schema.S2_BANDS))
    profile = {"driver": "GTiff", "width": 260, "height": 200, "count": 2, "dtype": "float32", "crs": crs}
    with rasterio.open(sar, "w", **profile, transform=transform, nodata=float("nan")) as dataset:
        dataset.write((-15 + 3 * rng.standard_normal((2, 200, 260))).astype(np.float32))
        dataset.descriptions = schema.S1_POLARISATIONS
    return optical, sar


class MapStage:
    """``cloudlulc map --triton-url <proxy>``: tiles of one scene sent to the local Triton through the proxy."""

    name = "map"
    late_faults = ("blackhole", "reset")

    @staticmethod
    def under_way(before: dict[str, int], now: dict[str, int]) -> bool:
        """Once the first 128 px tile's answer (6 x 128 x 128 float32, 393 kB) has come back."""
        return now["bytes_down"] >= before["bytes_down"] + 400_000

    def __init__(self, work: Path, optical: Path, sar: Path) -> None:
        self.work = work
        self.optical, self.sar = optical, sar
        self.url = ""
        self.reference: Any = None

    def out(self, tag: str) -> Path:
        """The map's final path for run ``tag``."""
        return self.work / "maps" / f"{tag}.tif"

    def command(self, tag: str, url: str | None = None) -> list[str]:
        """Map through ``url`` (the proxy); version 1 pinned, plain gRPC (no shared-memory key in the env)."""
        inputs = ["--optical", str(self.optical), "--sar", str(self.sar), "--out", str(self.out(tag))]
        server = ["--triton-url", url or self.url, "--model", "cloudlulc_cpu", "--model-version", "1"]
        rest = ["--local-dir", str(self.work / "no-local-triton"), "--tile", "128", "--overlap", "32"]
        return [str(BIN / "cloudlulc"), "map", *inputs, *server, *rest]

    def left_behind(self, tag: str, exit_code: int | None) -> dict[str, Any]:
        """A map at the final path after a failure, a success whose map differs, sidecars without a map."""
        import numpy as np

        from cloudlulc.io.rasters import read_raster
        from cloudlulc.mapping.region import sidecar_uris

        final = self.out(tag)
        beside = {n: Path(uri) for n, uri in sidecar_uris(str(final)).items()}
        sidecars = [n for n, path in beside.items() if path.exists()]
        agreement = None
        if final.exists():
            try:
                agreement = float(np.mean(read_raster(str(final)) == self.reference))
            except Exception:  # a torn file: whatever rasterio raises
                agreement = 0.0
        known = {final, *beside.values()}
        work_files = sorted(p.name for p in final.parent.glob(f"*{tag}*") if p not in known)  # resume state
        failed_with_map = int(exit_code != 0 and final.exists())
        wrong = int(agreement is not None and agreement < 0.999)
        return {
            "map": final.exists(),
            "agreement": agreement,
            "sidecars": sidecars,
            "work_files": work_files,
            "half_written": failed_with_map + wrong + int(bool(sidecars) and not final.exists()),
        }


PROMOTE = (
    """
import sys
from cloudlulc.errors import CloudLULCError
from cloudlulc.serving import CPU_MODEL, ModelRepository, promote
from cloudlulc.serving.promotion import RepositoryTarget
from cloudlulc.tracking.settings import TrackingSettings
tracking, registered, repository, dataset, url, key = sys.argv[1:7]
settings = TrackingSettings(tracking_uri=tracking, registered_model=registered)
try:
    target = RepositoryTarget(url, served_model=CPU_MODEL, repository_key=key)
    print(promote(settings, ModelRepository(repository), dataset, target).served_version)
"""
    + EXITS_AS_THE_CLI
)


class PromoteStage:
    """``promote()`` as ``cloudlulc promote --triton-url`` runs it, with Triton (not MLflow) behind the proxy.

    Triton is the dependency whose faults can leave serving half-changed (a published but unchecked
    version, a served.json naming a version not loaded, a lock left behind); MLflow is read first
    (champion, weights) and written last (tags), so its faults end the run before anything is published
    or after it is served. The CLI's ``--onnx`` serves ``cloudlulc_onnx`` (the ONNX Runtime backend),
    which the CPU Triton bundled here lacks, so the target serves the ``cloudlulc_cpu`` twin: the same
    export, publish, load, golden check and rollback code, through a ``RepositoryTarget`` at the proxy.
    """

    name = "promote"

    def __init__(self, tracking: str, registered: str, repository: str, dataset: str, key: str, direct: str) -> None:
        self.args = [tracking, registered, repository, dataset]
        self.key = key
        self.direct = direct
        self.url = ""
        self.before: int | None = None

    def command(self, tag: str) -> list[str]:
        """Promote the champion through the proxy; ``tag`` is not needed (each run publishes a new version)."""
        from cloudlulc.serving import CPU_MODEL, ModelRepository

        self.before = ModelRepository(self.args[2]).served_version(CPU_MODEL)
        return [sys.executable, "-c", PROMOTE, *self.args, self.url, self.key]

    def left_behind(self, tag: str, exit_code: int | None) -> dict[str, Any]:
        """Unserved versions, a lock left (removed here so the next run can start), served but not ready."""
        from cloudlulc.errors import ServingError
        from cloudlulc.serving import CPU_MODEL, ModelRepository, TritonClient
        from cloudlulc.serving.repository import LOCK_SUFFIX

        repository = ModelRepository(self.args[2])
        served = repository.served_version(CPU_MODEL)
        stray = [v for v in repository.versions(CPU_MODEL) if served is None or v > served]
        for version in stray:  # recorded; removed so that the next run starts from a served version
            repository.remove_version(CPU_MODEL, version)
        lock = f".{CPU_MODEL}{LOCK_SUFFIX}"
        lock_left = repository.storage.exists(lock)
        if lock_left:
            repository.storage.delete(lock)  # a killed promoter's lock blocks the next one for up to 15 min
        try:
            with TritonClient(self.direct, repository_key=self.key) as client:
                ready = client.ready_versions(CPU_MODEL)
        except ServingError as error:
            ready = [f"unknown: {error}"]  # type: ignore[list-item]
        not_ready = served is not None and served not in ready
        lost = exit_code == 0 and served == self.before
        return {
            "served_before": self.before,
            "served": served,
            "ready": ready,
            "unserved_versions": stray,
            "lock_left": lock_left,
            "half_written": len(stray) + int(lock_left) + int(not_ready) + int(lost),
        }


def measure(
    stage: Any, proxy: FaultProxy, fault: str, mode: str, env: dict[str, str], cap: float, clear_after: float
) -> Run:
    """One run of ``stage`` with ``fault`` held, cleared ``clear_after`` s after its first connection, or late."""
    tag = f"{fault}-{mode}"
    if mode == "late":
        proxy.set_fault("none")  # switched on by strike() below
    else:
        proxy.set_fault(fault, **FAULTS[fault])
    before = proxy.counts()
    cleared_at: list[float] = []
    timer: threading.Thread | None = None
    stop = threading.Event()

    def start() -> None:
        nonlocal timer
        if mode == "cleared":

            def clear() -> None:
                # Count from the stage's first connection: a stage that computes before its first call
                # (ingest renders its rasters first) must meet the fault, not run after it has gone.
                while proxy.counts()["connections"] == before["connections"] and not stop.is_set():
                    time.sleep(0.05)
                if not stop.wait(clear_after):
                    proxy.set_fault("none")
                    cleared_at.append(time.monotonic())

            timer = threading.Thread(target=clear, daemon=True)
            timer.start()
        if mode == "late":

            def strike() -> None:
                # Once the stage is under way (see its under_way): the fault hits a run in progress.
                while not stage.under_way(before, proxy.counts()) and not stop.is_set():
                    time.sleep(0.02)
                if not stop.is_set():
                    proxy.set_fault(fault, **FAULTS[fault])

            timer = threading.Thread(target=strike, daemon=True)
            timer.start()

    started = time.monotonic()
    code, seconds, error = _run(stage.command(tag), env, cap, start)
    stop.set()
    if timer is not None:
        timer.join()
    proxy.set_fault("none")
    deadline = DEADLINES[stage.name]
    recovery = None
    if mode == "cleared" and code == 0:
        recovery = max(0.0, started + seconds - cleared_at[0]) if cleared_at else 0.0
    after = proxy.counts()
    return Run(
        stage=stage.name,
        fault=fault,
        mode=mode,
        exit_code=code,
        seconds=round(seconds, 2),
        deadline_s=deadline,
        within_deadline=code is not None and seconds <= deadline,
        cut=code is None,
        stuck=code is None and cap >= 3 * deadline,
        recovery_s=None if recovery is None else round(recovery, 2),
        left_behind=stage.left_behind(tag, code),
        error=error,
        proxy={k: after[k] - before[k] for k in ("connections", "resets", "bytes_up", "bytes_down")},
    )


def _ensure_bucket(endpoint: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    if "bench" not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket="bench")


def _assets(work: Path) -> tuple[str, Path, Any]:
    """A small local CloudLULC-Set, an untrained default network and its ONNX export (parity-checked).

    Untrained is enough: map and promote check plumbing and exact parity, not accuracy.
    """
    import torch

    from cloudlulc.data.synthetic import SynthConfig, generate_dataset
    from cloudlulc.export import export_onnx
    from cloudlulc.models.config import ModelConfig
    from cloudlulc.models.networks import build_model

    dataset = work / "set"
    if not (work / "model.onnx").exists():
        generate_dataset(str(dataset), SynthConfig(n=8, size=64, seed=3), progress=False)
        torch.manual_seed(0)
        export_onnx(build_model(ModelConfig()).eval(), work / "model.onnx", str(dataset), parity_count=2)
    torch.manual_seed(0)
    return str(dataset), work / "model.onnx", build_model(ModelConfig()).eval()


def _cpu_repository(root: Path, onnx: Path) -> Any:
    """A model repository serving ``onnx`` as version 1 of ``cloudlulc_cpu`` (marked served)."""
    import numpy as np

    from cloudlulc.export import onnxruntime_runner
    from cloudlulc.serving import CPU_MODEL, GoldenSample, ModelRepository

    rng = np.random.default_rng(0)
    optical, sar = rng.random((1, 12, 64, 64), dtype=np.float32), rng.random((1, 2, 64, 64), dtype=np.float32)
    repository = ModelRepository(str(root))
    golden = GoldenSample(optical, sar, onnxruntime_runner(onnx)(optical, sar))
    repository.mark_served(CPU_MODEL, repository.publish(CPU_MODEL, onnx, golden, {}), {})
    return repository


@contextmanager
def _triton(state_dir: Path, repository: str) -> Iterator[Any]:
    """The local Triton on ``repository``, on system-chosen ports (never 8000-8002), always stopped."""
    from cloudlulc.serving import LocalTriton

    with LocalTriton(state_dir) as server:
        yield server, server.start(repository, ports={"grpc": 0, "http": 0, "metrics": 0})


def _register_champion(url: str, network: Any, name: str) -> None:
    """Log ``network`` to MLflow (directly, no proxy) and point ``champion`` of ``name`` at it."""
    from cloudlulc.tracking import CHAMPION, Registry, TrackingSettings
    from cloudlulc.tracking.runs import tracked_run

    settings = TrackingSettings(tracking_uri=url, experiment="faults-promote", registered_model=name)
    with tracked_run(settings, "champion", {}, {"bench": "faults"}) as logger:
        model_uri = logger.log_model(network)
    registry = Registry(url, name)
    registry.client.set_registered_model_alias(name, CHAMPION, registry.register_challenger(model_uri, logger.run_id))


@contextmanager
def _stage(
    name: str, urls: dict[str, str], work: Path, base: dict[str, str], cap: float
) -> Iterator[tuple[Any, FaultProxy, dict[str, str]]]:
    """The stage, the proxy in front of its server, and its environment; fault-free references first."""
    s3, tracking = urls["s3"], urls["mlflow"]
    triton_env = {k: v for k, v in base.items() if k not in {"TRITON_REPOSITORY_KEY", "TRITON_GRPC_URL"}}
    if name == "train_logging":
        with FaultProxy.for_url(tracking) as proxy:
            logging = MlflowStage(tracking)
            logging.proxied = proxy.url
            yield logging, proxy, base
    elif name in {"ingest", "validate"}:
        _ensure_bucket(s3)
        direct = {**base, "CLOUDLULC_S3_ENDPOINT_URL": s3}
        with FaultProxy.for_url(s3) as proxy:
            env = {**base, "CLOUDLULC_S3_ENDPOINT_URL": proxy.url}
            if name == "ingest":
                ingest = S3Stage(s3, env)
                code, _, error = _run(ingest.command("reference"), direct, cap, lambda: None)
                if code != 0:
                    raise RuntimeError(f"the fault-free reference ingest failed: {error}")
                ingest.reference = ingest.objects("reference")
                yield ingest, proxy, env
                return
            validate = ValidateStage(s3, env)
            synth = [str(BIN / "cloudlulc"), "synth", "--out", "s3://bench/set", "--n", "8", "--size", "64"]
            for command in (synth, validate.command("reference")):
                code, _, error = _run(command, direct, cap, lambda: None)
                if code != 0:
                    raise RuntimeError(f"fault-free {command[1]} failed: {error}")
            found = validate.outputs("reference")
            validate.reference = {"files": sorted(found), "summary": validate.summary(found)}
            yield validate, proxy, env
    elif name == "map":
        _, onnx, _ = _assets(work)
        (work / "maps").mkdir(parents=True, exist_ok=True)
        repository = _cpu_repository(work / "repository-map", onnx)
        with _triton(work / "triton-map", repository.uri) as (_, state):
            mapping = MapStage(work, *_scene(work))
            code, _, error = _run(mapping.command("reference", state.grpc_url), triton_env, cap, lambda: None)
            if code != 0:
                raise RuntimeError(f"the fault-free reference map failed: {error}")
            from cloudlulc.io.rasters import read_raster

            mapping.reference = read_raster(str(mapping.out("reference")))
            with FaultProxy("127.0.0.1", state.grpc_port) as proxy:
                mapping.url = f"127.0.0.1:{proxy.port}"
                yield mapping, proxy, triton_env
    elif name == "promote":
        dataset, onnx, network = _assets(work)
        _register_champion(tracking, network, "bench-promote")
        repository = _cpu_repository(work / "repository-promote", onnx)
        with _triton(work / "triton-promote", repository.uri) as (server, state):
            promote = PromoteStage(tracking, "bench-promote", repository.uri, dataset, server.key(), state.grpc_url)
            with FaultProxy("127.0.0.1", state.grpc_port) as proxy:
                promote.url = f"127.0.0.1:{proxy.port}"
                yield promote, proxy, triton_env
    else:
        raise ValueError(f"unknown stage {name!r}; one of {', '.join(STAGES)}")


def _caps(default: float | None, given: str) -> dict[str, float]:
    """Per-stage caps: CAPS, all replaced by ``--cap`` when given, then ``--stage-caps name=s,...``."""
    caps = {k: default if default is not None else v for k, v in CAPS.items()}
    for item in filter(None, given.split(",")):
        stage, _, seconds = item.partition("=")
        if stage not in caps:
            raise SystemExit(f"--stage-caps: unknown stage {stage!r}")
        caps[stage] = float(seconds)
    return caps


def main() -> None:
    """Start the servers, run every (stage, fault, mode), write benchmarks/results/faults_<date>.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=None, help="kill any run after this many seconds [per stage]")
    parser.add_argument("--stage-caps", default="", help="per-stage caps, e.g. map=200,promote=150 (see CAPS)")
    parser.add_argument("--clear-after", type=float, default=3.0, help="seconds after a cleared run's first connection")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    parser.add_argument("--out", default=None, help="result file [default: results/faults_<date>.json]")
    args = parser.parse_args()
    caps = _caps(args.cap, args.stage_caps)
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(credentials)
    base = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    s3_port, mlflow_port = free_port(), free_port()
    moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)]
    urls = {"s3": f"http://127.0.0.1:{s3_port}", "mlflow": f"http://127.0.0.1:{mlflow_port}"}
    runs: list[Run] = []
    scratch = tempfile.TemporaryDirectory(prefix="bench-faults-", ignore_cleanup_errors=True)  # 100 MB: removed
    work = Path(scratch.name)
    mlflow_server = mlflow_command(work, mlflow_port)
    started = time.monotonic()
    with (
        scratch,
        loopback_server(moto, f"{urls['s3']}/", base),
        loopback_server(mlflow_server, f"{urls['mlflow']}/health", base),
    ):
        for name in [s for s in args.stages.split(",") if s]:
            with _stage(name, urls, work, base, caps[name] * 4) as (stage, proxy, env):
                for fault in [f for f in args.faults.split(",") if f]:
                    modes: tuple[str, ...] = ("held", "cleared") if fault != "none" else ("held",)
                    if fault in getattr(stage, "late_faults", ()):
                        modes += ("late",)  # the fault meets a run under way (see the module docstring)
                    for mode in modes:
                        runs.append(measure(stage, proxy, fault, mode, env, caps[name], args.clear_after))
                        print(json.dumps(asdict(runs[-1])), flush=True)
    out = Path(args.out) if args.out else HERE / "results" / f"faults_{dt.date.today().isoformat()}.json"
    result = {"caps_s": caps, "clear_after_s": args.clear_after, "faults": FAULTS, "deadlines_s": DEADLINES}
    result["seconds"] = round(time.monotonic() - started, 1)
    out.write_text(json.dumps({**result, "runs": [asdict(r) for r in runs], "machine": machine()}, indent=2) + "\n")
    print(f"wrote {out} after {result['seconds']} s")


if __name__ == "__main__":
    main()
