"""The ``cloudlulc`` command line: thin faces of library functions, one subcommand per stage.

Exit codes: 0 success; 1 validation found failures; 2 wrong usage (an output over an input too); 3 bad
input data; 4 storage or tracking unreachable or not writable, or the output held by another run (named);
5 export refused; 6 Triton unreachable or refusing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from cloudlulc import __version__, logs
from cloudlulc.errors import CloudLULCError, StorageError, UsageError
from cloudlulc.export.options import Int8Options
from cloudlulc.ingest.options import ChipOptions
from cloudlulc.io.guard import check_outputs_apart, probe_writable
from cloudlulc.io.storage import join_uri
from cloudlulc.mapping.options import MapOptions
from cloudlulc.options import build, click_option, describe
from cloudlulc.products.options import ProductOptions
from cloudlulc.tracking.options import GateConfig
from cloudlulc.validation.thresholds import SceneThresholds, Thresholds


def _fail(error: CloudLULCError) -> None:
    click.echo(f"error: {error}", err=True)
    sys.exit(error.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="cloudlulc")
@click.option(
    "--log-level",
    type=click.Choice(logs.LEVELS, case_sensitive=False),
    envvar=logs.LEVEL_ENV,
    default="info",
    show_default=True,
    show_envvar=True,
    help="Lowest level of the log lines on stderr (other libraries show warnings only).",
)
@click.option(
    "--log-format",
    type=click.Choice(logs.FORMATS, case_sensitive=False),
    envvar=logs.FORMAT_ENV,
    default="plain",
    show_default=True,
    show_envvar=True,
    help="plain lines for people, or json: one object per line (time, level, logger, message, fields).",
)
def cli(log_level: str, log_format: str) -> None:
    """CloudLULC: land use / land cover under clouds, from Sentinel-1/2 to maps.

    Progress bars show on a terminal only; elsewhere long steps log a line per epoch or per tenth of the work.
    """
    logs.configure(log_level, log_format)


@cli.command()
@click.option("--out", "out", required=True, help="Output folder or s3:// prefix of the CloudLULC-Set.")
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True, help="Number of samples.")
@click.option("--size", type=click.IntRange(min=32), default=512, show_default=True, help="Patch side in pixels.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Parallel processes.")
@click.option(
    "--l2a-offset/--no-l2a-offset",
    default=True,
    show_default=True,
    help="Write DN with the baseline >= 04.00 offset (BOA_ADD_OFFSET=-1000) or without.",
)
def synth(out: str, n: int, size: int, seed: int, workers: int, l2a_offset: bool) -> None:
    """Generate a synthetic CloudLULC-Set in the published layout."""
    from cloudlulc import schema
    from cloudlulc.data.synthetic import SynthConfig, generate_dataset

    config = SynthConfig(n=n, size=size, seed=seed, boa_add_offset=schema.S2_BASELINE_OFFSET_DN if l2a_offset else 0)
    records = generate_dataset(out, config, workers=workers)
    click.echo(f"wrote {len(records)} samples to {out}")


@cli.command()
@click.argument("dataset")
@click.option(
    "--report-dir",
    default="validation-report",
    show_default=True,
    help="Folder or s3:// prefix for report.json, report.html and quarantine.txt.",
)
@click.option(
    "--quarantine",
    is_flag=True,
    help="List failing samples in quarantine.txt and pass if only samples failed (nothing is deleted).",
)
@click_option(Thresholds, "max_nodata_fraction", "--max-nodata")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Parallel processes.")
@click.option(
    "--scenes",
    is_flag=True,
    help="Validate the scene stacks of `ingest run --mode scenes` (detected anyway when the ingest output says "
    "mode=scenes).",
)
def validate(
    dataset: str, report_dir: str, quarantine: bool, max_nodata_fraction: float, workers: int, scenes: bool
) -> None:
    """Validate a CloudLULC-Set or ingested scene stacks (folder or s3:// URI) with Great Expectations.

    Exit code 0 when clean (or only quarantined samples failed), 1 when rules failed (for scene stacks also
    a missing or empty manifest.csv: the report says "no scenes under ..."), 3 when there is no
    CloudLULC-Set to validate.
    """
    from cloudlulc.validation import validate_dataset, write_report
    from cloudlulc.validation.scene_stacks import is_scene_layout, validate_scenes

    check_outputs_apart({"--report-dir": report_dir}, datasets={"DATASET": dataset})
    probe_writable(join_uri(report_dir, "report.json"), "--report-dir")
    scenes = scenes or is_scene_layout(dataset)
    if scenes:
        if quarantine:
            raise click.UsageError("--quarantine applies to CloudLULC-Set chips, not to scene stacks")
        report = validate_scenes(dataset, SceneThresholds(max_nodata_fraction=max_nodata_fraction), workers=workers)
    else:
        report = validate_dataset(
            dataset,
            thresholds=Thresholds(max_nodata_fraction=max_nodata_fraction),
            quarantine=quarantine,
            workers=workers,
        )
    written = write_report(report, report_dir)
    for failure in report.failures[:20]:
        click.echo(f"FAIL {failure.sample}: {failure.rule} observed={failure.observed} {failure.detail}".rstrip())
    if len(report.failures) > 20:
        click.echo(f"... and {len(report.failures) - 20} more failures (see the report)")
    state = "passed" if report.success else "FAILED"
    click.echo(
        f"validation {state}: {report.sample_count} {'scene stacks' if scenes else 'samples'}, "
        f"{len(report.failures)} failure(s), {len(report.quarantined)} quarantined"
    )
    click.echo(f"report: {written['html']} and {written['json']}")
    if "quarantine" in written:
        click.echo(f"quarantine list: {written['quarantine']}")
    sys.exit(0 if report.success else 1)


@cli.command()
@click.argument("dataset")
@click.option("--out", "out_png", required=True, help="PNG path or s3:// URI.")
@click.option("--count", type=click.IntRange(1, 16), default=4, show_default=True, help="Samples to show.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
def quicklook(dataset: str, out_png: str, count: int, split: str) -> None:
    """Draw a quicklook PNG of a few samples: cloudy and clear optics, SAR, label, cloud mask."""
    from cloudlulc.quicklook import dataset_quicklook

    click.echo(f"quicklook: {dataset_quicklook(dataset, out_png, count=count, split=split)}")  # type: ignore[arg-type]


@cli.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="YAML training config.")
@click.option(
    "--track/--no-track",
    default=True,
    show_default=True,
    help="Log the run to MLflow and register the model as challenger.",
)
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="MLflow tracking URI [default: a local SQLite store under outputs/mlflow].",
)
@click.option(
    "--processes",
    default="auto",
    show_default=True,
    help="Data-parallel processes (torchrun/DDP); auto = one per GPU when there are several.",
)
@click.argument("overrides", nargs=-1)
def train(
    config_file: str | None, track: bool, tracking_uri: str | None, processes: str, overrides: tuple[str, ...]
) -> None:
    """Train or resume CloudLULC-Net or a baseline: a YAML config plus key=value OVERRIDES.

    Example: cloudlulc train dataset=data/set epochs=20 architecture=sar_only loss.anchor=0

    Several GPUs are used through torchrun; the same command also runs under
    `torchrun --nproc_per_node N -m cloudlulc train ...` (batch_size is per process).
    """
    from cloudlulc.training.config import load_train_config
    from cloudlulc.training.distributed import process_count, relaunch_under_torchrun, replica_from_environment

    config = load_train_config(config_file, overrides)
    replica = replica_from_environment()
    try:
        count = process_count(processes, config.device)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--processes") from None
    if count > 1 and not replica.distributed:
        click.echo(f"training with {count} data-parallel processes (torchrun)", err=True)
        sys.exit(relaunch_under_torchrun(count, sys.argv[1:]))
    if not track or not replica.is_main:
        from cloudlulc.training.trainer import train as run_training

        result = run_training(config)
        if replica.is_main:
            click.echo(
                f"trained {config.architecture}/{config.size} for {len(result.history)} epochs; "
                f"checkpoint: {result.checkpoint}"
            )
        return
    from cloudlulc.tracking import TrackingSettings, run_train_stage

    settings = TrackingSettings(tracking_uri=tracking_uri) if tracking_uri else TrackingSettings()
    stage = run_train_stage(config, settings)
    click.echo(
        f"trained {config.architecture}/{config.size}: test mIoU {stage.test_metrics['test_miou']:.2%}, "
        f"OA {stage.test_metrics['test_oa']:.2%}"
    )
    click.echo(f"MLflow run {stage.run_id} at {settings.tracking_uri}")
    click.echo(f"registered {settings.registered_model} version {stage.version} as challenger ({stage.model_uri})")


@cli.command()
@click.option("--dataset", required=True, help="Any dataset in the CloudLULC-Set layout (folder or s3://).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="Training checkpoint to score.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--out", "out_json", default="evaluation.json", show_default=True, help="Metrics as JSON.")
@click.option(
    "--bins-out",
    "bins_json",
    help="Also write the scores per cloud-cover bin as a JSON list of records (cloud_bin, miou, oa, macro_f1, "
    "pixels), the shape plotting tools such as `dvc plots` read.",
)
@click.option(
    "--summary-out",
    "summary_json",
    help="Also write the headline scores as JSON (miou, oa, macro_f1, ece, miou_by_cloud per cover bin): the "
    "short table `dvc metrics show` prints; --out keeps every detail.",
)
@click.option(
    "--modalities",
    type=click.Choice(["both", "optical", "sar"]),
    default="both",
    show_default=True,
    help="Feed both images, Sentinel-2 only or Sentinel-1 only (the missing one as zeros, as a map without it is).",
)
@click.option(
    "--diagnose",
    is_flag=True,
    help="Also measure what ORM, SHOI, CHOI and USMT do on the split (ORM figures need CloudMask/ files).",
)
@click.option(
    "--gate",
    "gate_mode",
    is_flag=True,
    help="Compare the registered challenger with the champion on the test split; move champion if better.",
)
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="MLflow tracking URI (with --gate).")
@click_option(GateConfig, "min_miou_gain", "--min-gain")
@click_option(GateConfig, "max_bin_regression")
@click_option(GateConfig, "first_min_oa")
@click_option(GateConfig, "first_min_miou")
def evaluate(
    dataset: str,
    checkpoint: str | None,
    split: str,
    out_json: str,
    bins_json: str | None,
    summary_json: str | None,
    modalities: str,
    diagnose: bool,
    gate_mode: bool,
    tracking_uri: str | None,
    **gate: float,
) -> None:
    """Score a model with the evaluation protocol, or (--gate) decide a promotion in the registry.

    The protocol: OA, macro F1, mIoU, per-class IoU and F1, overall and per cloud-cover bin. With
    --gate the exit code is 0 whether the challenger is promoted or refused; the decision is printed
    and recorded as tags on the challenger version.
    """
    if gate_mode:
        from cloudlulc.tracking import TrackingSettings, run_gate_stage

        settings = TrackingSettings(tracking_uri=tracking_uri) if tracking_uri else TrackingSettings()
        decision = run_gate_stage(dataset, settings, build(GateConfig, {"min_miou_gain": "--min-gain"}, **gate))
        click.echo(f"{'PROMOTED' if decision.promote else 'REFUSED'}: {decision.reason}")
        return
    if checkpoint is None:
        raise click.UsageError("give --checkpoint to score a model, or --gate to compare challenger and champion")
    from cloudlulc.training.evaluation import evaluate_model, evaluation_dataset, evaluation_table, load_trained_model

    diagram_png = f"{out_json.removesuffix('.json')}_reliability.png"
    outputs = {
        "--out": out_json,
        "--bins-out": bins_json,
        "--summary-out": summary_json,
        "--out reliability diagram": diagram_png,
    }
    check_outputs_apart(outputs, files={"--checkpoint": checkpoint}, datasets={"--dataset": dataset})
    for name, uri in outputs.items():
        if uri:
            probe_writable(uri, name)
    model = load_trained_model(checkpoint)
    result = evaluate_model(model, evaluation_dataset(dataset, split), modalities=modalities)  # type: ignore[arg-type]
    extra: dict[str, Any] = {"modalities": modalities}
    diagnostics_lines = _diagnose(model, dataset, split, extra) if diagnose else ""
    _write_evaluation(result, extra, out_json, {"bins": bins_json, "summary": summary_json}, diagram_png)
    if modalities != "both":
        click.echo(f"fed {'Sentinel-2' if modalities == 'optical' else 'Sentinel-1'} only")
    click.echo(evaluation_table(result))
    if diagnostics_lines:
        click.echo("\n" + diagnostics_lines)
    click.echo(f"\nmetrics: {out_json}" + (f" (per cloud bin: {bins_json})" if bins_json else ""))
    if summary_json:
        click.echo(f"summary: {summary_json}")
    click.echo(f"reliability diagram: {diagram_png}")


def _diagnose(model: Any, dataset: str, split: str, document: dict[str, Any]) -> str:
    """Measure what CloudLULC-Net's modules do on the split into ``document``; the lines to print."""
    from cloudlulc.data.dataset import CloudLULCDataset
    from cloudlulc.data.layout import DatasetLayout
    from cloudlulc.schema import SIZE_MULTIPLE
    from cloudlulc.training.diagnostics import diagnostics_text, module_diagnostics

    masks = all(r.cloud_mask for r in DatasetLayout(dataset).read_records((split,)))  # type: ignore[arg-type]
    subject = CloudLULCDataset(dataset, split, return_cloud_mask=masks, size_multiple=SIZE_MULTIPLE)  # type: ignore[arg-type]
    diagnostics = module_diagnostics(model, subject)
    document["diagnostics"] = diagnostics
    lines = diagnostics_text(diagnostics) or "no CloudLULC-Net modules to diagnose"
    if not masks:
        lines += "\nORM figures need CloudMask/ files for every sample of the split; none were computed"
    return lines


def _write_evaluation(
    result: Any, extra: dict[str, Any], out_json: str, also: dict[str, str | None], diagram_png: str
) -> None:
    """The metrics JSON (with ``extra``), the reliability diagram and ``also`` (bins, summary) where given.

    Each file is published whole (staged, then renamed): DVC and readers never see half a document.
    """
    import json

    from cloudlulc.io.storage import staged_output
    from cloudlulc.training.calibration import reliability_figure
    from cloudlulc.training.evaluation import evaluation_bin_records, evaluation_document

    document = {**evaluation_document(result), **extra}
    written = [
        (out_json, document),
        (also.get("bins"), evaluation_bin_records(result)),
        (also.get("summary"), _evaluation_summary(document)),
    ]
    for uri, content in written:
        if uri:
            with staged_output(uri) as temp_path:
                temp_path.write_text(json.dumps(content, indent=2, default=float) + "\n")
    figure = reliability_figure(result["calibration"])
    with staged_output(diagram_png) as temp_path:
        figure.savefig(temp_path, dpi=100, format="png")


def _evaluation_summary(document: dict[str, Any]) -> dict[str, Any]:
    """The headline scores of an evaluation document: a table of a handful of columns in `dvc metrics show`.

    mIoU per cloud-cover bin only for bins that hold pixels; the full document stays the reference.
    """
    overall = document["overall"]
    return {
        "miou": overall["miou"],
        "oa": overall["overall_accuracy"],
        "macro_f1": overall["macro_f1"],
        "ece": document["calibration"]["overall"]["ece"],
        "miou_by_cloud": {label: scores["miou"] for label, scores in document["bins"].items() if scores.get("pixels")},
    }


@cli.group()
def export() -> None:
    """Export a trained model for serving: ONNX (any machine), TensorRT (GPU)."""


def _check_export_outputs(out_path: str, files: dict[str, str | None], dataset: str) -> None:
    """An export and its ``.json`` sidecar: apart from the inputs and writable, before the long export runs."""
    outputs = {"--out": out_path, "--out sidecar": f"{out_path}.json"}
    check_outputs_apart(outputs, files=files, datasets={"--dataset": dataset})
    probe_writable(out_path, "--out")


@export.command("onnx")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="Training checkpoint to export.")
@click.option("--model-uri", help="Registered model to export, e.g. models:/cloudlulc@champion.")
@click.option(
    "--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="MLflow tracking URI (with --model-uri)."
)
@click.option("--dataset", required=True, help="CloudLULC-Set whose test split supplies the parity samples.")
@click.option("--out", "out_path", default="model.onnx", show_default=True, help="ONNX file to write.")
@click.option("--samples", default=8, show_default=True, type=click.IntRange(1), help="Parity samples.")
def export_onnx_command(
    checkpoint: str | None, model_uri: str | None, tracking_uri: str | None, dataset: str, out_path: str, samples: int
) -> None:
    """Export to ONNX (dynamic batch and size); refused unless it matches PyTorch on real samples."""
    from cloudlulc.export import export_onnx

    if (checkpoint is None) == (model_uri is None):
        raise click.UsageError("give exactly one of --checkpoint or --model-uri")
    _check_export_outputs(out_path, {"--checkpoint": checkpoint}, dataset)
    if checkpoint is not None:
        from cloudlulc.training.evaluation import load_trained_model

        network = load_trained_model(checkpoint)
        source = checkpoint
    else:
        from cloudlulc.tracking import TrackingSettings
        from cloudlulc.tracking.stages import load_network

        settings = TrackingSettings(tracking_uri=tracking_uri) if tracking_uri else TrackingSettings()
        network, source = load_network(settings, model_uri or ""), model_uri or ""
    report = export_onnx(network, out_path, dataset, parity_count=samples, metadata={"source": source})
    click.echo(f"wrote {out_path} (parity: {report.summary()})")


