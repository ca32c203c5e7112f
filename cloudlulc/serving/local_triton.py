"""The embedded default server: a real Triton (bundled in nvidia-pytriton) serving the ONNX export.

Triton runs its Python backend here, so the model is an ONNX Runtime session behind a Python
callable, bound under the production model name, tensors and version number: clients cannot tell
it from the production ``cloudlulc`` model. ``serve_onnx`` blocks (``cloudlulc serve``);
``LocalTriton`` runs that in a child process, returns only once it is ready, and stops it with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType

import numpy as np

from cloudlulc import schema
from cloudlulc.errors import ServingError
from cloudlulc.export.onnx import OUTPUT_NAME, onnxruntime_runner
from cloudlulc.io.storage import atomic_local_path
from cloudlulc.models.networks import OPTICAL_CHANNELS, SAR_CHANNELS
from cloudlulc.serving.client import TritonClient
from cloudlulc.serving.model_config import TENSORRT_MODEL

LOOPBACK = "127.0.0.1"
DEFAULT_PORTS = {"grpc": 8001, "http": 8000, "metrics": 8002}


def free_port(preferred: int, host: str = LOOPBACK) -> int:
    """``preferred`` when it can be bound, else a free port the system picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise ServingError(f"no free port on {host}")  # pragma: no cover


def _python_backend_environment() -> None:
    """Let Triton's Python stub find this interpreter's libpython (STACK_NOTES: it crashes otherwise)."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir and libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def serve_onnx(onnx_path: str, *, version: int = 1, model_name: str = TENSORRT_MODEL, host: str = LOOPBACK,
               grpc_port: int = 8001, http_port: int = 8000, metrics_port: int = 8002, max_batch_size: int = 8,
               threads: int = 0) -> None:  # fmt: skip
    """Serve ``onnx_path`` as ``model_name`` version ``version`` until SIGTERM or SIGINT (blocking)."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    if not Path(onnx_path).is_file():
        raise ServingError(f"{onnx_path}: ONNX model to serve not found")
    _python_backend_environment()
    run = onnxruntime_runner(onnx_path, threads)

    @batch
    def infer(optical: np.ndarray, sar: np.ndarray) -> dict[str, np.ndarray]:
        return {OUTPUT_NAME: run(optical.astype(np.float32, copy=False), sar.astype(np.float32, copy=False))}

    def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # pytriton's serve() stops the server cleanly on it

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    config = TritonConfig(grpc_address=host, grpc_port=grpc_port, http_address=host, http_port=http_port,
                          metrics_address=host, metrics_port=metrics_port, log_verbose=0)  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="cloudlulc-triton-") as workspace,
        Triton(config=config, workspace=Path(workspace) / "workspace") as triton,  # pytriton creates it
    ):
        triton.bind(
            model_name=model_name,
            model_version=version,
            infer_func=infer,
            inputs=[Tensor(name="optical", dtype=np.float32, shape=(OPTICAL_CHANNELS, -1, -1)),
                    Tensor(name="sar", dtype=np.float32, shape=(SAR_CHANNELS, -1, -1))],
            outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(schema.NUM_CLASSES, -1, -1))],
            config=ModelConfig(max_batch_size=max_batch_size,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=2000)),
            strict=True,
        )  # fmt: skip
        triton.serve()


@dataclass(frozen=True)
class ServerState:
    """A running local server, as recorded in its state file."""

    pid: int
    grpc_port: int
    http_port: int
    metrics_port: int
    version: int
    onnx_path: str
    model: str = TENSORRT_MODEL

    @property
    def grpc_url(self) -> str:
        """``host:port`` for the gRPC client."""
        return f"{LOOPBACK}:{self.grpc_port}"


class LocalTriton:
    """Start, find and stop the local server process; its state lives in ``state_dir/server.json``."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_file = self.state_dir / "server.json"
        self.log_file = self.state_dir / "server.log"

    def __enter__(self) -> LocalTriton:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def state(self) -> ServerState | None:
        """The recorded server, if its process is still alive."""
        try:
            state = ServerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        try:
            os.kill(state.pid, 0)
        except OSError:
            return None
        return state

    def start(self, onnx_path: str, version: int, *, timeout_s: float = 120.0, threads: int = 0) -> ServerState:
        """Serve ``onnx_path`` as version ``version``; return once the model answers as ready."""
        if self.state() is not None:
            raise ServingError(f"a local Triton is already running (see {self.state_file}); stop it first")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port(port) for name, port in DEFAULT_PORTS.items()}
        command = [sys.executable, "-m", "cloudlulc", "serve", "--onnx", str(onnx_path), "--version", str(version),
                   "--grpc-port", str(ports["grpc"]), "--http-port", str(ports["http"]),
                   "--metrics-port", str(ports["metrics"]), "--threads", str(threads)]  # fmt: skip
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        state = ServerState(process.pid, ports["grpc"], ports["http"], ports["metrics"], version, str(onnx_path))
        with atomic_local_path(self.state_file) as temp_path:
            temp_path.write_text(json.dumps(asdict(state), indent=2) + "\n")
        deadline = time.monotonic() + timeout_s
        with TritonClient(state.grpc_url) as client:
            while True:
                if process.poll() is not None:
                    self.state_file.unlink(missing_ok=True)
                    raise ServingError(f"local Triton exited with code {process.returncode} while starting; "
                                       f"see {self.log_file}")  # fmt: skip
                if client.server_ready():
                    try:
                        client.wait_ready(state.model, str(version), timeout_s=1.0)
                        return state
                    except ServingError:
                        pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServingError(f"local Triton not ready after {timeout_s:.0f} s; see {self.log_file}")
                time.sleep(0.2)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server (its whole process group) and wait; SIGKILL if it does not exit in time."""
        try:
            state = ServerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(state.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _alive(state.pid):
                time.sleep(0.1)
            if not _alive(state.pid):
                break
        self.state_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (reaping it if it is our exited child)."""
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
