"""The benchmark table: CloudLULC-Net versus every baseline and its ablations, over seeds, paired.

A synthetic CloudLULC-Set per world (fixed seed; 2,000 train / 100 val / 300 test patches) is
generated once; every model trains with the same epochs, batch, crop, learning-rate schedule and
data for each seed, then is scored on the test split: OA, macro F1, mIoU overall and per cloud-cover
bin, and the calibrated ECE. A row is the mean of its seeds with their standard deviation. Against
CloudLULC-Net each row is paired by seed: the mean difference is called a difference only when it
exceeds twice the standard deviation of the paired differences (otherwise "~", within noise).

Besides the default world, robustness worlds vary the generator's physics (``VARIANTS``) with the
same protocol for a few rows. CloudLULC-Net rows also report ORM/SHOI/CHOI/USMT diagnostics and,
for the modality-dropout row, mIoU when fed Sentinel-2 only or Sentinel-1 only.

Runs resume: each finished (world, model, seed) appends one line to ``--results``, and a rerun skips
the lines already there. Jobs run in ``--parallel`` processes; none starts after ``--deadline``.

Usage:
  python benchmarks/bench_table.py [--patch 128] [--size tiny] [--epochs 8] [--seeds 0 1 2]
      [--variants default] [--parallel 1] [--device cpu] [--out outputs/benchmarks/table]
  python benchmarks/bench_table.py --report RESULTS.jsonl      # tables from finished runs only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

BINS = ("0-10%", "10-30%", "30-60%", "60-90%", "90-100%")
REFERENCE = "CloudLULC-Net"
ALL = [
    "architecture=cloudlulc_net",
    "model_overrides.use_shoi=true",
    "model_overrides.use_choi=true",
    "model_overrides.use_usmt=true",
    "loss.anchor=0.1",
]
"""CloudLULC-Net with every published module and the anchor term on (the default keeps ORM and detail only)."""
MODELS: dict[str, list[str]] = {
    "CloudLULC-Net": ["architecture=cloudlulc_net"],
    "CloudLULC-Net, all modules": ALL,
    "optical-only": ["architecture=optical_only"],
    "SAR-only": ["architecture=sar_only"],
    "early fusion": ["architecture=early_fusion"],
    "dual-stream": ["architecture=dual_stream"],
    "reconstruction-first": ["architecture=reconstruction_first"],
    "all modules w/o ORM": [*ALL, "model_overrides.use_orm=false"],
    "all modules w/o SHOI": [*ALL, "model_overrides.use_shoi=false"],
    "all modules w/o CHOI": [*ALL, "model_overrides.use_choi=false"],
    "all modules w/o USMT": [*ALL, "model_overrides.use_usmt=false"],
    "all modules w/o anchors": [*ALL, "loss.anchor=0"],
    "all modules w/o detail": [*ALL, "model_overrides.detail=false"],
    "dual-stream w/o detail": ["architecture=dual_stream", "model_overrides.detail=false"],
    "all modules + modality dropout": [*ALL, "modality_dropout=0.2"],
    "CloudLULC-Net + modality dropout": ["architecture=cloudlulc_net", "modality_dropout=0.2"],
}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "thick clouds": {"cloud_thickness": 2.5},
    "thin clouds": {"cloud_thickness": 0.5, "thin_cloud_chance": 0.8},
    "far shadows": {"shadow_offset": 2.5},
    "SAR confusable": {"sar_separability": 0.3},
    "SAR separable": {"sar_separability": 2.0},
    "few barren": {"parcel_weights": (0.6, 0.38, 0.02)},
    "long gap": {"change_rate": 0.25},
}
ROBUSTNESS_MODELS = ("CloudLULC-Net", "dual-stream", "optical-only", "SAR-only")
DIAGNOSED = (
    "CloudLULC-Net",
    "CloudLULC-Net, all modules",
    "all modules + modality dropout",
    "CloudLULC-Net + modality dropout",
)


def _job_key(variant: str, model: str, seed: int) -> str:
    return f"{variant}|{model}|{seed}"


def dataset_path(out: Path, variant: str, patch: int) -> Path:
    return out / f"CloudLULC-Set-{patch}-{variant.replace(' ', '_')}"


def make_dataset(out: Path, variant: str, patch: int, workers: int, samples: int = 2400) -> Path:
    """The world's set: ``samples`` patches split 2000 : 100 : 300 (at the default 2400)."""
    from cloudlulc.data.synthetic import SynthConfig, generate_dataset
    from cloudlulc.data.synthetic_scene import Physics

    path = dataset_path(out, variant, patch)
    generate_dataset(
        str(path),
        SynthConfig(
            n=samples,
            size=patch,
            seed=42,
            train_fraction=2000 / 2400,
            val_fraction=100 / 2400,
            physics=Physics(**VARIANTS[variant]),
        ),
        workers=workers,
        progress=False,
    )
    return path