@export.command("int8")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(exists=True, dir_okay=False), help="FP32 export.")
@click.option("--dataset", required=True, help="CloudLULC-Set: train split calibrates, test split gates.")
@click.option("--out", "out_path", default="model_int8.onnx", show_default=True, help="INT8 ONNX file to write.")
@click_option(Int8Options, "calibration_count", "--calibration")
@click_option(Int8Options, "min_agreement")
@click_option(Int8Options, "max_miou_drop")
def export_int8_command(
    onnx_path: str, dataset: str, out_path: str, calibration_count: int, min_agreement: float, max_miou_drop: float
) -> None:
    """Quantise an ONNX export's convolutions to INT8 for CPU mapping; written only where every cloud bin passes."""
    from cloudlulc.export.quantize import quantize_onnx

    _check_export_outputs(out_path, {"--onnx": onnx_path}, dataset)
    report = quantize_onnx(
        onnx_path,
        out_path,
        dataset,
        calibration_count=calibration_count,
        min_agreement=min_agreement,
        max_miou_drop=max_miou_drop,
    )
    click.echo(f"wrote {out_path} (INT8 gate: {report.summary()})")


@export.command("tensorrt")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--dataset", required=True, help="CloudLULC-Set whose test split supplies the parity samples.")
@click.option("--out", "out_path", default="model.plan", show_default=True, help="Engine file to write.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1))
@click_option(MapOptions, "tile", help="Tile side mapping uses (the engine's optimal shape).")
def export_tensorrt_command(onnx_path: str, dataset: str, out_path: str, max_batch: int, tile: int) -> None:
    """Compile an FP16 TensorRT engine on this machine's GPU, parity-checked; needs CUDA and TensorRT."""
    from cloudlulc.export import EngineProfile, build_engine

    _check_export_outputs(out_path, {"--onnx": onnx_path}, dataset)
    profile = EngineProfile(
        opt_batch=max(1, max_batch // 2), max_batch=max_batch, min_tile=min(256, tile), opt_tile=tile, max_tile=tile
    )
    report = build_engine(onnx_path, out_path, dataset, profile=profile)
    click.echo(f"wrote {out_path} (parity: {report.summary()}); GPU facts in {out_path}.json")


@cli.command()
@click.option("--repository", required=True, help="Triton model repository: a folder or s3:// URI.")
@click.option(
    "--model", "models", multiple=True, help="Model to load at start (repeatable) [default: every model with versions]."
)
@click.option(
    "--key-file",
    envvar="TRITON_REPOSITORY_KEY_FILE",
    default=None,
    help="File holding the repository API key [default: TRITON_REPOSITORY_KEY, else generated into "
    "<local-dir>/repository.key].",
)
@click.option("--local-dir", default="outputs/triton", show_default=True, help="State folder of the local Triton.")
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(1, 65535))
def serve(
    repository: str,
    models: tuple[str, ...],
    key_file: str | None,
    local_dir: str,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
) -> None:
    """Serve a model repository with the real Triton on loopback until SIGTERM or Ctrl-C.

    Explicit model control (promotions load versions over gRPC) with the model-repository API behind a
    key; a taken port is replaced by a free one. Exit 6 when a model fails to load or Triton stops.
    """
    from cloudlulc.serving.local_triton import LocalTriton, ServerState, serve_until_signal

    server = LocalTriton(local_dir)
    ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}

    def announce(state: ServerState) -> None:
        click.echo(
            f"local Triton on {repository}: gRPC {state.grpc_url}, HTTP {state.http_port}, metrics "
            f"{state.metrics_port}; loaded: {', '.join(state.models) or 'nothing yet'}",
            err=True,
        )
        if state.key_generated:
            click.echo(f"repository API key (generated, in {state.key_file}): {server.key()}", err=True)

    sys.exit(
        serve_until_signal(
            server,
            lambda: server.start(repository, models=list(models) or None, key_file=key_file, ports=ports),
            announce,
        )
    )


