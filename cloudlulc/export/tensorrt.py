"""TensorRT FP16 engine from the ONNX export, built on the GPU that will serve it, parity-checked.

An engine is only valid on the GPU architecture and TensorRT version that built it, so both are
recorded beside the plan (``<plan>.json``) and Triton's config pins the engine to such GPUs. Without
a CUDA GPU or the ``tensorrt`` package this stops with a clear ExportError before doing anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from cloudlulc.errors import ExportError
from cloudlulc.export.onnx import INPUT_NAMES, OUTPUT_NAME
from cloudlulc.export.parity import ParityReport, Runner, check_parity, parity_samples
from cloudlulc.io.storage import atomic_local_path
from cloudlulc.models.networks import OPTICAL_CHANNELS, SAR_CHANNELS

# FP16 engines round probabilities: the limits are looser than for ONNX, and reported as measured.
FP16_MAX_ABS_DIFF = 2e-2
FP16_MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class EngineProfile:
    """Batch and tile sizes the engine accepts (min, optimal, max), as regional mapping uses them."""

    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 8
    min_tile: int = 256
    opt_tile: int = 512
    max_tile: int = 512

    def shapes(self, channels: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes for a tensor with ``channels`` channels."""
        return (
            (self.min_batch, channels, self.min_tile, self.min_tile),
            (self.opt_batch, channels, self.opt_tile, self.opt_tile),
            (self.max_batch, channels, self.max_tile, self.max_tile),
        )


def _require_tensorrt() -> tuple[ModuleType, ModuleType]:
    """Tensorrt and torch (for CUDA buffers), or an ExportError saying what is missing."""
    import torch

    if not torch.cuda.is_available():
        raise ExportError(
            "TensorRT compile needs an NVIDIA GPU with CUDA, and none is visible on this machine; "
            "run `cloudlulc export tensorrt` on a GPU node (the CUDA image), or serve the ONNX "
            "export (cloudlulc_onnx) instead"
        )
    try:
        import tensorrt
    except ImportError as error:
        raise ExportError(
            f"TensorRT compile needs the `tensorrt` Python package ({error}); it is installed in "
            "the CUDA image (components/Dockerfile.cuda)"
        ) from error
    return tensorrt, torch


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    parity_dataset: str,
    *,
    profile: EngineProfile | None = None,
    parity_count: int = 8,
    reference: Runner | None = None,
) -> ParityReport:
    """Compile ``onnx_path`` into an FP16 plan at ``plan_path``; refuse it unless parity holds.

    ``reference`` defaults to ONNX Runtime on the same ONNX file (itself checked against PyTorch at export).
    """
    trt, torch = _require_tensorrt()
    profile = profile or EngineProfile()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        problems = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT cannot parse the ONNX file: {problems}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    optimization = builder.create_optimization_profile()
    for name, channels in zip(INPUT_NAMES, (OPTICAL_CHANNELS, SAR_CHANNELS), strict=True):
        optimization.set_shape(name, *profile.shapes(channels))
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    plan = Path(plan_path)
    with atomic_local_path(plan) as temp_path:
        temp_path.write_bytes(bytes(serialized))
        if reference is None:
            from cloudlulc.export.onnx import onnxruntime_runner

            reference = onnxruntime_runner(onnx_path)
        report = check_parity(
            reference,
            _engine_runner(trt, torch, temp_path),
            _tile_samples(parity_samples(parity_dataset, parity_count), profile),
            max_abs_diff=FP16_MAX_ABS_DIFF,
            min_agreement=FP16_MIN_AGREEMENT,
        )
        if not report.passed:
            raise ExportError(f"{plan}: TensorRT engine refused, parity check failed: {report.summary()}")
    capability = torch.cuda.get_device_capability()
    facts = {
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": f"{capability[0]}.{capability[1]}",
        "tensorrt": trt.__version__,
        "precision": "fp16",
        "profile": profile.__dict__,
        "parity": json.loads(report.to_json()),
    }
    with atomic_local_path(plan.with_suffix(plan.suffix + ".json")) as temp_path:
        temp_path.write_text(json.dumps(facts, indent=2) + "\n")
    return report


def _tile_samples(
    samples: Iterator[tuple[np.ndarray, np.ndarray]], profile: EngineProfile
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Parity samples padded (reflect) up to the engine's smallest tile when they are smaller."""
    for optical, sar in samples:
        pad = max(0, profile.min_tile - optical.shape[-1])
        if pad:
            widths = ((0, 0), (0, 0), (0, pad), (0, pad))
            optical, sar = np.pad(optical, widths, mode="reflect"), np.pad(sar, widths, mode="reflect")
        yield optical, sar


def _engine_runner(trt: ModuleType, torch: ModuleType, plan_path: Path) -> Runner:
    """Run a serialized engine on CUDA tensors (torch owns the device memory)."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    context = engine.create_execution_context()

    def run(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        inputs = {"optical": torch.from_numpy(optical).cuda(), "sar": torch.from_numpy(sar).cuda()}
        for name, tensor in inputs.items():
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        output = torch.empty(tuple(context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(OUTPUT_NAME, output.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"{plan_path}: TensorRT execution failed")
        stream.synchronize()
        return output.cpu().numpy()

    return run
