"""The Triton gRPC client the product uses for production and local servers alike.

It checks the served model's metadata against the serving contract before the first request,
retries transient failures (server unavailable, deadline exceeded, overloaded) with exponential
backoff inside an overall deadline, and turns every failure into a ServingError naming the server,
model and version. It also drives the repository API (load / unload) of explicit model control.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from cloudlulc import schema
from cloudlulc.errors import ServingError
from cloudlulc.export.onnx import INPUT_NAMES, OUTPUT_NAME
from cloudlulc.io.retry import SERVING_RETRY, RetryPolicy
from cloudlulc.models.networks import OPTICAL_CHANNELS, SAR_CHANNELS
from cloudlulc.serving.shared_memory import SharedMemorySlots

T = TypeVar("T")
log = logging.getLogger(__name__)
TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED")
CONTRACT = {"optical": ("FP32", OPTICAL_CHANNELS), "sar": ("FP32", SAR_CHANNELS), OUTPUT_NAME: ("FP32", 6)}


def _status(error: Exception) -> str:
    status = getattr(error, "status", None)
    return str(status() if callable(status) else status or "")


REPOSITORY_KEY_ENV = "TRITON_REPOSITORY_KEY"
"""The key of Triton's restricted model-repository protocol (k8s: secret ``cloudlulc-triton``)."""
REPOSITORY_KEY_NAME_ENV = "TRITON_REPOSITORY_KEY_NAME"
REPOSITORY_KEY_NAME = "admin-key"
"""The ``<key>`` of ``--grpc-restricted-protocol=model-repository:<key>=<value>`` in k8s/base/triton."""


def repository_headers(key: str | None = None) -> dict[str, str] | None:
    """Headers that unlock a restricted gRPC repository API (load, unload, index), or None when open.

    Triton expects the restricted key as the header ``triton-grpc-protocol-<key name>``.
    """
    value = key if key is not None else os.environ.get(REPOSITORY_KEY_ENV, "")
    if not value:
        return None
    name = os.environ.get(REPOSITORY_KEY_NAME_ENV, REPOSITORY_KEY_NAME)
    return {f"triton-grpc-protocol-{name}": value}


