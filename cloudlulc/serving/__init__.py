"""Serving: the Triton model repository, the gRPC client, the local Triton and promotion.

Names are imported on first use: Triton's Python-backend stub imports
:mod:`cloudlulc.serving.python_backend` through this package for every model instance it loads, and
must not pay for torch and the tracking stack that promotion needs (seconds and hundreds of MB per load);
see :mod:`cloudlulc.lazy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudlulc.lazy import lazy_names

if TYPE_CHECKING:
    from cloudlulc.io.retry import RetryPolicy
    from cloudlulc.serving.client import TritonClient
    from cloudlulc.serving.local_triton import LocalTriton, ServerState, free_port
    from cloudlulc.serving.model_config import CPU_MODEL, ONNX_MODEL, TENSORRT_MODEL, ServingSettings, render_config
    from cloudlulc.serving.promotion import (
        ExportedModel,
        LocalTarget,
        PromotionResult,
        RepositoryTarget,
        ServedVersion,
        export_champion,
        promote,
        publish_and_serve,
        read_exported,
    )
    from cloudlulc.serving.repository import GoldenSample, ModelRepository

__getattr__ = lazy_names(
    __name__,
    {
        "client": ["TritonClient"],
        "local_triton": ["LocalTriton", "ServerState", "free_port"],
        "model_config": ["CPU_MODEL", "ONNX_MODEL", "TENSORRT_MODEL", "ServingSettings", "render_config"],
        "promotion": [
            "ExportedModel",
            "LocalTarget",
            "PromotionResult",
            "RepositoryTarget",
            "ServedVersion",
            "export_champion",
            "promote",
            "publish_and_serve",
            "read_exported",
        ],
        "repository": ["GoldenSample", "ModelRepository"],
        "cloudlulc.io.retry": ["RetryPolicy"],  # shared with ingest; importing it needs neither torch nor Triton
    },
)

__all__ = [
    "CPU_MODEL",
    "ONNX_MODEL",
    "TENSORRT_MODEL",
    "ExportedModel",
    "GoldenSample",
    "LocalTarget",
    "LocalTriton",
    "ModelRepository",
    "PromotionResult",
    "RepositoryTarget",
    "RetryPolicy",
    "ServedVersion",
    "ServerState",
    "ServingSettings",
    "TritonClient",
    "export_champion",
    "free_port",
    "promote",
    "publish_and_serve",
    "read_exported",
    "render_config",
]
