"""ONNX export of a trained network under the serving contract, refused unless it matches PyTorch.

The contract (ARCHITECTURE.md): inputs ``optical`` [B,12,H,W] and ``sar`` [B,2,H,W], output ``probs``
[B,6,H,W], batch and spatial size dynamic (H and W multiples of 32). torch's exporter built on
``torch.export`` is used: it keeps the transformer's sequence length symbolic, which the older
tracing exporter baked in.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cloudlulc import schema
from cloudlulc.errors import DataError, ExportError
from cloudlulc.export.parity import ParityReport, Runner, check_parity, parity_samples, torch_runner
from cloudlulc.io.filekind import describe_file
from cloudlulc.io.storage import atomic_local_path
from cloudlulc.models.networks import OPTICAL_CHANNELS, SAR_CHANNELS, SIZE_MULTIPLE, SegmentationNetwork

INPUT_NAMES = ("optical", "sar")
OUTPUT_NAME = "probs"
OPSET = 20
"""Opset 20 has ONNX's own ``Gelu``: ONNX Runtime runs it as one kernel, where opset 18 spelled GELU as
Div, Erf, Add and two Mul (a 512 x 512 tile took 0.082 s of CPU instead of 0.099 s; TensorRT 10 parses opset
9 to 20). Figures: docs/benchmarks.md, "Where mapping time goes"."""
MAX_SIDE = 8192
"""Largest tile side the exported graph accepts (a shape bound the exporter needs)."""
GRAPH_OPTIMIZATION = ("basic", "extended", "all")
"""ONNX Runtime's graph optimisation levels by name (``onnxruntime.GraphOptimizationLevel.ORT_ENABLE_<NAME>``)."""


