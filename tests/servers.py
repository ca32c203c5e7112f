"""A real MLflow server on loopback for tests: started in its own process group, stopped with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def running_mlflow_server(
    folder: Path, port: int, backend: str, *extra: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> Iterator[str]:
    """``mlflow server`` (one worker, artifacts under ``folder``) until its health check answers; yield its URL."""
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        *extra,
    ]
    # As deployed (k8s/base/mlflow): no job runner, whose 8 processes and /dev/shm store the tests do not need.
    environment = {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **(env if env is not None else os.environ),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    url = f"http://127.0.0.1:{port}"
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
        try:
            _wait_healthy(process, url, folder / "server.log", timeout_s)
            yield url
        finally:
            stop_group(process)


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"mlflow server did not become healthy in {timeout_s:.0f} s")
        time.sleep(0.3)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (uvicorn's workers too), SIGKILL if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except ProcessLookupError:  # exited already (a failed start)
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
