"""Serving: the Triton model repository, the gRPC client, the local Triton and promotion."""

from cloudlulc.serving.client import RetryPolicy, TritonClient
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
