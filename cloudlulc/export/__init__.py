"""Serving exports: ONNX (dynamic batch and size) and TensorRT FP16 engines, each parity-checked."""

from cloudlulc.export.onnx import INPUT_NAMES, OUTPUT_NAME, ServingModel, export_onnx, onnxruntime_runner
from cloudlulc.export.parity import ParityReport, Runner, check_parity, parity_samples, torch_runner
from cloudlulc.export.tensorrt import EngineProfile, build_engine

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "EngineProfile",
    "ParityReport",
    "Runner",
    "ServingModel",
    "build_engine",
    "check_parity",
    "export_onnx",
    "onnxruntime_runner",
    "parity_samples",
    "torch_runner",
]
