"""INT8 ONNX exports for CPU mapping: static quantisation of the convolutions, gated per cloud bin.

Dynamic INT8 (ConvInteger, activations quantised at run time) ran slower than FP32 on AVX2 cores.
Static quantisation fixes each activation's scale from calibration samples and leaves QDQ pairs
around the convolutions, which ONNX Runtime fuses into QLinearConv. Only the convolutions are
quantised: GELU, resizing, the transformer's attention and the softmax stay in FP32.

The gate compares the INT8 model with the FP32 export it came from on a split with labels, per cloud
bin: argmax agreement and the mIoU drop against the labels. An INT8 file appears only when every bin
with samples passes (docs/serving.md, "INT8 for CPU mapping").
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cloudlulc import schema
from cloudlulc.errors import DataError, ExportError
from cloudlulc.export.onnx import INPUT_NAMES, onnxruntime_runner
from cloudlulc.export.options import Int8Options
from cloudlulc.export.parity import Runner, parity_samples
from cloudlulc.io.storage import atomic_local_path
from cloudlulc.training.evaluation import cloud_covers, evaluation_dataset
from cloudlulc.training.metrics import MetricAccumulator, scores

DEFAULTS = Int8Options()


@dataclass(frozen=True)
class BinFigures:
    """One cloud bin (or all samples): how many, how often INT8 keeps the class, mIoU of each model."""

    samples: int
    pixels: int
    agreement: float
    miou_fp32: float
    miou_int8: float

    @property
    def miou_drop(self) -> float:
        """FP32 mIoU minus INT8 mIoU (negative when INT8 scores higher)."""
        return self.miou_fp32 - self.miou_int8


@dataclass(frozen=True)
class QuantizationReport:
    """The gate's figures overall and per cloud bin, and its limits."""

    overall: BinFigures
    bins: dict[str, BinFigures]
    min_agreement: float
    max_miou_drop: float
    calibration_samples: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every bin with samples within both limits."""
        return not self.failures

    def summary(self) -> str:
        """One line: the worst bin's figures, or what failed."""
        worst_agreement = min(figures.agreement for figures in self.bins.values())
        worst_drop = max(figures.miou_drop for figures in self.bins.values())
        figures = (
            f"lowest agreement {worst_agreement:.2%} (limit {self.min_agreement:.0%}), largest mIoU drop "
            f"{worst_drop:+.4f} (limit {self.max_miou_drop}) over {len(self.bins)} cloud bins, "
            f"{self.overall.samples} samples"
        )
        return figures if self.passed else f"{'; '.join(self.failures)} ({figures})"

    def to_json(self) -> str:
        """The report with its verdict, for the file beside the INT8 export."""
        document = {**asdict(self), "passed": self.passed}
        return json.dumps(document, indent=2) + "\n"


def quantize_onnx(
    onnx_path: str | Path,
    out_path: str | Path,
    dataset: str,
    *,
    calibration_count: int = DEFAULTS.calibration_count,
    min_agreement: float = DEFAULTS.min_agreement,
    max_miou_drop: float = DEFAULTS.max_miou_drop,
) -> QuantizationReport:
    """Write an INT8 twin of ``onnx_path`` at ``out_path`` when it passes the gate on ``dataset``'s test split.

    Calibration uses up to ``calibration_count`` samples of the train split. The INT8 file and its
    ``.json`` sidecar (gate figures, source export) appear only when the gate passes.

    Raises:
        ExportError: the gate fails (the message names the bins and figures) or quantisation fails.
        DataError: ``onnx_path`` is not a loadable ONNX model, or a split holds no samples.
    """
    fp32 = onnxruntime_runner(onnx_path, threads=1)  # an unloadable file is a DataError naming it, before any work
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_local_path(out) as temp_path:
        quantize_graph(Path(onnx_path), temp_path, parity_samples(dataset, calibration_count, split="train"))
        report = gate_report(
            fp32,
            onnxruntime_runner(temp_path, threads=1),
            dataset,
            min_agreement=min_agreement,
            max_miou_drop=max_miou_drop,
            calibration_samples=calibration_count,
        )
        if not report.passed:
            raise ExportError(f"{out}: INT8 export refused: {report.summary()}")
    sidecar = {"source": str(onnx_path), "quantization": json.loads(report.to_json())}
    with atomic_local_path(out.with_suffix(out.suffix + ".json")) as temp_path:
        temp_path.write_text(json.dumps(sidecar, indent=2) + "\n")
    return report


