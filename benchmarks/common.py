"""Helpers shared by the benchmark scripts: one-core pinning, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(os.environ.get("CLOUDLULC_BENCH_OUT", "outputs/benchmarks"))


def pin_to_one_core() -> None:
    """Run on a single core with single-threaded numeric libraries (the issue's 'one core')."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GDAL_NUM_THREADS"):
        os.environ[name] = "1"
    import torch

    torch.set_num_threads(1)


def timed(function: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(), "machine": platform.machine()}


def save(name: str, result: dict[str, object]) -> Path:
    """Write a result as JSON under outputs/benchmarks/ and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once ``url`` answers; RuntimeError if ``process`` exits first, TimeoutError after ``timeout`` s."""
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
def loopback_server(command: list[str], probe: str, env: dict[str, str] | None = None) -> Iterator[None]:
    """A server in its own process group, up once ``probe`` answers, always stopped (SIGTERM, then SIGKILL)."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    try:
        wait_http(probe, process, 90)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def mlflow_command(folder: Path, port: int) -> list[str]:
    """A single-worker MLflow server on SQLite with proxied artifacts under ``folder`` (as the tests start it)."""
    store, artifacts = f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts")
    network = ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    return [mlflow, "server", "--backend-store-uri", store, "--artifacts-destination", artifacts, *network]


@contextmanager
def mlflow_server(folder: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real MLflow server (:func:`mlflow_command`) on a free port; yields its URL, stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {**(env if env is not None else os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with loopback_server(mlflow_command(folder, port), f"{url}/health", settings):  # no job runner, as deployed
        yield url
