"""Probes of a running Triton's reliability: concurrent tile load, readiness samples, memory, restricted API.

benchmarks/bench_triton_reliability.py measures the serving figures with these and the short tests
guard the same figures with them, so the benchmark and its guards measure one thing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

import numpy as np

from cloudlulc.errors import ServingError
from cloudlulc.io.retry import SERVING_RETRY
from cloudlulc.serving.client import REPOSITORY_KEY_NAME, TritonClient
from cloudlulc.serving.promotion import LocalTarget
from cloudlulc.serving.repository import ModelRepository

SINGLE_TRY = replace(SERVING_RETRY, attempts=1, timeout_s=120.0)
"""Load clients try each request once, so every failure counts."""


@dataclass(frozen=True)
class Answer:
    """One request of a load: when it started (monotonic), its latency, the version that answered or the error."""

    started: float
    seconds: float
    version: str
    error: str = ""


def tile_pair(tile: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random one-tile request (optical, sar)."""
    rng = np.random.default_rng(seed)
    return rng.random((1, 12, tile, tile), dtype=np.float32), rng.random((1, 2, tile, tile), dtype=np.float32)


class TileLoad:
    """``clients`` threads, each with its own gRPC channel, sending one tile after another until the block ends.

    Each request pins the version ``version()`` names when it is sent (a map pins the served version
    when it starts), as production clients do.
    """

    def __init__(self, url: str, model: str, clients: int, tile: int, version: Callable[[], str]) -> None:
        self.url, self.model, self.tile, self.version = url, model, tile, version
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(seed,), daemon=True) for seed in range(clients)]

    def __enter__(self) -> TileLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, seed: int) -> None:
        optical, sar = tile_pair(self.tile, seed)
        with TritonClient(self.url, retry=SINGLE_TRY) as client:
            while not self._stop.is_set():
                version = self.version()
                started = time.monotonic()
                try:
                    client.infer(self.model, optical, sar, version)
                    answer = Answer(started, time.monotonic() - started, version)
                except ServingError as error:
                    answer = Answer(started, time.monotonic() - started, "", str(error))
                with self._lock:
                    self.answers.append(answer)


def latency_summary(answers: list[Answer], start: float = 0.0, end: float = float("inf")) -> dict[str, object]:
    """Requests sent in ``[start, end)``: count, failures, versions that answered, p50 / p99 latency (ms)."""
    window = [a for a in answers if start <= a.started < end]
    ok = [a.seconds for a in window if not a.error]
    percentiles = np.percentile(ok, [50, 99]) * 1000 if ok else [float("nan")] * 2
    versions = sorted({a.version for a in window if a.version})
    return {
        "requests": len(window),
        "failed": len(window) - len(ok),
        "versions": versions,
        "p50_ms": round(float(percentiles[0]), 1),
        "p99_ms": round(float(percentiles[1]), 1),
        "errors": sorted({a.error for a in window if a.error})[:3],
    }


class Readiness:
    """Samples the server's ready answer (and, given ``model``, the model's) every ``interval_s`` while the block runs.

    A sample is ``(time, server answer, model answer)``: True or False as the server answered, None
    when it did not answer within ``timeout_s`` (a loaded server is slow, which is not the same as not
    ready). The two differ during a load: Triton 2.51 answers server-not-ready while any version
    loads, while the model stays ready as long as a version of it serves (what a probe should ask).
    """

    def __init__(self, url: str, interval_s: float = 0.1, timeout_s: float = 5.0, model: str | None = None) -> None:
        self.url, self.interval_s, self.timeout_s, self.model = url, interval_s, timeout_s, model
        self.samples: list[tuple[float, bool | None, bool | None]] = []
        self._stop, self._first = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> Readiness:
        self._thread.start()
        self._first.wait(self.timeout_s * 2)  # the block starts with an answer in hand, however short it is
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()  # the sampler takes one last sample on its way out
        self._thread.join()

    def _sample(self) -> None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        def ask(question: Callable[[], bool]) -> bool | None:
            try:
                return bool(question())
            except InferenceServerException:
                return None

        with grpcclient.InferenceServerClient(self.url) as client:
            while True:
                stopping = self._stop.is_set()
                server = ask(lambda: client.is_server_ready(client_timeout=self.timeout_s))
                model = None
                if self.model:
                    model = ask(lambda: client.is_model_ready(self.model, client_timeout=self.timeout_s))
                self.samples.append((time.monotonic(), server, model))
                self._first.set()
                if stopping:
                    return
                self._stop.wait(self.interval_s)

    def summary(self) -> dict[str, object]:
        """Samples, unanswered ones, shares answered ready (server, model), seconds from the first server not-ready."""
        answered = [(t, ready) for t, ready, _ in self.samples if ready is not None]
        not_ready = [t for t, ready in answered if not ready]
        not_ready_for = round(self.samples[-1][0] - not_ready[0], 1) if not_ready else None
        model = [ready for _, _, ready in self.samples if ready is not None]
        return {
            "samples": len(self.samples),
            "unanswered": len(self.samples) - len(answered),
            "ready_share": sum(ready for _, ready in answered) / len(answered) if answered else None,
            "model_ready_share": sum(model) / len(model) if model else None,
            "not_ready_from_first_s": not_ready_for,
        }