def quantize_graph(source: Path, target: Path, calibration: Iterator[tuple[np.ndarray, np.ndarray]]) -> None:
    """Static QDQ quantisation of the convolutions (unsigned activations, signed per-channel weights), ungated."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            pair = next(calibration, None)
            return None if pair is None else dict(zip(INPUT_NAMES, pair, strict=True))

    with tempfile.TemporaryDirectory(prefix="cloudlulc-int8-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["Conv"],
            )
        except Exception as error:  # the quantiser raises many types; all mean "this graph does not quantise"
            raise ExportError(f"{source}: INT8 quantisation failed: {str(error).splitlines()[0][:200]}") from error


def gate_report(
    fp32: Runner,
    int8: Runner,
    dataset: str,
    *,
    min_agreement: float = DEFAULTS.min_agreement,
    max_miou_drop: float = DEFAULTS.max_miou_drop,
    calibration_samples: int = 0,
) -> QuantizationReport:
    """Both models over the test split: argmax agreement and mIoU against the labels, overall and per cloud bin."""
    samples = evaluation_dataset(dataset, "test")
    if len(samples) == 0:
        raise DataError(dataset, "split 'test' holds no samples for the INT8 gate")
    covers = cloud_covers(samples)
    matrices = {"fp32": MetricAccumulator(), "int8": MetricAccumulator(), "agreement": MetricAccumulator()}
    counts: Counter[str] = Counter()
    for index in range(len(samples)):
        item = samples[index]
        optical, sar = item["optical"][None].numpy(), item["sar"][None].numpy()
        cover = [covers.by_name[item["name"]]]
        counts[schema.cloud_bin_label(cover[0])] += 1
        reference = torch.from_numpy(fp32(optical, sar).argmax(axis=1))
        candidate = torch.from_numpy(int8(optical, sar).argmax(axis=1))
        matrices["fp32"].update(reference, item["label"][None], cover)
        matrices["int8"].update(candidate, item["label"][None], cover)
        matrices["agreement"].update(candidate, reference, cover)  # int8's classes against fp32's
    bins = {label: _figures(matrices, label, count) for label, count in counts.items()}
    failures = [
        f"cloud bin {label}: agreement {b.agreement:.2%} < {min_agreement:.0%}"
        for label, b in bins.items()
        if b.agreement < min_agreement
    ] + [
        f"cloud bin {label}: mIoU drop {b.miou_drop:+.4f} > {max_miou_drop}"
        for label, b in bins.items()
        if b.miou_drop > max_miou_drop
    ]
    overall = _figures(matrices, None, len(samples))
    return QuantizationReport(overall, bins, min_agreement, max_miou_drop, calibration_samples, failures)


def _figures(matrices: dict[str, MetricAccumulator], label: str | None, samples: int) -> BinFigures:
    """One bin's figures (``label`` None: all samples) from the three confusion matrices."""
    fp32, int8, agreement = (
        accumulator.overall if label is None else accumulator.by_bin[label]
        for accumulator in (matrices["fp32"], matrices["int8"], matrices["agreement"])
    )
    pixels = int(agreement.sum())
    return BinFigures(
        samples=samples,
        pixels=pixels,
        agreement=float(np.trace(agreement) / pixels) if pixels else 0.0,
        miou_fp32=_miou(fp32),
        miou_int8=_miou(int8),
    )


def _miou(matrix: np.ndarray) -> float:
    """The mean IoU of a confusion matrix; 0 where no labelled pixel makes it defined."""
    value = scores(matrix).miou
    return 0.0 if math.isnan(value) else value