class ServingModel(nn.Module):
    """The network with the serving contract's output: calibrated class probabilities, not logits."""

    def __init__(self, network: SegmentationNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """Probabilities [B,6,H,W]: ``network.probabilities``, with the softmax spelled out.

        ONNX Runtime's Softmax over axis 1 of NCHW transposes to rows of 6 and back: 20 ms of a 120 ms
        512 x 512 tile on one core. Max, exp, sum and divide as separate ops save 16 ms of it, with
        probabilities within 3e-8 (docs/benchmarks.md, "Where mapping time goes").
        """
        logits = self.network(optical, sar) / self.network.temperature
        exponentials = torch.exp(logits - logits.amax(dim=1, keepdim=True))
        return exponentials / exponentials.sum(dim=1, keepdim=True)


def threads_per_call(concurrent_calls: int) -> int:
    """Intra-op threads for each of ``concurrent_calls`` sessions running at once: the cores shared out.

    On 2 cores, 2 calls of 1 thread each took 28 % less CPU per tile than 2 calls of ONNX Runtime's
    own choice (2 threads each, 4 on 2 cores) and beat 1 call of 2 threads (docs/benchmarks.md).
    """
    return max(1, len(os.sched_getaffinity(0)) // max(1, concurrent_calls))


def onnxruntime_runner(
    path: str | Path, threads: int = 0, *, spinning: bool = False, optimization: str = "all", arena: bool = True
) -> Runner:
    """An ONNX Runtime CPU session as a runner (``threads`` 0 lets ONNX Runtime choose).

    ``spinning`` lets idle intra-op threads busy-wait for work: off by default, since mapping runs
    calls side by side with its own reading. On a 2-core machine, ONNX Runtime's own choice (2
    spinning threads per call) took 38 % more CPU per tile than 1 thread without spinning, and with 1
    thread per call spinning alone still cost 2 % more. ``optimization`` is the graph optimisation
    level (``basic``, ``extended``, ``all``; ``basic`` measured no faster); ``arena`` keeps ONNX
    Runtime's memory arena (without it a tile took 1.8 x the CPU). Figures: docs/benchmarks.md,
    "Where mapping time goes".
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if optimization not in GRAPH_OPTIMIZATION:
        raise ValueError(f"optimization must be one of {GRAPH_OPTIMIZATION}, got {optimization!r}")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{optimization.upper()}")
    options.enable_cpu_mem_arena = arena
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime raises its own Fail / InvalidProtobuf / NoSuchFile types
        kind = describe_file(path)
        what = f"is {kind}, not an ONNX model" if kind and kind != "an ONNX model" else "is not a loadable ONNX model"
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise DataError(str(path), f"{what} ({reason})") from None

    def run(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {"optical": optical, "sar": sar})[0]

    return run


RANGE_CONSTRAINTS = "pkg.torch.export.ExportedProgram.range_constraints"


def write_onnx_graph(network: SegmentationNetwork, path: Path) -> None:
    """Export without the parity check (``export_onnx`` adds it); for benchmarks and tools that check later."""
    serving = ServingModel(network.eval().cpu())
    side = 2 * SIZE_MULTIPLE
    example = (torch.zeros(2, OPTICAL_CHANNELS, side, side), torch.zeros(2, SAR_CHANNELS, side, side))
    batch = torch.export.Dim("batch", min=1, max=1024)
    rows = torch.export.Dim("rows", min=1, max=MAX_SIDE // SIZE_MULTIPLE)
    cols = torch.export.Dim("cols", min=1, max=MAX_SIDE // SIZE_MULTIPLE)
    spatial = {0: batch, 2: SIZE_MULTIPLE * rows, 3: SIZE_MULTIPLE * cols}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's concern
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                serving,
                example,
                None,
                dynamo=True,
                opset_version=OPSET,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"optical": spatial, "sar": spatial},
                verbose=False,
            )
        except Exception as error:  # the exporter raises many types; all mean "this graph does not export"
            raise ExportError(f"ONNX export of {type(network).__name__} failed: {error}") from error
    if program is None:
        raise ExportError("the ONNX exporter returned no program")
    # torch writes the program's shape ranges as text in an order that varies from run to run (measured:
    # a rerun after a killed export differed in those bytes alone); they are informational, so an export
    # of the same weights is byte-identical without them.
    program.model.graph.metadata_props.pop(RANGE_CONSTRAINTS, None)
    program.save(str(path), external_data=False)


def export_onnx(
    network: SegmentationNetwork,
    out_path: str | Path,
    parity_dataset: str,
    *,
    parity_count: int = 8,
    max_abs_diff: float = 1e-4,
    min_agreement: float = 0.999,
    metadata: dict[str, object] | None = None,
) -> ParityReport:
    """Export ``network`` to ``out_path`` and check it on samples of ``parity_dataset``; refuse on failure.

    The ONNX file and its ``.json`` sidecar (network config, parity figures, ``metadata``) appear
    only when the check passes; a failed export leaves no file behind.
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_local_path(out) as temp_path:
        write_onnx_graph(network, temp_path)
        report = check_parity(
            torch_runner(network),
            onnxruntime_runner(temp_path),
            parity_samples(parity_dataset, parity_count),
            max_abs_diff=max_abs_diff,
            min_agreement=min_agreement,
        )
        if not report.passed:
            raise ExportError(f"{out}: ONNX export refused, parity check failed: {report.summary()}")
    sidecar = {
        "contract": {
            "inputs": {"optical": [-1, OPTICAL_CHANNELS, -1, -1], "sar": [-1, SAR_CHANNELS, -1, -1]},
            "output": {OUTPUT_NAME: [-1, len(schema.CLASSES), -1, -1]},
            "size_multiple": SIZE_MULTIPLE,
        },
        "network": network.config.model_dump(mode="json") if hasattr(network, "config") else None,
        "parity": json.loads(report.to_json()),
        **(metadata or {}),
    }
    with atomic_local_path(out.with_suffix(out.suffix + ".json")) as temp_path:
        temp_path.write_text(json.dumps(sidecar, indent=2) + "\n")
    return report
