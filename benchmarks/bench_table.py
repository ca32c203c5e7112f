"""The benchmark table: CloudLULC-Net versus every baseline and its ablations, one protocol, one budget.

A synthetic CloudLULC-Set (fixed seed; 2,000 train / 100 val / 300 test patches) is generated once;
every model trains with the same epochs, batch, crop, learning-rate schedule and seed, then is scored
on the test split: OA, macro F1, mIoU overall and mIoU per cloud-cover bin, plus the drop from the
clearest (0-10 %) to the cloudiest (90-100 %) bin. Runs resume: a finished model is only re-scored.

Usage: python benchmarks/bench_table.py [--patch 128] [--size tiny] [--epochs 8] [--out outputs/benchmarks/table]
(the defaults are the reduced CPU setting; on a GPU use --patch 512 --size base --device cuda).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import save

from cloudlulc.data.synthetic import SynthConfig, generate_dataset
from cloudlulc.training.config import load_train_config
from cloudlulc.training.evaluation import evaluate_model, evaluation_dataset
from cloudlulc.training.trainer import train

BINS = ("0-10%", "10-30%", "30-60%", "60-90%", "90-100%")
MODELS: dict[str, list[str]] = {
    "CloudLULC-Net": ["architecture=cloudlulc_net"],
    "optical-only": ["architecture=optical_only"],
    "SAR-only": ["architecture=sar_only"],
    "early fusion": ["architecture=early_fusion"],
    "dual-stream": ["architecture=dual_stream"],
    "reconstruction-first": ["architecture=reconstruction_first"],
    "CloudLULC-Net w/o ORM": ["architecture=cloudlulc_net", "model_overrides.use_orm=false"],
    "CloudLULC-Net w/o SHOI": ["architecture=cloudlulc_net", "model_overrides.use_shoi=false"],
    "CloudLULC-Net w/o CHOI": ["architecture=cloudlulc_net", "model_overrides.use_choi=false"],
    "CloudLULC-Net w/o USMT": ["architecture=cloudlulc_net", "model_overrides.use_usmt=false"],
    "CloudLULC-Net w/o anchors": ["architecture=cloudlulc_net", "loss.anchor=0"],
}


def row(result: dict[str, object], seconds: float) -> dict[str, float | None]:
    overall = result["overall"]
    bins = result["bins"]
    values: dict[str, float | None] = {
        "OA": overall.overall_accuracy, "F1": overall.macro_f1, "mIoU": overall.miou,  # type: ignore[attr-defined]
    }  # fmt: skip
    for label in BINS:
        values[f"mIoU {label}"] = bins[label].miou if label in bins else None  # type: ignore[operator,index]
    clear, cloudy = values["mIoU 0-10%"], values["mIoU 90-100%"]
    values["drop clear->cloudy"] = clear - cloudy if clear is not None and cloudy is not None else None
    values["train_minutes"] = round(seconds / 60, 1)
    return values


def markdown(rows: dict[str, dict[str, float | None]]) -> str:
    columns = ["OA", "F1", "mIoU", *[f"mIoU {b}" for b in BINS], "drop clear->cloudy"]
    lines = ["| model | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for name, values in rows.items():
        cells = [f"{100 * values[c]:.1f}" if values[c] is not None else "-" for c in columns]  # type: ignore[operator]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/table"))
    parser.add_argument("--only", nargs="*", default=None, help="model names to run (default: all)")
    args = parser.parse_args()
    dataset = args.out / f"CloudLULC-Set-{args.patch}"
    generate_dataset(str(dataset), SynthConfig(n=2400, size=args.patch, seed=42, train_fraction=2000 / 2400,
                                               val_fraction=100 / 2400), workers=args.workers)  # fmt: skip
    test_set = evaluation_dataset(str(dataset), "test")
    rows: dict[str, dict[str, float | None]] = {}
    for name, overrides in MODELS.items():
        if args.only and name not in args.only:
            continue
        run_dir = args.out / "runs" / name.replace(" ", "_").replace("/", "")
        config = load_train_config(None, [
            f"dataset={dataset}", f"output_dir={run_dir}", f"size={args.size}", f"epochs={args.epochs}",
            f"batch_size={args.batch}", f"crop_size={args.patch}", "learning_rate=0.002", "warmup_steps=50",
            "seed=0", f"device={args.device}", f"num_workers={args.workers}", *overrides,
        ])  # fmt: skip
        start = time.perf_counter()
        result = train(config, progress=False)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            rows[name] = row(evaluate_model(result.model, test_set, batch_size=16), seconds)
        print(f"{name}: {json.dumps({k: v for k, v in rows[name].items()})}", flush=True)
    table = markdown(rows)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    save("table", {
        "command": f"python benchmarks/bench_table.py --patch {args.patch} --size {args.size} --epochs {args.epochs} "
                   f"--batch {args.batch} --device {args.device}",
        "train_patches": 2000, "test_patches": 300, "rows": rows,
    })  # fmt: skip


if __name__ == "__main__":
    main()