@cli.command()
@click.option("--repository", required=True, help="Triton model repository: a folder or s3:// URI.")
@click.option("--dataset", required=True, help="CloudLULC-Set for the parity samples and the golden sample.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None, help="MLflow tracking URI.")
@click.option(
    "--triton-url",
    default=None,
    help="Production Triton host:port (explicit model control) [default: the local Triton].",
)
@click.option(
    "--tensorrt/--onnx",
    "tensorrt",
    default=True,
    show_default=True,
    help="With --triton-url: serve the TensorRT plan (GPU) or the ONNX Runtime twin.",
)
@click.option("--local-dir", default="outputs/triton", show_default=True, help="State folder of the local Triton.")
def promote(
    repository: str, dataset: str, tracking_uri: str | None, triton_url: str | None, tensorrt: bool, local_dir: str
) -> None:
    """Serve the MLflow champion: export, publish a new version, load, check a golden sample, keep or roll back.

    The served version keeps answering throughout; a rolled-back promotion exits 6 naming what serves.
    """
    from cloudlulc.serving import ModelRepository
    from cloudlulc.serving import promote as run_promotion
    from cloudlulc.serving.targets import serving_target
    from cloudlulc.tracking import TrackingSettings

    check_outputs_apart({"--repository": repository}, datasets={"--dataset": dataset})
    settings = TrackingSettings(tracking_uri=tracking_uri) if tracking_uri else TrackingSettings()
    target = serving_target(triton_url, local_dir, tensorrt=tensorrt)
    result = run_promotion(settings, ModelRepository(repository), dataset, target)
    click.echo(
        f"PROMOTED: {settings.registered_model} v{result.registered_version} serves as "
        f"{result.served_model} version {result.served_version} at {result.grpc_url}"
    )
    click.echo(f"export parity: {result.export_parity.summary()}")
    click.echo(f"golden sample: {result.golden_parity.summary()}")


@cli.command("map")
@click.option(
    "--optical",
    default=None,
    help="Sentinel-2 L2A scene GeoTIFF (12 bands); path or s3://. Leave out to map from Sentinel-1 only.",
)
@click.option(
    "--sar",
    default=None,
    help="Sentinel-1 VV/VH GeoTIFF, any CRS; resampled onto the optical grid. Leave out to map from "
    "Sentinel-2 only (no SAR pair in the window).",
)
@click.option("--out", "out_uri", required=True, help="Class map COG (.tif), local or s3://; sidecars beside it.")
@click.option(
    "--triton-url",
    default=None,
    envvar="TRITON_GRPC_URL",
    help="Triton gRPC host:port [default: TRITON_GRPC_URL, else the running local Triton].",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Served model [default: cloudlulc_cpu locally, cloudlulc with --triton-url].",
)
@click.option(
    "--model-version",
    default="",
    help="Version to pin [default: the repository's served.json, else the lowest loaded].",
)
@click.option(
    "--repository",
    default=None,
    envvar="TRITON_MODEL_REPOSITORY",
    help="Model repository whose served.json names the version [default: the local Triton's].",
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Predict in-process with ONNX Runtime instead of Triton.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    help="Predict in-process with PyTorch from a training checkpoint (for --reliability).",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Where --checkpoint predicts: cpu, cuda or cuda:N (bf16, channels-last on a GPU).",
)
@click.option("--local-dir", default="outputs/triton", show_default=True, help="State folder of the local Triton.")
@click_option(MapOptions, "tile")
@click_option(MapOptions, "overlap")
@click_option(MapOptions, "batch_size", "--batch-size", "--batch")
@click_option(MapOptions, "in_flight")
@click.option("--confidence", is_flag=True, help="Also write the blended top-class probability as a COG.")
@click.option(
    "--reliability",
    is_flag=True,
    help="Also write ORM's reliability of the optics (1-255) as <stem>_reliability.tif (with --checkpoint).",
)
@click.option(
    "--request-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, max=3600, min_open=True),
    help="Client deadline of one Triton request (s); a late answer is retried.",
)
@click.option(
    "--attempts",
    default=5,
    show_default=True,
    type=click.IntRange(1),
    help="Tries per Triton request before exit 6 (transient failures, jittered backoff).",
)
def map_command(
    optical: str | None,
    sar: str | None,
    out_uri: str,
    triton_url: str | None,
    model_name: str | None,
    model_version: str,
    repository: str | None,
    onnx_path: str | None,
    checkpoint: str | None,
    device: str,
    local_dir: str,
    confidence: bool,
    reliability: bool,
    request_timeout: float,
    attempts: int,
    **tiling: int,
) -> None:
    """Map a scene through Triton over gRPC into a COG, with class areas (km2) and a quicklook; resumable.

    Without --sar (or --optical) the scene is mapped from the other modality alone, fed as the
    model saw a missing one in training (modality_dropout); the map's metadata says so.
    """
    from cloudlulc.mapping import map_scene
    from cloudlulc.mapping.region import sidecar_uris

    options = build(MapOptions, {"batch_size": "--batch-size"}, **tiling)
    if optical is None and sar is None:
        raise click.UsageError("give --optical, --sar, or both")
    check_outputs_apart(
        {"--out": out_uri, **{f"--out {name}": uri for name, uri in sidecar_uris(out_uri).items()}},
        files={"--optical": optical, "--sar": sar, "--onnx": onnx_path, "--checkpoint": checkpoint},
    )
    if onnx_path and checkpoint:
        raise click.UsageError("give at most one of --onnx and --checkpoint")
    if reliability and not checkpoint:
        raise click.UsageError("--reliability needs --checkpoint: ONNX and Triton models return probabilities only")
    if device != "cpu" and not checkpoint:
        raise click.UsageError(f"--device {device} needs --checkpoint: ONNX Runtime and Triton choose their own")
    if checkpoint is not None or onnx_path is not None:
        predictor, model_id = _in_process_predictor(
            checkpoint, onnx_path, reliability=reliability, in_flight=options.in_flight, device=device
        )
        result = map_scene(
            optical,
            sar,
            out_uri,
            predictor,
            model_id=model_id,
            reliability=reliability,
            options=options,
            confidence=confidence,
        )
    else:
        from cloudlulc.io.retry import SERVING_RETRY
        from cloudlulc.serving.region_maps import TritonEndpoint
        from cloudlulc.serving.regional import default_model, map_with_triton

        endpoint = TritonEndpoint.find(triton_url, local_dir, repository)
        result = map_with_triton(
            optical,
            sar,
            out_uri,
            endpoint.grpc_url,
            model_name=model_name or default_model(triton_url),
            model_version=model_version,
            repository=endpoint.repository,
            shared_memory_key=endpoint.shared_memory_key,
            retry=replace(SERVING_RETRY, attempts=attempts, timeout_s=request_timeout),
            options=options,
            confidence=confidence,
        )
    _echo_map(result, alone="Sentinel-1" if optical is None else "Sentinel-2" if sar is None else None)


def _in_process_predictor(
    checkpoint: str | None, onnx_path: str | None, *, reliability: bool, in_flight: int = 1, device: str = "cpu"
) -> tuple[Any, str]:
    """The predictor of ``map --checkpoint`` (PyTorch) or ``map --onnx`` (ONNX Runtime), and its model id."""
    if checkpoint is not None:
        from cloudlulc.models.inference import torch_predictor
        from cloudlulc.training.evaluation import load_trained_model

        try:
            predictor = torch_predictor(load_trained_model(checkpoint), reliability=reliability, device=device)
        except (ValueError, RuntimeError) as error:  # RuntimeError: torch refuses a malformed device string
            raise click.UsageError(f"--checkpoint {checkpoint} --device {device}: {error}") from error
        return predictor, f"checkpoint:{checkpoint}"
    from cloudlulc.export.onnx import onnxruntime_runner, threads_per_call

    return onnxruntime_runner(str(onnx_path), threads_per_call(in_flight)), f"onnx:{onnx_path}"


def _echo_map(result: Any, *, alone: str | None) -> None:
    """What ``cloudlulc map`` wrote, one line per file; ``alone`` names the one modality it mapped from."""
    click.echo(
        f"map:       {result.map_uri} ({result.width} x {result.height} px, {result.tiles} tiles, "
        f"{result.tiles_predicted} predicted now, {result.seconds:.1f} s)"
    )
    if alone:
        click.echo(
            f"inputs:    {alone} only (CLOUDLULC_MODALITIES tag); a model trained with modality_dropout maps this way"
        )
    if result.confidence_uri:
        click.echo(f"confidence: {result.confidence_uri}")
    if result.reliability_uri:
        click.echo(f"reliability: {result.reliability_uri}")
    click.echo(f"areas:     {result.areas_uri}")
    click.echo(f"quicklook: {result.quicklook_uri}")


@cli.command("product")
@click.option("--scenes", "scenes_uri", required=True, help="Scene stacks of the region (`ingest run --mode scenes`).")
@click.option(
    "--maps",
    "maps_uri",
    required=True,
    help="Where scene maps go and the products' STAC catalogue lives (folder or s3://).",
)
@click_option(ProductOptions, "region")
@click_option(ProductOptions, "aoi")
@click_option(ProductOptions, "target_date", "--date")
@click_option(ProductOptions, "window_days")
@click_option(ProductOptions, "crs")
@click_option(ProductOptions, "min_change_confidence")
@click_option(ProductOptions, "reference")
@click_option(ProductOptions, "reference_table")
@click.option(
    "--triton-url",
    default=None,
    envvar="TRITON_GRPC_URL",
    help="Triton gRPC host:port [default: TRITON_GRPC_URL, else the running local Triton].",
)
@click.option("--model", "model_name", default=None, help="Served model [default: cloudlulc_cpu locally].")
@click.option("--local-dir", default="outputs/triton", show_default=True, help="State folder of the local Triton.")
@click_option(MapOptions, "tile")
@click_option(MapOptions, "overlap")
@click_option(MapOptions, "batch_size")
@click.option("--s2-only", is_flag=True, help="Also map Sentinel-2 stacks without a Sentinel-1 partner.")
def product_command(
    scenes_uri: str,
    maps_uri: str,
    triton_url: str | None,
    model_name: str | None,
    local_dir: str,
    tile: int,
    overlap: int,
    batch_size: int,
    s2_only: bool,
    **product: Any,
) -> None:
    """Map a region's scenes of a date window through Triton and publish its product for the date.

    One COG over the AOI (each pixel from the best observation: clear optics first, then the most
    confident scene), its confidence and source, class areas once per pixel, the change since the
    region's previous product, and a report page; a STAC item in the catalogue under --maps, written
    last. A date already published is not built again.
    """
    from cloudlulc.serving.region_maps import TritonEndpoint, map_region, window_stacks
    from cloudlulc.serving.regional import default_model

    options = build(ProductOptions, {"target_date": "--date"}, **product)
    tiling = build(MapOptions, tile=tile, overlap=overlap, batch_size=batch_size)
    check_outputs_apart({"--maps": maps_uri}, datasets={"--scenes": scenes_uri})
    window_stacks(scenes_uri, options)  # no stack of the window, or a bad AOI or CRS: before any mapping
    probe_writable(join_uri(maps_uri, "catalog.json"), "--maps")
    endpoint = TritonEndpoint.find(triton_url, local_dir)
    result = map_region(
        scenes_uri,
        maps_uri,
        options.region,
        endpoint,
        model_name=model_name or default_model(triton_url),
        options=tiling,
        s2_only=s2_only,
        product=options,
        echo=click.echo,
    )
    if result.product is not None:
        click.echo(f"STAC item: {result.product.item_uri}")


# --- ingest ---------------------------------------------------------------------------------------


def _search_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options shared by ``ingest search`` and ``ingest run``: where, when, how cloudy, which catalog."""
    from cloudlulc.ingest.stac import (
        DEFAULT_CATALOG,
        DEFAULT_PAIR_WINDOW_DAYS,
        DEFAULT_S1_COLLECTION,
        DEFAULT_S2_COLLECTION,
    )

    options = [
        click.option(
            "--catalog",
            default=DEFAULT_CATALOG,
            show_default=True,
            help="STAC API URL, or a static catalog: catalog.json or its folder, local, s3:// or http(s).",
        ),
        click.option("--aoi", type=click.Path(exists=True, dir_okay=False), help="Area of interest: GeoJSON file."),
        click.option("--bbox", help="Area of interest as west,south,east,north in degrees (instead of --aoi)."),
        click.option("--start", required=True, type=click.DateTime(["%Y-%m-%d"]), help="First day (YYYY-MM-DD)."),
        click.option("--end", required=True, type=click.DateTime(["%Y-%m-%d"]), help="Last day, included."),
        click.option(
            "--max-cloud",
            type=click.FloatRange(0, 100),
            default=100.0,
            show_default=True,
            help="Largest Sentinel-2 scene cloud cover, percent.",
        ),
        click.option("--s2-collection", default=DEFAULT_S2_COLLECTION, show_default=True),
        click.option(
            "--s1-collection",
            default=DEFAULT_S1_COLLECTION,
            show_default=True,
            help="Sentinel-1 collection; ingest run needs calibrated, geocoded backscatter.",
        ),
        click.option(
            "--window-days",
            type=click.IntRange(0, 60),
            default=DEFAULT_PAIR_WINDOW_DAYS,
            show_default=True,
            help="Largest S1/S2 time gap paired.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _query(
    catalog: str,
    aoi: str | None,
    bbox: str | None,
    start: Any,
    end: Any,
    max_cloud: float,
    s2_collection: str,
    s1_collection: str,
    window_days: int,
) -> Any:
    from cloudlulc.ingest.stac import SearchQuery, load_aoi, parse_bbox

    if (aoi is None) == (bbox is None):
        raise click.UsageError("give the area of interest with exactly one of --aoi FILE or --bbox W,S,E,N")
    area = load_aoi(aoi) if aoi else parse_bbox(str(bbox))
    return SearchQuery(area, start.date(), end.date(), max_cloud, catalog, s2_collection, s1_collection, window_days)


@cli.group()
def ingest() -> None:
    """Find new Sentinel-1/2 acquisitions, pair them, and write chips or scene stacks."""


@ingest.command("search")
@_search_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write pairs and unpaired as JSON.")
def ingest_search(json_out: str | None, **query_options: Any) -> None:
    """Search the catalog and show how acquisitions pair (nothing is written but --json)."""
    import json

    from cloudlulc.ingest.pairing import pair_acquisitions
    from cloudlulc.ingest.stac import search

    query = _query(**query_options)
    check_outputs_apart({"--json": json_out}, files={"--aoi": query_options.get("aoi")})
    found = search(query)
    pairing = pair_acquisitions(found, query.aoi, query.pair_window_days)
    click.echo(f"found {len(found.s2)} Sentinel-2 and {len(found.s1)} Sentinel-1 acquisitions in {query.catalog}")
    for pair in pairing.pairs:
        assert pair.s1 is not None and pair.gap_days is not None  # pairing only makes true pairs
        click.echo(
            f"pair      {pair.s2.id} ({pair.s2.when:%Y-%m-%d}, cloud {pair.s2.cloud_cover}) + {pair.s1.id} "
            f"(gap {pair.gap_days:+.1f} d, covers {pair.coverage:.0%} of the scene's AOI)"
        )
    for unpaired in pairing.unpaired:
        click.echo(f"unpaired  {unpaired.s2.id}: {unpaired.reason}")
    if json_out:
        document = {
            "pairs": [
                {
                    "s2": p.s2.summary(),
                    "s1": p.s1.summary() if p.s1 else None,
                    "gap_days": p.gap_days,
                    "coverage": p.coverage,
                }
                for p in pairing.pairs
            ],
            "unpaired": [{"s2": u.s2.summary(), "reason": u.reason} for u in pairing.unpaired],
        }
        Path(json_out).write_text(json.dumps(document, indent=1))
        click.echo(f"written   {json_out}")


@ingest.command("run")
@_search_options
@click.option("--out", "out", required=True, help="Output folder or s3:// prefix.")
@click.option(
    "--mode",
    type=click.Choice(["chips", "scenes"]),
    default="chips",
    show_default=True,
    help="CloudLULC-Set chips (training refresh) or one aligned scene stack per pair (mapping).",
)
@click_option(ChipOptions, "chip_size")
@click_option(ChipOptions, "min_valid_fraction", "--min-valid")
@click.option("--labels", "label_source", help="Reference land-cover raster (local, s3:// or http) to label chips.")
@click.option(
    "--label-table",
    default="worldcover",
    show_default=True,
    help="Remap table of --labels: a built-in name or a CSV of source,target rows.",
)
@click.option(
    "--retries",
    type=click.IntRange(1, 20),
    default=4,
    show_default=True,
    help="Attempts per remote asset (exponential backoff from 1 s).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="Seconds before a remote request counts as failed.",
)
@click.option(
    "--s2-only/--pairs-only",
    default=False,
    show_default=True,
    help="With --mode scenes: also stack Sentinel-2 acquisitions that have no Sentinel-1 partner (no sar.tif), "
    "to map with a model trained with modality dropout.",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def ingest_run(
    out: str,
    mode: str,
    chip_size: int,
    min_valid_fraction: float,
    label_source: str | None,
    label_table: str,
    retries: int,
    timeout: float,
    s2_only: bool,
    progress: bool,
    **query_options: Any,
) -> None:
    """Ingest every new pair into OUT; already ingested pairs are skipped. Exit 3 when a pair failed."""
    from cloudlulc.ingest.run import IngestOptions, ingest
    from cloudlulc.ingest.stac import catalog_root
    from cloudlulc.io.retry import ASSET_RETRY

    query = _query(**query_options)
    check_outputs_apart(
        {"--out": out}, files={"--labels": label_source}, datasets={"--catalog": catalog_root(query.catalog)}
    )
    options = IngestOptions(
        out=out,
        mode=mode,  # type: ignore[arg-type]
        chips=build(
            ChipOptions,
            {"min_valid_fraction": "--min-valid"},
            chip_size=chip_size,
            min_valid_fraction=min_valid_fraction,
        ),
        label_source=label_source,
        label_table=label_table,
        retry=replace(ASSET_RETRY, attempts=retries, timeout_s=timeout),
        s2_only=s2_only,
    )
    report = ingest(query, options, progress=progress)
    click.echo(report.summary())
    if report.failed:
        click.echo(
            f"error: {len(report.failed)} pair(s) failed; fix the cause and rerun (done pairs are kept)", err=True
        )
        sys.exit(3)


@ingest.command("synthetic")
@click.option("--out", "out", required=True, help="Folder or s3:// prefix for the static catalog.")
@click.option("--size", type=click.IntRange(min=128), default=1024, show_default=True, help="Scene side, pixels.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, same catalog.")
def ingest_synthetic(out: str, size: int, seed: int) -> None:
    """Write a static STAC catalog of synthetic Sentinel-2 L2A / Sentinel-1 acquisitions (demos, tests)."""
    from cloudlulc.ingest.synthetic import SyntheticCatalogConfig, write_synthetic_catalog

    catalog = write_synthetic_catalog(out, SyntheticCatalogConfig(size=size, seed=seed), progress=True)
    west, south, east, north = catalog.bbox_wgs84
    click.echo(f"catalog:   {catalog.catalog_href}")
    click.echo(f"items:     {', '.join(catalog.s2_ids + catalog.s1_ids)}")
    click.echo(f"bbox:      {west:.5f},{south:.5f},{east:.5f},{north:.5f}")
    if catalog.landcover_uri:
        click.echo(f"labels:    {catalog.landcover_uri} (ESA WorldCover codes)")


def main() -> None:
    """Console entry point: user errors become one line on stderr and an exit code, not a traceback.

    Logging is set up by the group itself (``--log-level``/``--log-format``, see :mod:`cloudlulc.logs`).
    """
    _run()


def _run() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:  # one line like every other error, with where to read more
        context = getattr(error, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        click.echo(f"error: {error.format_message()}{hint}", err=True)
        sys.exit(error.exit_code)
    except CloudLULCError as error:
        _fail(error)
    except ValidationError as error:  # an options model built past `build`: still a usage error naming the option
        _fail(UsageError(describe(error)))
    except OSError as error:  # a write the probes could not foresee (disk full, file system gone read-only)
        where = f"{error.filename}: " if error.filename else ""
        click.echo(f"error: {where}{error.strerror or error}", err=True)
        sys.exit(StorageError.exit_code)


def _add_plugin_commands(group: click.Group) -> None:
    """Add the commands other packages register in the ``cloudlulc.commands`` entry-point group.

    The pipelines side registers ``pipelines`` and ``demo`` there, so the library never imports it; a
    plugin that cannot be imported (its extra is not installed) becomes a command that says so.
    """
    for entry in entry_points(group="cloudlulc.commands"):
        try:
            command = entry.load()
        except ImportError as error:
            command = _missing_plugin(entry.name, entry.dist.name if entry.dist else "cloudlulc", error)
        group.add_command(command, entry.name)


def _missing_plugin(name: str, distribution: str, error: ImportError) -> click.Command:
    def refuse() -> None:
        raise click.UsageError(f"'{name}' needs the pipelines extra: pip install '{distribution}[pipelines]' ({error})")

    return click.Command(
        name,
        callback=refuse,
        help=f"Not installed: {error}.",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


_add_plugin_commands(cli)

if __name__ == "__main__":
    main()