class TritonClient:
    """A context-managed gRPC client bound to one server URL (``host:port``)."""

    def __init__(
        self,
        url: str,
        *,
        retry: RetryPolicy | None = None,
        repository_key: str | None = None,
        shared_memory: bool = False,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url.removeprefix("grpc://")
        self.retry = retry or SERVING_RETRY
        self._admin_headers = repository_headers(repository_key)
        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url=self.url)
        self._slots: SharedMemorySlots | None = None
        self._shared_memory = shared_memory
        if shared_memory:  # tensors through /dev/shm: the server must share this host (and the key)
            self._slots = SharedMemorySlots(self._register_region, self._unregister_region)

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Free the shared-memory regions, if any, and close the gRPC channel."""
        if self._slots is not None:
            self._slots.close()
        self._client.close()

    def _register_region(self, name: str, key: str, size: int) -> None:
        self._call(
            f"registering shared memory {name}",
            lambda: self._client.register_system_shared_memory(name, key, size, headers=self._admin_headers),
        )

    def _unregister_region(self, name: str) -> None:
        self._client.unregister_system_shared_memory(name, headers=self._admin_headers)

    def shared_memory_regions(self) -> list[str]:
        """Names of the system shared-memory regions registered with the server (a keyed call)."""
        status = self._call(
            "shared memory status",
            lambda: self._client.get_system_shared_memory_status(headers=self._admin_headers, as_json=True),
        )
        return sorted(status.get("regions", {}))

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call`` with retries on transient gRPC statuses; ServingError otherwise."""
        from tritonclient.utils import InferenceServerException

        delays = self.retry.delays()  # first_delay_s doubling, each capped at max_delay_s
        started = time.monotonic()
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return call()
            except InferenceServerException as error:
                status = _status(error)
                elapsed = time.monotonic() - started
                transient = any(code in status for code in TRANSIENT) or "failed to connect" in str(error).lower()
                if not transient or attempt == self.retry.attempts or elapsed >= self.retry.deadline_s:
                    reason = (error.message() or status).strip().splitlines()[0] if (error.message() or status) else ""
                    raise ServingError(
                        f"Triton at {self.url}: {what} failed after {attempt} attempt(s): {reason}"
                    ) from error
                time.sleep(min(delays[attempt - 1] * (0.5 + random.random() / 2), self.retry.deadline_s - elapsed))
        raise AssertionError("unreachable")  # pragma: no cover

    def server_live(self) -> bool:
        """Whether the server answers as live (no retries: for polling)."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self._client.is_server_live(client_timeout=2.0))
        except InferenceServerException:
            return False

    def server_ready(self) -> bool:
        """Whether the server answers and is ready (no retries: for polling)."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self._client.is_server_ready(client_timeout=2.0))
        except InferenceServerException:
            return False

    def wait_ready(self, model: str, version: str = "", timeout_s: float = 60.0, settle_s: float = 15.0) -> None:
        """Block until ``model`` (``version``) is ready on a live server; ServingError after ``timeout_s``.

        Then give the server's own readiness up to ``settle_s`` to follow (retired versions finish
        unloading) without requiring it: after any version failed to load, Triton 2.51 keeps strict
        server readiness false until it restarts, even once the model serves again.
        """
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._client.is_server_live(client_timeout=2.0) and self._client.is_model_ready(
                    model, version, client_timeout=2.0
                ):
                    break
            except InferenceServerException:
                pass
            if time.monotonic() > deadline:
                raise ServingError(
                    f"Triton at {self.url}: model {model!r} version {version or 'latest'} not ready "
                    f"after {timeout_s:.0f} s"
                )
            time.sleep(0.2)
        settled = time.monotonic() + settle_s
        while not self.server_ready() and time.monotonic() < settled:
            time.sleep(0.2)

    def check_contract(self, model: str, version: str = "") -> dict[str, Any]:
        """The model's metadata, after checking its tensors against the serving contract."""
        metadata = self._call(
            f"metadata of {model!r}", lambda: self._client.get_model_metadata(model, version, as_json=True)
        )
        tensors = {t["name"]: t for t in [*metadata.get("inputs", []), *metadata.get("outputs", [])]}
        problems = []
        for name, (datatype, channels) in CONTRACT.items():
            tensor = tensors.get(name)
            if tensor is None:
                problems.append(f"tensor {name!r} missing")
                continue
            shape = [int(s) for s in tensor["shape"]]
            if tensor["datatype"] != datatype or len(shape) != 4 or shape[1] != channels:
                problems.append(f"{name} is {tensor['datatype']} {shape}, expected {datatype} [-1,{channels},-1,-1]")
        if problems:
            raise ServingError(
                f"Triton at {self.url}: model {model!r} breaks the serving contract: " + "; ".join(problems)
            )
        return metadata

    def infer(self, model: str, optical: np.ndarray, sar: np.ndarray, version: str = "") -> np.ndarray:
        """Class probabilities [B,6,H,W] for one batch."""
        arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in (optical, sar)]
        expected = (optical.shape[0], schema.NUM_CLASSES, *optical.shape[2:])
        inputs = [self._grpc.InferInput(n, list(a.shape), "FP32") for n, a in zip(INPUT_NAMES, arrays, strict=True)]
        outputs = [self._grpc.InferRequestedOutput(OUTPUT_NAME)]
        region = None
        out_bytes = int(np.prod(expected)) * 4
        if self._slots is not None and self._shared_memory:
            try:
                region = self._slots.region(sum(a.nbytes for a in arrays) + out_bytes)
            except ServingError as error:  # not keyed, or the server is on another host (a port-forward)
                log.warning("%s; sending tensors inside the gRPC messages instead", error)
                self._shared_memory = False
        if region is not None and self._slots is not None:
            offsets = self._slots.write(region, arrays)
            for tensor, array, offset in zip(inputs, arrays, offsets, strict=True):
                tensor.set_shared_memory(region.name, array.nbytes, offset)
            out_offset = sum(a.nbytes for a in arrays)
            outputs[0].set_shared_memory(region.name, out_bytes, out_offset)
        else:
            for tensor, array in zip(inputs, arrays, strict=True):
                tensor.set_data_from_numpy(array)
        timeout = self.retry.timeout_s
        result = self._call(
            f"inference on {model!r} version {version or 'latest'}",
            lambda: self._client.infer(model, inputs, model_version=version, outputs=outputs, client_timeout=timeout),
        )
        answered = result.get_response().model_version
        if version and answered != version:
            raise ServingError(
                f"Triton at {self.url}: {model!r} answered from version {answered}, not the pinned version {version}"
            )
        if region is not None and self._slots is not None:
            probs = self._slots.read(region, expected, out_offset)
        else:
            probs = result.as_numpy(OUTPUT_NAME)
        if probs is None or probs.shape != expected:
            shape = None if probs is None else probs.shape
            raise ServingError(f"Triton at {self.url}: {model!r} returned {OUTPUT_NAME} {shape}, expected {expected}")
        return probs

    def predictor(self, model: str, version: str = "") -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``infer`` as a plain function of (optical, sar), after one contract check (thread-safe)."""
        self.check_contract(model, version)
        return lambda optical, sar: self.infer(model, optical, sar, version)

    def load_model(self, model: str, config: dict[str, Any] | str | None = None) -> None:
        """Ask the server (explicit model control) to (re)load ``model``, optionally overriding its config (JSON)."""
        text = config if isinstance(config, str) or config is None else json.dumps(config)
        self._call(
            f"loading {model!r}", lambda: self._client.load_model(model, headers=self._admin_headers, config=text)
        )

    def unload_model(self, model: str) -> None:
        """Ask the server to unload ``model``."""
        self._call(f"unloading {model!r}", lambda: self._client.unload_model(model, headers=self._admin_headers))

    def _index(self, model: str) -> list[dict[str, Any]]:
        index = self._call(
            "repository index",
            lambda: self._client.get_model_repository_index(headers=self._admin_headers, as_json=True),
        )
        return [e for e in index.get("models", []) if e.get("name") == model and e.get("version")]

    def ready_versions(self, model: str) -> list[int]:
        """Versions of ``model`` the server reports READY (repository index)."""
        return sorted(int(entry["version"]) for entry in self._index(model) if entry.get("state") == "READY")

    def failed_versions(self, model: str) -> list[tuple[int, str]]:
        """Versions of ``model`` that failed to load, with the first line of Triton's reason.

        A version that is UNAVAILABLE with the reason ``unloaded`` did not fail: Triton unloads the
        other versions of a model when one of them fails to load.
        """
        failed = [
            (int(e["version"]), (e.get("reason") or "no reason given").strip().splitlines()[0][:300])
            for e in self._index(model)
            if e.get("state") == "UNAVAILABLE"
        ]
        return sorted((version, reason) for version, reason in failed if reason != "unloaded")

    def serving_versions(self, model: str) -> list[int]:
        """Versions the model's (open) metadata lists as available for requests."""
        metadata = self._call(f"metadata of {model!r}", lambda: self._client.get_model_metadata(model, as_json=True))
        return sorted(int(v) for v in metadata.get("versions", []))
