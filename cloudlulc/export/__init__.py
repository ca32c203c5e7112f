"""Serving exports: ONNX (dynamic batch and size) and TensorRT FP16 engines, each parity-checked.

Names are imported on first use (:mod:`cloudlulc.lazy`), so :mod:`cloudlulc.export.options` (read by
the CLI as it starts) does not pull in torch and the ONNX exporter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudlulc.lazy import lazy_names

if TYPE_CHECKING:
    from cloudlulc.export.onnx import INPUT_NAMES, OUTPUT_NAME, ServingModel, export_onnx, onnxruntime_runner
    from cloudlulc.export.parity import ParityReport, Runner, check_parity, parity_samples, torch_runner
    from cloudlulc.export.tensorrt import EngineProfile, build_engine

__getattr__ = lazy_names(
    __name__,
    {
        "onnx": ["INPUT_NAMES", "OUTPUT_NAME", "ServingModel", "export_onnx", "onnxruntime_runner"],
        "parity": ["ParityReport", "Runner", "check_parity", "parity_samples", "torch_runner"],
        "tensorrt": ["EngineProfile", "build_engine"],
    },
)

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