def resident_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ServingError(f"process {pid}: no resident memory reported")  # pragma: no cover


def soak(client: TritonClient, model: str, cycles: int, pid: int) -> dict[str, object]:
    """Unload and load ``model`` ``cycles`` times; the server's resident memory after the first and the last.

    The baseline is taken after one cycle, once the server's allocators hold their working set, as
    Triton's own memory-growth test does after its warm-up.
    """
    samples: list[float] = []
    started = time.monotonic()
    for _ in range(cycles):
        client.unload_model(model)
        deadline = time.monotonic() + 60
        while client.ready_versions(model) and time.monotonic() < deadline:
            time.sleep(0.05)
        client.load_model(model)
        samples.append(resident_mb(pid))
    return {
        "cycles": cycles,
        "seconds_per_cycle": round((time.monotonic() - started) / max(cycles, 1), 2),
        "rss_first_mb": round(samples[0], 1),
        "rss_last_mb": round(samples[-1], 1),
        "rss_max_mb": round(max(samples), 1),
        "growth_mb": round(samples[-1] - samples[0], 1),
    }


def keyless_repository_calls(grpc_url: str, http_url: str, model: str) -> dict[str, bool]:
    """Each restricted call tried without the key, over gRPC and HTTP: whether the server refused it."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    refused: dict[str, bool] = {}
    with grpcclient.InferenceServerClient(grpc_url) as g, httpclient.InferenceServerClient(http_url) as h:
        calls: dict[str, Callable[[], object]] = {
            "grpc repository index": g.get_model_repository_index,
            "grpc load": lambda: g.load_model(model),
            "grpc unload": lambda: g.unload_model(model),
            "grpc config": lambda: g.get_model_config(model),
            "grpc statistics": lambda: g.get_inference_statistics(model),
            "http repository index": h.get_model_repository_index,
            "http load": lambda: h.load_model(model),
            "http unload": lambda: h.unload_model(model),
            "http config": lambda: h.get_model_config(model),
            "http statistics": lambda: h.get_inference_statistics(model),
        }
        for name, call in calls.items():
            try:
                call()
                refused[name] = False
            except InferenceServerException as error:
                refused[name] = "restricted" in str(error).lower() or REPOSITORY_KEY_NAME in str(error)
    return refused


def deadline_probe(url: str, model: str, version: str, timeout_s: float, tile: int = 64) -> tuple[str, float]:
    """One request with a ``timeout_s`` client deadline: the gRPC status it ended with and the seconds it took."""
    optical, sar = tile_pair(tile)
    with TritonClient(url, retry=replace(SERVING_RETRY, attempts=1, timeout_s=timeout_s)) as client:
        started = time.monotonic()
        try:
            client.infer(model, optical, sar, version)
            status = "OK"
        except ServingError as error:
            cause = error.__cause__
            status = str(cause.status()) if cause is not None and hasattr(cause, "status") else str(error)
        return status.removeprefix("StatusCode."), time.monotonic() - started


KILLED_CLIENT = """
import sys, numpy as np, tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
inputs = [g.InferInput("optical", [1, 12, 64, 64], "FP32"), g.InferInput("sar", [1, 2, 64, 64], "FP32")]
inputs[0].set_data_from_numpy(np.zeros((1, 12, 64, 64), np.float32))
inputs[1].set_data_from_numpy(np.zeros((1, 2, 64, 64), np.float32))
print("sending", flush=True)
client.infer(sys.argv[2], inputs, model_version=sys.argv[3])
"""


def kill_client_mid_request(url: str, model: str, version: str, after_s: float) -> dict[str, object]:
    """Start a client process, SIGKILL it ``after_s`` after it sends a request; then ask the server how it is."""
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, url, model, version], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        time.sleep(after_s)
        running = process.poll() is None
    finally:
        process.kill()
        process.wait()
    time.sleep(0.5)
    with TritonClient(url, retry=SINGLE_TRY) as client:
        optical, sar = tile_pair(64)
        started = time.monotonic()
        client.infer(model, optical, sar, version)
        return {
            "killed_mid_request": running,
            "live": client.server_live(),
            "ready": client.server_ready(),
            "next_request_s": round(time.monotonic() - started, 2),
        }


@dataclass
class BrokenInServerTarget:
    """A local target whose new version loads outside Triton (the pre-check passes) but raises inside it.

    Stands in for a version that breaks only in the server's environment (a missing library, a
    different runtime): its ``model.py`` is replaced by one that raises when Triton initializes it.
    """

    inner: LocalTarget
    served_model: str = field(init=False)

    def __post_init__(self) -> None:
        self.served_model = self.inner.served_model

    def client(self, url: str) -> TritonClient:
        """The wrapped target's keyed client."""
        return self.inner.client(url)

    def load(self, repository: ModelRepository, version: int | None) -> str:
        """Break the candidate's ``model.py``, then load as the wrapped target does."""
        if version is not None and version != repository.served_version(self.served_model):
            repository.storage.write_bytes(
                f"{self.served_model}/{version}/model.py", b"raise RuntimeError('fails only inside the server')\n"
            )
        return self.inner.load(repository, version)
