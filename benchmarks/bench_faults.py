"""Network faults across the loop: each fault kind in front of the S3 server and the MLflow server, per stage.

A :class:`faultproxy.FaultProxy` sits between a stage's real client and a real loopback server (moto S3,
MLflow with SQLite). Each (fault, stage) pair is run twice, as a subprocess so that a hung run can be
killed and its exit code read:

* ``held``: the fault stays on for the whole run: exit code, seconds, whether it ended within the
  stage's deadline, and what it left behind (objects with wrong bytes, a catalogue pointing at missing
  items, an MLflow run left RUNNING or FINISHED with metrics missing).
* ``cleared``: the fault is cleared ``--clear-after`` seconds after the run's first connection: whether
  the run still succeeds, and how long after the clearing it finished (``recovery_s``; compare with the
  fault-free run's seconds).
* ``late`` (MLflow blackhole and reset): the fault starts once the run has passed its health check and
  opened its first API connection, so only MLflow's own retries stand between it and a hang.

A run still going at ``--cap`` seconds is killed and counted as cut; it is "stuck" only when the cap is
at least three times its deadline and it was still going (see docs/benchmarks.md "Network faults").

    cd benchmarks && python bench_faults.py            # about 6 min on 2 cores
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
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the proxy is a test tool; the library does not carry it

from common import machine  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

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
# in docs/benchmarks.md): S3 calls are 5 boto attempts of at most 10 s connect + 60 s read plus standard-mode
# waits (at most 20 s each), the MLflow stage starts with a 5 s health check that turns an unreachable server
# into exit 4, and each later MLflow request may take 8 tries of 120 s plus waits of up to 254 s.
DEADLINES = {"ingest": 5 * 70 + 4 * 20, "train_logging": 5 + 8 * 120 + 254}
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


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not up after {timeout} s")


@contextmanager
def _server(command: list[str], probe: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """A loopback server in its own process group, always stopped."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        _wait_http(probe, process, 90)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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


TRAIN_LOGGING = """
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
except CloudLULCError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(error.exit_code)
except Exception as error:
    print(f"error (unmapped {type(error).__name__}): {error}", file=sys.stderr)
    sys.exit(1)
""".replace("EPOCHS", str(EPOCHS))


class MlflowStage:
    """Train logging as ``run_train_stage`` does it (``tracked_run``, per-epoch metrics, an artifact)."""

    name = "train_logging"

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
                # After the health check and the first API connection: the fault hits a run under way.
                while proxy.counts()["connections"] < before["connections"] + 2 and not stop.is_set():
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


def _mlflow_command(work: Path, port: int) -> list[str]:
    """A single-worker MLflow server on SQLite with proxied artifacts, as tests/conftest.py starts it."""
    store, artifacts = f"sqlite:///{work / 'mlflow.db'}", str(work / "artifacts")
    network = ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return [str(BIN / "mlflow"), "server", "--backend-store-uri", store, "--artifacts-destination", artifacts, *network]


def _stage(name: str, target: str, proxy: FaultProxy, base: dict[str, str], cap: float) -> tuple[Any, dict[str, str]]:
    """The stage object and its environment; ingest first writes its fault-free reference catalogue."""
    if name == "train_logging":
        stage = MlflowStage(target)
        stage.proxied = proxy.url
        return stage, base
    ingest = S3Stage(target, {**base, "CLOUDLULC_S3_ENDPOINT_URL": proxy.url})
    code, _, error = _run(ingest.command("reference"), {**base, "CLOUDLULC_S3_ENDPOINT_URL": target}, cap, lambda: None)
    if code != 0:
        raise RuntimeError(f"the fault-free reference ingest failed: {error}")
    ingest.reference = ingest.objects("reference")
    return ingest, ingest.env


def main() -> None:
    """Start the servers, run every (stage, fault, mode), write benchmarks/results/faults_<date>.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", type=float, default=90.0, help="kill a run after this many seconds")
    parser.add_argument("--clear-after", type=float, default=3.0, help="seconds after a cleared run's first connection")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset")
    parser.add_argument("--stages", default="ingest,train_logging", help="comma-separated subset")
    args = parser.parse_args()
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(credentials)
    base = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    s3_port, mlflow_port = _free_port(), _free_port()
    moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)]
    urls = {"ingest": f"http://127.0.0.1:{s3_port}", "train_logging": f"http://127.0.0.1:{mlflow_port}"}
    runs: list[Run] = []
    mlflow_server = _mlflow_command(Path(tempfile.mkdtemp(prefix="bench-faults-")), mlflow_port)
    with _server(moto, f"{urls['ingest']}/", base), _server(mlflow_server, f"{urls['train_logging']}/health", base):
        for name in [s for s in args.stages.split(",") if s]:
            with FaultProxy.for_url(urls[name]) as proxy:
                stage, env = _stage(name, urls[name], proxy, base, args.cap * 4)
                for fault in [f for f in args.faults.split(",") if f]:
                    modes: tuple[str, ...] = ("held", "cleared") if fault != "none" else ("held",)
                    if name == "train_logging" and fault in {"blackhole", "reset"}:
                        modes += ("late",)  # past the health check, where only MLflow's own retries act
                    for mode in modes:
                        runs.append(measure(stage, proxy, fault, mode, env, args.cap, args.clear_after))
                        print(json.dumps(asdict(runs[-1])), flush=True)
    out = HERE / "results" / f"faults_{dt.date.today().isoformat()}.json"
    result = {"cap_s": args.cap, "clear_after_s": args.clear_after, "faults": FAULTS, "deadlines_s": DEADLINES}
    out.write_text(json.dumps({**result, "runs": [asdict(r) for r in runs], "machine": machine()}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
