"""Triton ``config.pbtxt`` for the two served models, rendered from one set of settings.

``cloudlulc`` is the TensorRT plan (GPU), ``cloudlulc_onnx`` its ONNX Runtime twin (fallback, CPU or
GPU). Both share the serving contract of ARCHITECTURE.md; ``triton_models/`` holds these files as
rendered with the defaults, and a test keeps it in step with this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudlulc import schema
from cloudlulc.export.onnx import OUTPUT_NAME
from cloudlulc.models.networks import OPTICAL_CHANNELS, SAR_CHANNELS

TENSORRT_MODEL = "cloudlulc"
ONNX_MODEL = "cloudlulc_onnx"
MODEL_FILES = {TENSORRT_MODEL: "model.plan", ONNX_MODEL: "model.onnx"}
PLATFORMS = {TENSORRT_MODEL: "tensorrt_plan", ONNX_MODEL: "onnxruntime_onnx"}


@dataclass(frozen=True)
class ServingSettings:
    """What operators tune per deployment; the tensors are fixed by the contract."""

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    gpu_instances: int = 1
    cpu_instances: int = 2
    versions_kept_loaded: int = 2
    """The newest N versions load together, so a new version is checked while the previous one serves."""


def render_config(model: str, settings: ServingSettings | None = None) -> str:
    """The ``config.pbtxt`` text of ``model`` (``cloudlulc`` or ``cloudlulc_onnx``)."""
    if model not in PLATFORMS:
        raise ValueError(f"unknown served model {model!r}; expected one of {sorted(PLATFORMS)}")
    settings = settings or ServingSettings()
    if model == TENSORRT_MODEL:
        instances = f"  {{ count: {settings.gpu_instances}, kind: KIND_GPU }}"
    else:
        instances = f"  {{ count: {settings.cpu_instances}, kind: KIND_CPU }}"
    preferred = ", ".join(str(size) for size in settings.preferred_batch_sizes)
    return f"""name: "{model}"
platform: "{PLATFORMS[model]}"
default_model_filename: "{MODEL_FILES[model]}"
max_batch_size: {settings.max_batch_size}
input [
  {{ name: "optical", data_type: TYPE_FP32, dims: [ {OPTICAL_CHANNELS}, -1, -1 ] }},
  {{ name: "sar", data_type: TYPE_FP32, dims: [ {SAR_CHANNELS}, -1, -1 ] }}
]
output [
  {{ name: "{OUTPUT_NAME}", data_type: TYPE_FP32, dims: [ {schema.NUM_CLASSES}, -1, -1 ] }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {settings.max_queue_delay_us}
}}
instance_group [
{instances}
]
version_policy: {{ latest: {{ num_versions: {settings.versions_kept_loaded} }} }}
"""
