"""The embedded default server: the real ``tritonserver`` bundled in nvidia-pytriton, on a model repository.

It is the production control plane on CPU: explicit model control, versions loaded and unloaded over
gRPC, the model-repository API restricted by a key, served on loopback only. The bundled build has
the Python backend only, so it loads ``cloudlulc_cpu`` (ONNX Runtime behind ``model.py``), not the
TensorRT or ONNX Runtime platforms. ``LocalTriton`` starts the binary in its own process group (so the
Python-backend stub processes stop with it), records it in ``state_dir/server.json``, returns once it
is ready, and stops it with SIGTERM (SIGKILL after a timeout).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from cloudlulc.errors import ServingError
from cloudlulc.io.storage import atomic_local_path, is_s3_uri, s3_endpoint_url
from cloudlulc.serving.client import REPOSITORY_KEY_ENV, REPOSITORY_KEY_NAME, TritonClient
from cloudlulc.serving.model_config import MODEL_FILES
from cloudlulc.serving.repository import ModelRepository

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_PORTS = {"grpc": 8001, "http": 8000, "metrics": 8002}
REPOSITORY_KEY_FILE_ENV = "TRITON_REPOSITORY_KEY_FILE"
RESTRICTED = "model-repository,model-config,shared-memory,statistics,trace,logging"
"""The APIs the key guards, as in k8s/base/triton: health, metadata and inference stay open."""


ERROR_LINE = re.compile(r"E\d{4} |error: |Signal \(\d+\)")
CPU_NOISE = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML")
"""Written by every start without a GPU (measured with Triton 2.51), so never the reason a start failed."""


class TritonExitedError(ServingError):
    """The server process ended while starting, before any version was reported as failed to load."""


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


def _bundle() -> Path:
    """The Triton build inside the nvidia-pytriton wheel."""
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


def triton_environment() -> dict[str, str]:
    """The server's environment: this interpreter's libpython and the wheel's libraries, this venv first on PATH.

    Triton's Python stub otherwise links the system libpython and crashes under another interpreter.
    """
    import pytriton

    libraries = [
        sysconfig.get_config_var("LIBDIR") or "",
        str(Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"),
    ]
    environment = dict(os.environ)
    current = environment.get("LD_LIBRARY_PATH", "")
    environment["LD_LIBRARY_PATH"] = ":".join(p for p in [*libraries, current] if p)
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment.get('PATH', '')}"
    environment["PYTHONDONTWRITEBYTECODE"] = "1"  # a __pycache__ in a version folder makes Triton reload it
    environment.pop(REPOSITORY_KEY_ENV, None)  # the key goes on the command line only
    return environment


def backend_directory(state_dir: Path) -> Path:
    """``state_dir/backends`` with the wheel's Python backend and the stub of this interpreter's version."""
    bundle = _bundle()
    stub = bundle / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
    stub_file = stub / "triton_python_backend_stub"
    if not stub_file.is_file():
        raise ServingError(f"{stub_file}: nvidia-pytriton has no Python-backend stub for this Python")
    target = state_dir / "backends" / "python"
    if not (target / stub_file.name).is_file():
        staging = state_dir / "backends" / f".python-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(bundle / "backends" / "python", staging, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub_file, staging / stub_file.name)
        try:
            staging.rename(target)
        except OSError:  # another start won the race: its copy is the same
            shutil.rmtree(staging, ignore_errors=True)
    return target.parent


def repository_key(state_dir: Path, key_file: str | None = None) -> tuple[str, Path | None, bool]:
    """The restricted API's key: ``TRITON_REPOSITORY_KEY``, else the key file, else a new one written there.

    Returns the key, the file it is in (None when it came from the environment) and whether it was
    generated just now.
    """
    if os.environ.get(REPOSITORY_KEY_ENV):
        return os.environ[REPOSITORY_KEY_ENV], None, False
    path = Path(key_file or os.environ.get(REPOSITORY_KEY_FILE_ENV) or state_dir / "repository.key")
    if path.exists():
        try:
            key = path.read_text().strip()
        except OSError as error:
            raise ServingError(f"{path}: cannot read the repository key ({error.strerror})") from None
        if not key or any(c.isspace() or c in ",:=" for c in key):
            raise ServingError(f"{path}: not a repository key (one word, no ',', ':' or '=')")
        return key, path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    with atomic_local_path(path) as temp_path:
        temp_path.touch(mode=0o600)
        temp_path.write_text(key + "\n")
    return key, path, True


def triton_repository_path(uri: str) -> str:
    """What ``--model-repository`` takes: an absolute folder, or ``s3://[endpoint/]bucket/prefix``."""
    if not is_s3_uri(uri):
        return str(Path(uri).resolve())
    endpoint = s3_endpoint_url()
    return f"s3://{endpoint.rstrip('/')}/{uri.removeprefix('s3://')}" if endpoint else uri


