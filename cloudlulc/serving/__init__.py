"""Serving: the Triton model repository, the gRPC client, the local Triton and promotion."""

from cloudlulc.serving.client import RetryPolicy, TritonClient
from cloudlulc.serving.local_triton import LocalTriton, ServerState, free_port, serve_onnx
from cloudlulc.serving.model_config import ONNX_MODEL, TENSORRT_MODEL, ServingSettings, render_config
from cloudlulc.serving.promotion import (
    ExportedModel,
    LocalTarget,
    PromotionResult,
    RepositoryTarget,
    export_champion,
    promote,
    read_exported,
)
from cloudlulc.serving.repository import GoldenSample, ModelRepository

__all__ = [
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
    "ServerState",
    "ServingSettings",
    "TritonClient",
    "export_champion",
    "free_port",
    "promote",
    "read_exported",
    "render_config",
    "serve_onnx",
]
