"""Regional mapping through a served model: the Triton gRPC client as the mapping predictor.

The CLI's ``map`` command and the mapping pipeline step both come here, so finding the server (a
given URL, or the local Triton's state file), pinning the served version, checking the served
contract and naming the model in the map's metadata happen in one place.

Every request names one version: the one ``<model>.served.json`` of the model repository records (the last
to pass its golden check), else the lowest version the server has loaded (a promotion loads its
candidate as the newest). Unversioned requests would reach a freshly loaded, unchecked version.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from cloudlulc.errors import ServingError
from cloudlulc.io.retry import RetryPolicy
from cloudlulc.mapping import MapResult, map_scene
from cloudlulc.serving.client import REPOSITORY_KEY_ENV, TritonClient
from cloudlulc.serving.local_triton import LocalTriton
from cloudlulc.serving.model_config import CPU_MODEL, TENSORRT_MODEL
from cloudlulc.serving.repository import ModelRepository

REPOSITORY_ENV = "TRITON_MODEL_REPOSITORY"


def resolve_grpc_url(triton_url: str | None, local_dir: str | Path) -> str:
    """``triton_url`` when given, else the running local Triton recorded under ``local_dir``."""
    if triton_url:
        return triton_url
    state = LocalTriton(local_dir).state()
    if state is None:
        raise ServingError(
            f"no Triton URL given and no local Triton running (state in {local_dir}); "
            "start one with `cloudlulc serve --repository DIR` or `cloudlulc promote`"
        )
    return state.grpc_url


def default_model(triton_url: str | None) -> str:
    """The model a map asks for when none is named: the CPU platform locally, the TensorRT plan elsewhere."""
    return TENSORRT_MODEL if triton_url else CPU_MODEL


def served_repository(triton_url: str | None, local_dir: str | Path, repository: str | None = None) -> str | None:
    """The model repository whose ``served.json`` names the version to pin, when one is known."""
    if repository:
        return repository
    if not triton_url:
        state = LocalTriton(local_dir).state()
        if state is not None:
            return state.repository
    return os.environ.get(REPOSITORY_ENV) or None


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def loopback_key(grpc_url: str, local_dir: str | Path) -> str | None:
    """The repository key that lets a map on the server's host pass tensors through shared memory, or None.

    Measured on the local Triton: system shared memory maps 1.2x faster than tensors inside the gRPC
    messages (docs/benchmarks.md), and registering a region is a keyed call. Only a loopback URL
    qualifies; the key is ``TRITON_REPOSITORY_KEY``, else the local Triton's own when it serves that
    URL. A loopback URL that reaches another host (a port-forward) falls back to plain gRPC, warning.
    """
    host = grpc_url.removeprefix("grpc://").rpartition(":")[0]
    if host not in LOOPBACK_HOSTS:
        return None
    if key := os.environ.get(REPOSITORY_KEY_ENV):
        return key
    server = LocalTriton(local_dir)
    state = server.state()
    return server.key() if state is not None and state.grpc_url == grpc_url.removeprefix("grpc://") else None


def pinned_version(client: TritonClient, model: str, repository: str | None) -> str:
    """The version to send every request to (see the module docstring)."""
    if repository:
        served = ModelRepository(repository).served_version(model)
        if served is not None:
            return str(served)
    loaded = client.serving_versions(model)
    if not loaded:
        raise ServingError(f"Triton at {client.url}: model {model!r} has no version loaded")
    return str(loaded[0])


def map_with_triton(
    optical: str | None,
    sar: str | None,
    out_uri: str,
    grpc_url: str,
    *,
    model_name: str = TENSORRT_MODEL,
    model_version: str = "",
    repository: str | None = None,
    retry: RetryPolicy | None = None,
    shared_memory_key: str | None = None,
    **options: Any,
) -> MapResult:
    """Map one scene with the model Triton serves at ``grpc_url``; ``options`` go to :func:`map_scene`.

    The version is pinned before the first tile (``model_version``, else :func:`pinned_version`) and
    every answer is checked to come from it, so the map's ``triton:<model>:<version>`` tag names the
    version that answered. The contract (tensor names, shapes, types) is checked once before the
    first tile, so a server serving something else fails before any work, naming the model. ``retry``
    bounds each request (client deadline, tries); a server that stays too slow ends in ServingError (exit 6).
    With ``shared_memory_key`` (:func:`loopback_key`) tensors travel through system shared memory.
    """
    with TritonClient(
        grpc_url, retry=retry, repository_key=shared_memory_key, shared_memory=shared_memory_key is not None
    ) as client:
        version = model_version or pinned_version(client, model_name, repository)
        client.check_contract(model_name, version)
        predictor = functools.partial(client.infer, model_name, version=version)
        return map_scene(optical, sar, out_uri, predictor, model_id=f"triton:{model_name}:{version}", **options)
