"""Which Triton a promotion serves through: the production one at a URL, or the local one on this machine.

The ``promote`` command and the pipeline's promote step choose the same way, here.
"""

from __future__ import annotations

from pathlib import Path

from cloudlulc.errors import ServingError
from cloudlulc.serving.model_config import ONNX_MODEL, TENSORRT_MODEL
from cloudlulc.serving.promotion import LocalTarget, RepositoryTarget, ServingTarget


def serving_target(
    triton_url: str | None, local_dir: str | Path | None, *, tensorrt: bool, replicas: str | None = None
) -> ServingTarget:
    """Triton at ``triton_url`` (explicit model control) when given, else the local Triton under ``local_dir``.

    Args:
        triton_url: production Triton gRPC ``host:port``; empty or None for the local Triton.
        local_dir: state folder of the local Triton (it serves the ONNX twin as ``cloudlulc_cpu``).
        tensorrt: at ``triton_url``, serve the TensorRT plan (GPU) rather than the ONNX Runtime twin.
        replicas: every replica of the production Triton (a headless Service), which all load a new version.

    Raises:
        ServingError: neither a URL nor a local folder was given.
    """
    if triton_url:
        return RepositoryTarget(triton_url, served_model=TENSORRT_MODEL if tensorrt else ONNX_MODEL, replicas=replicas)
    if local_dir:
        return LocalTarget(Path(local_dir))
    raise ServingError(
        "no Triton to promote to: pass triton_url or set TRITON_GRPC_URL (config map "
        "cloudlulc-settings), or local_dir for the local Triton"
    )
