"""CloudLULC-Net, its baselines, and their configuration."""

from cloudlulc.models.complexity import gflops_per_patch, parameter_count
from cloudlulc.models.config import ARCHITECTURES, SIZES, ModelConfig, model_config
from cloudlulc.models.networks import ModelOutput, SegmentationNetwork, build_model, check_input_size

__all__ = [
    "ARCHITECTURES",
    "SIZES",
    "ModelConfig",
    "ModelOutput",
    "SegmentationNetwork",
    "build_model",
    "check_input_size",
    "gflops_per_patch",
    "model_config",
    "parameter_count",
]
