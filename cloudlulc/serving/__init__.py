"""Serving: the Triton model repository, the gRPC client, the local Triton and promotion."""

from cloudlulc.serving.client import RetryPolicy, TritonClient
from cloudlulc.serving.local_triton import LocalTriton, ServerState, free_port, serve_onnx
from cloudlulc.serving.model_config import ONNX_MODEL, TENSORRT_MODEL, ServingSettings, render_config
from cloudlulc.serving.promotion import LocalTarget, PromotionResult, RepositoryTarget, promote
from cloudlulc.serving.repository import GoldenSample, ModelRepository

__all__ = [
    "ONNX_MODEL",
    "TENSORRT_MODEL",
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
    "free_port",
    "promote",
    "render_config",
    "serve_onnx",
]