def _scores(result: dict[str, Any]) -> dict[str, float | None]:
    overall, bins = result["overall"], result["bins"]
    values: dict[str, float | None] = {"OA": overall.overall_accuracy, "F1": overall.macro_f1, "mIoU": overall.miou}
    for label in BINS:
        values[f"mIoU {label}"] = bins[label].miou if label in bins else None
    values["ECE"] = result["calibration"]["overall"].ece()
    return values


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train and score one (world, model, seed); runs in a worker process."""
    import torch

    from cloudlulc.data.dataset import CloudLULCDataset
    from cloudlulc.training.config import load_train_config
    from cloudlulc.training.diagnostics import module_diagnostics
    from cloudlulc.training.evaluation import evaluate_model, evaluation_dataset
    from cloudlulc.training.trainer import train

    torch.set_num_threads(job["threads"])
    run_dir = (
        Path(job["out"])
        / "runs"
        / job["variant"].replace(" ", "_")
        / job["model"].replace(" ", "_").replace("/", "")
        / f"seed{job['seed']}"
    )
    config = load_train_config(
        None,
        [
            f"dataset={job['dataset']}",
            f"output_dir={run_dir}",
            f"size={job['size']}",
            f"epochs={job['epochs']}",
            f"batch_size={job['batch']}",
            f"crop_size={job['patch']}",
            "learning_rate=0.002",
            "warmup_steps=50",
            f"seed={job['seed']}",
            f"device={job['device']}",
            "num_workers=0",
            "in_memory=true",
            *MODELS[job["model"]],
        ],
    )
    start = time.perf_counter()
    trained = train(config, progress=False)
    seconds = time.perf_counter() - start
    device = torch.device(job["device"])
    test_set = evaluation_dataset(job["dataset"], "test", in_memory=True)
    steps = job["epochs"] * math.ceil(trained.history[-1]["train_samples"] / job["batch"])
    record: dict[str, Any] = {
        "key": _job_key(job["variant"], job["model"], job["seed"]),
        "variant": job["variant"],
        "model": job["model"],
        "seed": job["seed"],
        "train_seconds": round(seconds, 1),
        "steps": steps,
    }
    with torch.no_grad():
        record["scores"] = _scores(evaluate_model(trained.model, test_set, batch_size=32, device=device))
        if job["model"] in DIAGNOSED and job["variant"] == "default":
            for feed in ("optical", "sar"):
                record[f"scores {feed} only"] = _scores(
                    evaluate_model(trained.model, test_set, batch_size=32, device=device, modalities=feed)
                )
            masked = CloudLULCDataset(job["dataset"], "test", return_cloud_mask=True, size_multiple=32, in_memory=True)
            record["diagnostics"] = module_diagnostics(trained.model, masked, batch_size=32, device=device)
    return record


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    mean, sd = _mean_sd(values)
    return f"{100 * mean:.1f}" + (f" ± {100 * sd:.1f}" if not math.isnan(sd) else "")


def paired(reference: dict[int, float], other: dict[int, float]) -> str:
    """Mean of (other - reference) over shared seeds, its spread, and whether it beats twice the spread."""
    seeds = sorted(set(reference) & set(other))
    if len(seeds) < 2:
        return "-"
    differences = [other[s] - reference[s] for s in seeds]
    mean, sd = _mean_sd(differences)
    verdict = "~" if abs(mean) <= 2 * sd else ("better" if mean > 0 else "worse")
    return f"{100 * mean:+.1f} ± {100 * sd:.1f} ({verdict})"


def table(results: list[dict[str, Any]], variant: str, score_key: str = "scores", reference: str = REFERENCE) -> str:
    by_model: dict[str, dict[int, dict[str, float | None]]] = defaultdict(dict)
    for result in results:
        if result["variant"] == variant and score_key in result:
            by_model[result["model"]][result["seed"]] = result[score_key]
    columns = ["mIoU", *[f"mIoU {b}" for b in BINS], "OA", "ECE"]
    lines = [
        "| model | seeds | " + " | ".join(columns) + f" | mIoU vs {reference} | 60-100 % vs {reference} |",
        "| --- | --- |" + " --- |" * (len(columns) + 2),
    ]
    paired_with = by_model.get(reference, {})

    def per_seed(runs: dict[int, dict[str, float | None]], key: str) -> dict[int, float]:
        return {seed: float(v[key]) for seed, v in runs.items() if v.get(key) is not None}  # type: ignore[arg-type]

    def cloudy(runs: dict[int, dict[str, float | None]]) -> dict[int, float]:
        both = [per_seed(runs, f"mIoU {b}") for b in ("60-90%", "90-100%")]
        return {seed: (both[0][seed] + both[1][seed]) / 2 for seed in both[0] if seed in both[1]}

    for model in [m for m in MODELS if m in by_model]:
        runs = by_model[model]
        cells = [_cell(list(per_seed(runs, c).values())) for c in columns]
        versus = (
            "" if model == reference else paired(per_seed(paired_with, "mIoU"), per_seed(runs, "mIoU")),
            "" if model == reference else paired(cloudy(paired_with), cloudy(runs)),
        )
        lines.append(f"| {model} | {len(runs)} | " + " | ".join(cells) + f" | {versus[0]} | {versus[1]} |")
    return "\n".join(lines)


def diagnostics_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | seed | ORM IoU(low, opaque) input / s1 / s2 / s3 / s4 | mean reliability clear / thin / opaque / "
        "shadow (input) | SHOI norm ratio s1-s4 | CHOI gate spread between images s1-s4 | USMT semantic OA |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        found = result.get("diagnostics")
        if not found:
            continue
        orm = found["orm"]
        iou = " / ".join(
            f"{v['iou_low_with_opaque']:.2f}" if v["iou_low_with_opaque"] is not None else "-" for v in orm.values()
        )
        first = next(iter(orm.values()), {})
        means = " / ".join(
            f"{first.get(f'mean_{c}') or float('nan'):.2f}" for c in ("clear", "thin", "opaque", "shadow")
        )
        shoi = " / ".join(f"{v['norm_ratio_to_mix']:.2f}" for v in found["shoi"].values())
        choi = " / ".join(f"{v['gate_spread_between_images']:.3f}" for v in found["choi"].values())
        usmt = f"{100 * found['usmt']['semantic_oa']:.1f}" if found["usmt"] else "-"
        lines.append(f"| {result['model']} | {result['seed']} | {iou} | {means} | {shoi} | {choi} | {usmt} |")
    return "\n".join(lines)


def report(results: list[dict[str, Any]], reference: str = REFERENCE) -> str:
    parts = []
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in results)]
    for variant in variants:
        parts += [
            f"### World: {variant} {VARIANTS[variant] or ''}".rstrip(),
            "",
            table(results, variant, reference=reference),
            "",
        ]
    for feed in ("optical", "sar"):
        key = f"scores {feed} only"
        if any(key in r for r in results):
            parts += [
                f"### Fed {'Sentinel-2' if feed == 'optical' else 'Sentinel-1'} only (default world)",
                "",
                table(results, "default", key, reference),
                "",
            ]
    if any("diagnostics" in r for r in results):
        parts += ["### Module diagnostics (default world, test split)", "", diagnostics_table(results), ""]
    minutes = [r["train_seconds"] / 60 for r in results]
    if minutes:
        parts.append(
            f"{len(results)} runs; training {min(minutes):.1f}-{max(minutes):.1f} min each, "
            f"{results[0]['steps']} steps of the same batches for every model."
        )
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--samples", type=int, default=2400, help="patches per world (2000/100/300 at 2400)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="*", default=None, help="rows to run (default: all)")
    parser.add_argument("--variants", nargs="*", default=["default"], help=f"worlds: {', '.join(VARIANTS)}")
    parser.add_argument("--robustness-models", nargs="*", default=list(ROBUSTNESS_MODELS))
    parser.add_argument("--parallel", type=int, default=1, help="training processes at once")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: cores / parallel)")
    parser.add_argument("--deadline", type=float, default=None, help="seconds after which no job starts")
    parser.add_argument("--out", type=Path, default=Path("outputs/benchmarks/table"))
    parser.add_argument("--results", type=Path, default=None, help="JSON lines of finished runs (default: OUT)")
    parser.add_argument("--report", type=Path, default=None, help="only print the tables of a results file")
    parser.add_argument("--reference", default=REFERENCE, help="the row every other row is paired with")
    args = parser.parse_args()
    if args.report:
        print(report(read_results(args.report), args.reference))
        return
    started = time.perf_counter()
    results_path = args.results or args.out / "results.jsonl"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    done = {r["key"] for r in read_results(results_path)}
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    jobs = []
    for variant in args.variants:
        dataset = make_dataset(args.out, variant, args.patch, os.cpu_count() or 1, args.samples)
        models = args.models or list(MODELS)
        if variant != "default":
            models = [m for m in models if m in args.robustness_models]
        for seed in args.seeds:  # seed-major: a deadline leaves whole seeds, which pairing needs
            for model in models:
                if _job_key(variant, model, seed) not in done:
                    jobs.append(
                        {
                            "variant": variant,
                            "model": model,
                            "seed": seed,
                            "dataset": str(dataset),
                            "out": str(args.out),
                            "size": args.size,
                            "epochs": args.epochs,
                            "batch": args.batch,
                            "patch": args.patch,
                            "device": args.device,
                            "threads": threads,
                        }
                    )
    print(f"{len(jobs)} runs to do, {len(done)} already done; {args.parallel} at once", flush=True)
    with ProcessPoolExecutor(args.parallel, mp_context=get_context("spawn")) as pool:
        pending = {}
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < args.parallel:
                if args.deadline is not None and time.perf_counter() - started > args.deadline:
                    print(f"deadline: {len(queue)} runs not started", flush=True)
                    queue.clear()
                    break
                job = queue.pop(0)
                pending[pool.submit(run_job, job)] = job
            if not pending:
                break
            future = next(as_completed(pending))
            job = pending.pop(future)
            try:
                record = future.result()
            except Exception as error:  # one failed run is reported, the others go on
                print(f"FAILED {_job_key(job['variant'], job['model'], job['seed'])}: {error!r}", flush=True)
                continue
            with results_path.open("a") as stream:
                stream.write(json.dumps(record) + "\n")
            print(
                f"{record['key']}: mIoU {record['scores']['mIoU']:.3f} in {record['train_seconds']} s "
                f"({time.perf_counter() - started:.0f} s elapsed)",
                flush=True,
            )
    text = report(read_results(results_path), args.reference)
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
