"""Regional mapping through a served model: the Triton gRPC client as the mapping predictor.

The CLI's ``map`` command and the mapping pipeline step both come here, so finding the server (a
given URL, or the local Triton's state file), checking the served contract and naming the model in
the map's metadata happen in one place.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from cloudlulc.errors import ServingError
from cloudlulc.mapping import MapResult, map_scene
from cloudlulc.serving.client import TritonClient
from cloudlulc.serving.local_triton import LocalTriton


def resolve_grpc_url(triton_url: str | None, local_dir: str | Path) -> str:
    """``triton_url`` when given, else the running local Triton recorded under ``local_dir``."""
    if triton_url:
        return triton_url
    state = LocalTriton(local_dir).state()
    if state is None:
        raise ServingError(f"no Triton URL given and no local Triton running (state in {local_dir}); "
                           "start one with `cloudlulc promote` or `cloudlulc serve`")  # fmt: skip
    return state.grpc_url


def map_with_triton(optical: str, sar: str, out_uri: str, grpc_url: str, *, model_name: str = "cloudlulc",
                    model_version: str = "", **options: Any) -> MapResult:  # fmt: skip
    """Map one scene with the model Triton serves at ``grpc_url``; ``options`` go to :func:`map_scene`.

    The contract (tensor names, shapes, types) is checked once before the first tile, so a server
    serving something else fails before any work, naming the model.
    """
    with TritonClient(grpc_url) as client:
        metadata = client.check_contract(model_name, model_version)
        served = model_version or ",".join(metadata.get("versions", []))
        predictor = functools.partial(client.infer, model_name, version=model_version)
        return map_scene(optical, sar, out_uri, predictor, model_id=f"triton:{model_name}:{served}", **options)
