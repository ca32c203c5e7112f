"""ONNX parity on the whole test split: max abs probability difference and argmax agreement.

Targets (issue): max |dp| <= 1e-4 and argmax agreement >= 99.9 %. Uses a trained CloudLULC-Net
checkpoint (by default the benchmark table's) and the table's synthetic set; any checkpoint and any
CloudLULC-Set can be given.

Usage: python benchmarks/bench_export.py [--checkpoint CKPT] [--dataset SET] [--samples 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import RESULTS, save

from cloudlulc.export import check_parity, export_onnx, onnxruntime_runner, parity_samples, torch_runner
from cloudlulc.training.evaluation import load_trained_model

TABLE = RESULTS / "table"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(TABLE / "runs" / "CloudLULC-Net" / "checkpoints" / "epoch_0008.pt"))
    parser.add_argument("--dataset", default=str(TABLE / "CloudLULC-Set-128"))
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    if not Path(args.checkpoint).exists():
        raise SystemExit(f"{args.checkpoint} not found: run benchmarks/bench_table.py first or pass --checkpoint")
    network = load_trained_model(args.checkpoint)
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "model.onnx"
        started = time.perf_counter()
        export_onnx(network, onnx_path, args.dataset, parity_count=2)
        export_s = time.perf_counter() - started
        report = check_parity(
            torch_runner(network), onnxruntime_runner(onnx_path), parity_samples(args.dataset, args.samples)
        )
    save(
        "export_parity",
        {
            "checkpoint": args.checkpoint,
            "samples": report.samples,
            "pixels": report.pixels,
            "max_abs_diff": report.max_abs_diff,
            "argmax_agreement": report.argmax_agreement,
            "passed": report.passed,
            "export_seconds": round(export_s, 1),
        },
    )


if __name__ == "__main__":
    main()
