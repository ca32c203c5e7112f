"""The real `cloudlulc` console script, run as a user runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cloudlulc.io.rasters import RasterProfile, raster_info, read_raster, write_raster

CLI = [str(Path(sys.executable).with_name("cloudlulc"))]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "set"
    result = run("synth", "--out", str(root), "--n", "200", "--size", "64", "--seed", "1", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "wrote 200 samples" in result.stdout
    return root


def test_synth_then_validate_200_samples_passes(cli_dataset: Path, tmp_path: Path):
    result = run("validate", str(cli_dataset), "--report-dir", str(tmp_path / "r"), "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation passed: 200 samples, 0 failure(s)" in result.stdout
    assert json.loads((tmp_path / "r" / "report.json").read_text())["success"] is True


def test_planted_bad_sample_is_reported_by_name(cli_dataset: Path, tmp_path: Path):
    broken = tmp_path / "set"
    shutil.copytree(cli_dataset, broken)
    label = broken / "Label" / "synth_000123.tif"
    values = read_raster(str(label))
    values[0, 0, 0] = 42
    info = raster_info(str(label))
    write_raster(str(label), values, RasterProfile(info.crs, info.transform, nodata=info.nodata))
    result = run("validate", str(broken), "--report-dir", str(tmp_path / "r"))
    assert result.returncode == 1
    assert "FAIL synth_000123: label.values" in result.stdout
    assert "validation FAILED: 200 samples, 1 failure(s)" in result.stdout
    quarantined = run("validate", str(broken), "--report-dir", str(tmp_path / "q"), "--quarantine")
    assert quarantined.returncode == 0, quarantined.stdout
    assert (tmp_path / "q" / "quarantine.txt").read_text().split() == ["synth_000123"]
    assert label.exists(), "quarantine deletes nothing"


def test_bad_usage_and_missing_dataset_give_exit_codes(tmp_path: Path):
    usage = run("synth", "--out", str(tmp_path / "x"), "--n", "0")
    assert usage.returncode == 2 and "--n" in usage.stderr
    (tmp_path / "empty").mkdir()
    empty = run("validate", str(tmp_path / "empty"), "--report-dir", str(tmp_path / "r"))
    assert empty.returncode == 3
    assert empty.stderr.startswith("error: ") and "no samples found" in empty.stderr
    assert "Traceback" not in empty.stderr


def test_quicklook_command_writes_a_png(cli_dataset: Path, tmp_path: Path):
    result = run("quicklook", str(cli_dataset), "--out", str(tmp_path / "q.png"), "--count", "2")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_refuses_bad_options_before_any_work(tmp_path: Path):
    # the main job itself runs in tests/test_pipelines.py (both pipelines through kfp.local)
    result = run("demo", "--out", str(tmp_path / "demo"), "--epochs", "0")
    assert result.returncode == 2 and "--epochs" in result.stderr
    assert not (tmp_path / "demo").exists()
    assert "kfp.local" in run("demo", "--help").stdout


def test_version_and_help():
    assert run("--version").stdout.startswith("cloudlulc, version")
    help_text = run("--help").stdout
    for command in ("synth", "validate", "quicklook", "demo"):
        assert command in help_text


def test_train_then_evaluate_from_the_command_line(cli_dataset: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    trained = run(
        "train",
        f"dataset={cli_dataset}",
        f"output_dir={run_dir}",
        "epochs=1",
        "batch_size=4",
        "crop_size=64",
        "max_steps_per_epoch=3",
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    assert "trained cloudlulc_net/tiny: test mIoU" in trained.stdout
    assert "registered cloudlulc version 1 as challenger" in trained.stdout
    assert (tmp_path / "outputs" / "mlflow" / "mlflow.db").exists(), "embedded default: a local SQLite store"
    gated = run(
        "evaluate",
        "--gate",
        "--dataset",
        str(cli_dataset),
        "--first-min-miou",
        "0",
        "--first-min-oa",
        "0",
        cwd=tmp_path,
    )
    assert gated.returncode == 0, gated.stderr
    assert gated.stdout.startswith("PROMOTED: first champion")
    checkpoint = run_dir / "checkpoints" / "epoch_0001.pt"
    evaluated = run(
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        str(cli_dataset),
        "--split",
        "val",
        "--out",
        str(tmp_path / "metrics.json"),
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "overall" in evaluated.stdout and "mIoU" in evaluated.stdout and "Cropland" in evaluated.stdout
    assert "ECE" in evaluated.stdout and "cloud cover per sample: " in evaluated.stdout
    assert (tmp_path / "metrics_reliability.png").read_bytes()[:4] == b"\x89PNG", "a reliability diagram"
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= document["overall"]["miou"] <= 1
    assert set(document["bins"]) <= {"0-10%", "10-30%", "30-60%", "60-90%", "90-100%"} and document["bins"]
    assert document["modalities"] == "both" and "diagnostics" not in document
    radar = run(
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        str(cli_dataset),
        "--split",
        "val",
        "--modalities",
        "sar",
        "--diagnose",
        "--out",
        str(tmp_path / "radar.json"),
    )
    assert radar.returncode == 0, radar.stderr
    assert "fed Sentinel-1 only" in radar.stdout and "IoU low~opaque" in radar.stdout
    assert "SHOI" not in radar.stdout, "SHOI is off by default: nothing to diagnose"
    document = json.loads((tmp_path / "radar.json").read_text())
    assert document["modalities"] == "sar" and next(iter(document["diagnostics"]["orm"])) == "input"


def test_evaluate_needs_a_checkpoint_or_the_gate(tmp_path: Path):
    result = run("evaluate", "--dataset", str(tmp_path))
    assert result.returncode == 2 and "--checkpoint" in result.stderr


def test_bad_training_config_names_the_keys(tmp_path: Path):
    result = run("train", "dataset=x", "epocs=3", "crop_size=100")
    assert result.returncode == 2
    assert "epocs: Extra inputs are not permitted" in result.stderr and "crop_size" in result.stderr
