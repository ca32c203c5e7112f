"""Serving exports: ONNX (dynamic batch and size) and TensorRT FP16 engines, each parity-checked.

Names are imported on first use, so :mod:`cloudlulc.export.options` (read by the CLI as it starts)
does not pull in torch and the ONNX exporter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudlulc.export.onnx import INPUT_NAMES, OUTPUT_NAME, ServingModel, export_onnx, onnxruntime_runner
    from cloudlulc.export.parity import ParityReport, Runner, check_parity, parity_samples, torch_runner
    from cloudlulc.export.tensorrt import EngineProfile, build_engine

_HOMES = {
    "onnx": ["INPUT_NAMES", "OUTPUT_NAME", "ServingModel", "export_onnx", "onnxruntime_runner"],
    "parity": ["ParityReport", "Runner", "check_parity", "parity_samples", "torch_runner"],
    "tensorrt": ["EngineProfile", "build_engine"],
}
_MODULE_OF = {name: f"cloudlulc.export.{module}" for module, names in _HOMES.items() for name in names}

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


def __getattr__(name: str) -> object:
    """Import the module defining ``name`` on first use."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