@dataclass(frozen=True)
class Launch:
    """What every attempt to start one server shares: the repository, its models and the API key."""

    repository: str
    models: list[str]
    key: str
    key_file: str | None
    key_generated: bool
    prefix: list[str]
    """What runs ``tritonserver`` (``setpriv --pdeathsig TERM`` for a server that stops with its caller)."""


@dataclass(frozen=True)
class ServerState:
    """A running local server, as recorded in its state file."""

    pid: int
    grpc_port: int
    http_port: int
    metrics_port: int
    repository: str
    models: list[str]
    key_file: str | None = None
    """The file holding the repository API's key (None when it came from the environment)."""
    key_generated: bool = False

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

    def _recorded(self) -> ServerState | None:
        try:
            return ServerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def state(self) -> ServerState | None:
        """The recorded server, if its process is still alive."""
        state = self._recorded()
        return state if state is not None and _alive(state.pid) else None

    def key(self) -> str:
        """The key of the running server's repository API (or of the next one started here)."""
        state = self.state()
        if state is not None and state.key_file:
            return repository_key(self.state_dir, state.key_file)[0]
        return repository_key(self.state_dir)[0]

    def start(
        self,
        repository: str,
        *,
        models: list[str] | None = None,
        key_file: str | None = None,
        ports: dict[str, int] | None = None,
        timeout_s: float = 120.0,
        stop_with_caller: bool = False,
    ) -> ServerState:
        """Serve ``repository`` (explicit model control); ``models`` (default: each with versions) load at start.

        Returns once the server and those models are ready; a version that fails to load stops the
        server and raises a one-line ServingError naming it. ``stop_with_caller``: the kernel sends the
        server SIGTERM when the calling thread's process dies (``setpriv --pdeathsig``), for a server
        that must not outlive it (the promotion's throwaway one); the thread must outlive the server.
        A server that exits while starting, before any version is reported failed, is started once
        more on freshly chosen ports (CI saw one exit with code 1 and no error in its log).
        """
        if self.state() is not None:
            raise ServingError(f"a local Triton is already running (see {self.state_file}); stop it first")
        self.reap()
        store = ModelRepository(repository)
        if models is None:
            models = [m for m in store.check() if m in MODEL_FILES and store.versions(m)]
        else:
            store.check(models)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key, key_path, generated = repository_key(self.state_dir, key_file)
        prefix = _parent_death_prefix(stop_with_caller)
        launch = Launch(repository, models, key, str(key_path) if key_path else None, generated, prefix)
        try:
            return self._launch(launch, ports or DEFAULT_PORTS, timeout_s)
        except TritonExitedError as error:
            log.warning("%s; starting it once more", error)
        return self._launch(launch, ports or DEFAULT_PORTS, timeout_s)

    def _launch(self, launch: Launch, ports: dict[str, int], timeout_s: float) -> ServerState:
        """One start of the server process, recorded in the state file, returned once ready (else stopped)."""
        chosen = {name: free_port(port) for name, port in ports.items()}
        repository, models, key = launch.repository, launch.models, launch.key
        command = [
            *launch.prefix,
            str(_bundle() / "bin" / "tritonserver"),
            f"--model-repository={triton_repository_path(repository)}",
            f"--backend-directory={backend_directory(self.state_dir)}",
            "--model-control-mode=explicit",
            *[f"--load-model={m}" for m in models],
            "--disable-auto-complete-config",
            "--strict-readiness=true",
            "--exit-on-error=false",
            "--exit-timeout-secs=20",
            "--log-verbose=0",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={chosen['grpc']}",
            f"--http-address={LOOPBACK}",
            f"--http-port={chosen['http']}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={chosen['metrics']}",
            f"--grpc-restricted-protocol={RESTRICTED}:{REPOSITORY_KEY_NAME}={key}",
            f"--http-restricted-api={RESTRICTED}:{REPOSITORY_KEY_NAME}={key}",
        ]
        with self.log_file.open("ab") as log:
            log_start = log.tell()
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=triton_environment(),
                start_new_session=True,
                cwd=self.state_dir,
            )
        state = ServerState(
            process.pid,
            chosen["grpc"],
            chosen["http"],
            chosen["metrics"],
            repository,
            models,
            launch.key_file,
            launch.key_generated,
        )
        with atomic_local_path(self.state_file) as temp_path:
            temp_path.write_text(json.dumps(asdict(state), indent=2) + "\n")
        try:
            self._wait_ready(state, process, key, timeout_s, log_start)
        except BaseException:
            self.stop()
            raise
        return state

    def _wait_ready(
        self, state: ServerState, process: subprocess.Popen[bytes], key: str, timeout_s: float, log_start: int
    ) -> None:
        deadline = time.monotonic() + timeout_s
        with TritonClient(state.grpc_url, repository_key=key) as client:
            while not client.server_ready():
                if process.poll() is not None:
                    raise TritonExitedError(
                        f"local Triton on {state.repository} exited with code {process.returncode} "
                        f"while starting: {_last_error(self.log_file, log_start)}"
                    )
                if client.server_live():
                    for model in state.models:
                        failed = client.failed_versions(model)
                        if failed:
                            version, reason = failed[0]
                            where = ModelRepository(state.repository).storage.join(f"{model}/{version}")
                            raise ServingError(f"{where}: version {version} of {model} failed to load: {reason}")
                if time.monotonic() > deadline:
                    raise ServingError(
                        f"local Triton on {state.repository} not ready after {timeout_s:.0f} s; see {self.log_file}"
                    )
                time.sleep(0.2)

    def reap(self) -> list[int]:
        """Kill the Python-backend stubs a killed server left behind (its process group outlives it); return them.

        A server SIGKILLed alone (not its group) leaves its stubs running, hundreds of MB each. Only
        processes of the recorded group that are Triton stubs are killed, so a group number reused by an
        unrelated program is left alone.
        """
        state = self._recorded()
        if state is None or _alive(state.pid):
            return []
        stubs = _stubs_in_group(state.pid)
        for pid in stubs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if stubs:
            log.warning(
                "killed %d Python-backend stub(s) left by a local Triton that died (pid %d)", len(stubs), state.pid
            )
        self.state_file.unlink(missing_ok=True)
        return stubs

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group (its Python stubs too) and wait; SIGKILL if it does not exit."""
        state = self._recorded()
        if state is None:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(state.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _group_alive(state.pid):
                time.sleep(0.1)
            if not _group_alive(state.pid):
                break
        self.state_file.unlink(missing_ok=True)


def _parent_death_prefix(wanted: bool) -> list[str]:
    """``setpriv --pdeathsig TERM`` (util-linux, in every Debian image) when ``wanted`` and installed."""
    setpriv = shutil.which("setpriv") if wanted else None
    if wanted and setpriv is None:
        log.warning("setpriv is not installed: a throwaway Triton outlives a killed caller until the next start")
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


def _last_error(log_file: Path, start: int = 0) -> str:
    """The last error this start wrote to the server's log (from byte ``start``), else its last line.

    Triton's errors start ``E<mmdd> ``, its start-up failures ``error: `` and a crash ``Signal (n)``; the
    lines every start on a machine without a GPU writes are not errors. An exit with none of them is
    quoted by the last line it wrote.
    """
    try:
        with log_file.open("rb") as log:
            log.seek(start)
            lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"see {log_file}"
    errors = [line for line in lines if ERROR_LINE.match(line) and not any(noise in line for noise in CPU_NOISE)]
    if errors:
        quoted = _message(errors[-1])
    else:
        quoted = f"no error logged, its last line: {_message(lines[-1])}" if lines else "nothing logged"
    return f"{quoted} (see {log_file})"


def _message(line: str) -> str:
    """A log line without Triton's ``E1201 15:24:47.259368 22552 server.cc:241]`` prefix, at most 300 characters."""
    return line.split("] ", 1)[-1][:300]


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


def _stubs_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` running Triton's Python-backend stub (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # the process ended while being read
            continue
        if int(fields[2]) == pgid and b"triton_python_backend_stub" in command:
            found.append(int(entry.name))
    return found


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (the server or one of its Python stubs)."""
    _alive(pgid)  # reap the leader if it is our child
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's group reused the number
        return False
    return True


def serve_until_signal(
    server: LocalTriton, start: Callable[[], ServerState], announce: Callable[[ServerState], None]
) -> int:
    """Start through ``start``, then block until SIGTERM / SIGINT or the server's exit, and stop it.

    The handlers are in place before the server starts, so a signal during the start stops it too.
    Returns 0 after a signal, 6 when the server exited by itself.
    """
    stopping = {"signal": 0}

    def on_signal(signum: int, frame: object) -> None:
        stopping["signal"] = signum

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        state = start()
        announce(state)
        while not stopping["signal"] and _alive(state.pid):
            time.sleep(0.2)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping["signal"] else 6
