"""Triton ``config.pbtxt`` for the served models, rendered from one set of settings.

``cloudlulc`` is the TensorRT plan (GPU), ``cloudlulc_onnx`` its ONNX Runtime twin (fallback, CPU or
GPU) and ``cloudlulc_cpu`` the same ONNX export behind Triton's Python backend (a thin ``model.py``
over :mod:`cloudlulc.serving.python_backend`), the CPU platform any Triton build can load. All share
the serving contract of ARCHITECTURE.md; ``triton_models/`` holds these files as rendered with the
defaults, and a test keeps it in step with this module. The text is Triton's own ``ModelConfig``
protobuf message (from ``tritonclient``) printed in protobuf text format, so a misspelt field or
wrong type fails here rather than when Triton loads the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cloudlulc import schema
from cloudlulc.export.onnx import OUTPUT_NAME
from cloudlulc.models.networks import OPTICAL_CHANNELS, SAR_CHANNELS

TENSORRT_MODEL = "cloudlulc"
ONNX_MODEL = "cloudlulc_onnx"
CPU_MODEL = "cloudlulc_cpu"
SERVED_MODELS = (TENSORRT_MODEL, ONNX_MODEL, CPU_MODEL)
MODEL_FILES = {TENSORRT_MODEL: "model.plan", ONNX_MODEL: "model.onnx", CPU_MODEL: "model.onnx"}
PLATFORMS = {TENSORRT_MODEL: "tensorrt_plan", ONNX_MODEL: "onnxruntime_onnx", CPU_MODEL: "python"}
ADAPTER_FILE = "model.py"
"""The Python backend's entry point in each ``cloudlulc_cpu`` version folder."""
WARMUP_FOLDER = "warmup"
"""``<model>/warmup/{optical,sar}``: raw FP32 of the golden sample, Triton's warmup request."""


@dataclass(frozen=True)
class ServingSettings:
    """What operators tune per deployment; the tensors are fixed by the contract."""

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    gpu_instances: int = 1
    cpu_instances: int = 2
    python_instances: int = 1
    """One Python-backend process per instance; a single one lets ONNX Runtime use every core on dynamic batches."""
    python_threads: int = 0
    """ONNX Runtime intra-op threads per Python-backend instance (0: ONNX Runtime's choice, every core)."""
    versions_kept_loaded: int = 2
    """At start the newest N versions load, so the served one is loaded even beside an unchecked newer one."""
    warmup_tile: int = 256
    """Side of the warmup request (the golden sample wrapped to it); within the TensorRT profile's tiles."""
    delay_s: float = 0.0
    """Seconds ``cloudlulc_cpu`` sleeps per execution: a deliberately slow server for deadline tests; 0 in service."""


HEADER = "# Rendered by cloudlulc.serving.model_config from ServingSettings: change the code, not this file.\n"


def build_config(model: str, settings: ServingSettings | None = None) -> model_config_pb2.ModelConfig:
    """Triton's own ``ModelConfig`` message of one of :data:`SERVED_MODELS`, so its schema checks every field."""
    if model not in PLATFORMS:
        raise ValueError(f"unknown served model {model!r}; expected one of {sorted(PLATFORMS)}")
    settings = settings or ServingSettings()
    fp32 = model_config_pb2.TYPE_FP32
    config = model_config_pb2.ModelConfig(
        name=model,
        max_batch_size=settings.max_batch_size,
        input=[
            model_config_pb2.ModelInput(name="optical", data_type=fp32, dims=[OPTICAL_CHANNELS, -1, -1]),
            model_config_pb2.ModelInput(name="sar", data_type=fp32, dims=[SAR_CHANNELS, -1, -1]),
        ],
        output=[model_config_pb2.ModelOutput(name=OUTPUT_NAME, data_type=fp32, dims=[schema.NUM_CLASSES, -1, -1])],
        dynamic_batching=model_config_pb2.ModelDynamicBatching(
            preferred_batch_size=settings.preferred_batch_sizes,
            max_queue_delay_microseconds=settings.max_queue_delay_us,
        ),
        instance_group=[_instances(model, settings)],
        version_policy=model_config_pb2.ModelVersionPolicy(
            latest=model_config_pb2.ModelVersionPolicy.Latest(num_versions=settings.versions_kept_loaded)
        ),
    )
    tile = settings.warmup_tile
    warmup = config.model_warmup.add(name="golden_sample", batch_size=1)
    for name, channels in (("optical", OPTICAL_CHANNELS), ("sar", SAR_CHANNELS)):
        warmup.inputs[name].CopyFrom(
            model_config_pb2.ModelWarmup.Input(data_type=fp32, dims=[channels, tile, tile], input_data_file=name)
        )
    if model == CPU_MODEL:
        config.backend = "python"
        values: dict[str, object] = {"onnx_threads": settings.python_threads, "model_file": MODEL_FILES[model]}
        if settings.delay_s > 0:
            values["delay_s"] = settings.delay_s
        for key, value in values.items():
            config.parameters[key].string_value = str(value)
    else:
        config.platform = PLATFORMS[model]
        config.default_model_filename = MODEL_FILES[model]
    return config


def _instances(model: str, settings: ServingSettings) -> model_config_pb2.ModelInstanceGroup:
    kinds = model_config_pb2.ModelInstanceGroup
    if model == TENSORRT_MODEL:
        return kinds(count=settings.gpu_instances, kind=kinds.KIND_GPU)
    count = settings.python_instances if model == CPU_MODEL else settings.cpu_instances
    return kinds(count=count, kind=kinds.KIND_CPU)


def render_config(model: str, settings: ServingSettings | None = None) -> str:
    """The ``config.pbtxt`` text of one of :data:`SERVED_MODELS` (protobuf text format of :func:`build_config`)."""
    return HEADER + text_format.MessageToString(build_config(model, settings))


def parse_config(text: str) -> model_config_pb2.ModelConfig:
    """A ``config.pbtxt`` read back into Triton's ``ModelConfig`` (comments skipped; unknown fields refused)."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())
