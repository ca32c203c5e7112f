"""dvc.yaml + params.yaml: `dvc repro` runs every stage, then nothing, then only what a changed param feeds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["catalog", "ingest", "validate", "train", "evaluate", "export"]
DOWNSTREAM_OF_TRAIN = {"train", "evaluate", "export"}
PLOTS = {"Training loss", "Validation scores", "Test mIoU per cloud-cover bin"}
SUMMARY_KEYS = {"miou", "oa", "macro_f1", "ece", "miou_by_cloud"}
WRITTEN = [
    "data/catalog/catalog.json",
    "data/catalog/reference/worldcover.tif",
    "data/CloudLULC-Set/split/test.csv",
    "outputs/validation/report.json",
    "outputs/train/checkpoints/epoch_0001.pt",
    "outputs/model.onnx",
]
VARIABLE = re.compile(r"\$\{\s*([^}]*?)\s*\}")


def _dvc_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for key in dotted.split("."):
        assert isinstance(node, dict) and key in node, f"{dotted} is not in params.yaml"
        node = node[key]
    return node


def _out_paths(stage: dict[str, Any]) -> list[str]:
    entries = [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def _source_deps(stages: dict[str, Any]) -> set[str]:
    """Deps no stage produces: the code the stages run, to be copied next to dvc.yaml."""
    produced = [path for stage in stages.values() for path in _out_paths(stage)]
    return {
        dep
        for stage in stages.values()
        for dep in stage.get("deps", [])
        if not any(dep == out or dep.startswith(f"{out}/") for out in produced)
    }


def test_every_dvc_yaml_variable_resolves_and_each_stage_lists_the_params_it_uses():
    document = _dvc_yaml()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = document["stages"]
    assert list(stages) == STAGES
    variables = VARIABLE.findall((REPO / "dvc.yaml").read_text())
    assert len(variables) >= 10
    for name in variables:
        value = _lookup(params, name)
        assert isinstance(value, str | int | float) and not isinstance(value, bool), f"${{{name}}} is {value!r}"
    for name, stage in stages.items():
        assert stage["cmd"].startswith("cloudlulc "), f"stage {name} is not a call of the CLI"
        declared = [str(entry) for entry in stage.get("params", [])]
        for entry in declared:
            _lookup(params, entry)
        for used in VARIABLE.findall(stage["cmd"]):
            assert any(used == entry or used.startswith(f"{entry}.") for entry in declared), (
                f"stage {name} uses ${{{used}}} without listing it under params"
            )
        assert name in {entry.split(".")[0] for entry in declared}, f"stage {name} lists no params of its own"
    for dep in _source_deps(stages):
        assert (REPO / dep).exists(), f"code dep {dep} does not exist"
        assert not dep.startswith(("data/", "outputs/")), f"{dep} looks like data no stage produces"


def _environment(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(root / ".dvc-global"),
        "DVC_SITE_CACHE_DIR": str(root / ".dvc-site-cache"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
    }


def _dvc(project: Path, *args: str) -> str:
    result = subprocess.run(
        ["dvc", *args], cwd=project, env=_environment(project.parent), capture_output=True, text=True, timeout=400
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _repro(project: Path) -> tuple[list[str], list[str]]:
    """Stages run and stages skipped, in DVC's order, as `dvc repro` reports them."""
    output = _dvc(project, "repro")
    ran = re.findall(r"^Running stage '([^']+)'", output, re.MULTILINE)
    skipped = re.findall(r"^Stage '([^']+)' didn't change, skipping", output, re.MULTILINE)
    assert sorted(ran + skipped) == sorted(STAGES), output[-3000:]
    return ran, skipped


def _files(project: Path) -> dict[str, int]:
    """Modification times (ns) of every file the stages wrote."""
    return {
        str(path.relative_to(project)): path.stat().st_mtime_ns
        for folder in ("data", "outputs")
        for path in sorted((project / folder).rglob("*"))
        if path.is_file()
    }


def _write_params(project: Path, params: dict[str, Any]) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_dvc_repro_runs_every_stage_then_nothing_then_only_what_a_param_feeds(tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    stages = _dvc_yaml()["stages"]
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, project / name)
    for dep in sorted(_source_deps(stages)):  # a folder before the files in it
        source, target = REPO / dep, project / dep
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    _dvc(project, "init", "--no-scm", "-q")
    shutil.copy2(REPO / ".dvcignore", project / ".dvcignore")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["catalog"]["size"] = 384  # 25 chips of 64 px: 19 train, 2 val, 4 test
    params["ingest"]["chip_size"] = 64
    params["train"].update(epochs=1, crop_size=64)
    params["export"]["samples"] = 2
    _write_params(project, params)

    # 1. A fresh project: every stage runs, in pipeline order, and writes what dvc.yaml declares.
    ran, skipped = _repro(project)
    assert ran[:4] == STAGES[:4] and sorted(ran[4:]) == ["evaluate", "export"] and not skipped
    for path in WRITTEN:
        assert (project / path).is_file(), f"{path} was not written"
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 1
    history = json.loads((project / "outputs/train/history.json").read_text())
    assert [record["epoch"] for record in history] == [1]
    evaluation = json.loads((project / "outputs/evaluation.json").read_text())
    bins = json.loads((project / "outputs/evaluation_bins.json").read_text())
    assert bins and [record["cloud_bin"] for record in bins] == list(evaluation["bins"])
    for record in bins:
        assert record["miou"] == evaluation["bins"][record["cloud_bin"]]["miou"]
        assert record["pixels"] == evaluation["bins"][record["cloud_bin"]]["pixels"] > 0
    onnx_facts = json.loads((project / "outputs/model.onnx.json").read_text())
    assert onnx_facts["parity"]["passed"] and onnx_facts["source"].endswith("epoch_0001.pt")

    # Metrics and plots, as `dvc metrics show` / `dvc plots show` read them: the short summary by default,
    # the detailed evaluation when named.
    shown = json.loads(_dvc(project, "metrics", "show", "--json"))[""]["data"]
    assert set(shown) == {"outputs/evaluation_summary.json"}, "the short table only"
    summary = shown["outputs/evaluation_summary.json"]["data"]
    assert set(summary) == SUMMARY_KEYS and summary["miou"] == evaluation["overall"]["miou"]
    assert summary["miou_by_cloud"] == {record["cloud_bin"]: record["miou"] for record in bins}
    named = json.loads(_dvc(project, "metrics", "show", "--json", "outputs/evaluation.json"))[""]["data"]
    metrics = named["outputs/evaluation.json"]["data"]
    assert metrics["overall"]["miou"] == evaluation["overall"]["miou"]
    assert 0 <= metrics["overall"]["miou"] <= 1 and metrics["overall"]["pixels"] > 0
    assert set(metrics["bins"]) == set(evaluation["bins"])
    plots = json.loads(_dvc(project, "plots", "show", "--json"))["data"]
    assert set(plots) == PLOTS, "expected exactly the top-level plots of dvc.yaml"
    loss = plots["Training loss"][0]["content"]
    assert loss["encoding"]["x"]["field"] == "epoch" and len(loss["data"]["values"]) == 1
    per_bin = plots["Test mIoU per cloud-cover bin"][0]["content"]["data"]["values"]
    assert [value["cloud_bin"] for value in per_bin] == [record["cloud_bin"] for record in bins]

    # 2. Nothing changed: no stage runs, the lock file and every output stay as they were.
    lock_text, written = (project / "dvc.lock").read_text(), _files(project)
    ran, skipped = _repro(project)
    assert ran == [] and skipped == STAGES
    assert (project / "dvc.lock").read_text() == lock_text
    assert _files(project) == written

    # 3. train.epochs changes: train, evaluate and export rerun; catalog, ingest and validate do not.
    params["train"]["epochs"] = 2
    _write_params(project, params)
    ran, skipped = _repro(project)
    assert ran[0] == "train" and set(ran) == DOWNSTREAM_OF_TRAIN and len(ran) == 3
    assert skipped == ["catalog", "ingest", "validate"]
    upstream = {path: mtime for path, mtime in written.items() if path.startswith(("data/", "outputs/validation/"))}
    assert len(upstream) > 10
    assert {path: _files(project)[path] for path in upstream} == upstream, "an upstream output was rewritten"
    assert [record["epoch"] for record in json.loads((project / "outputs/train/history.json").read_text())] == [1, 2]
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] == 2
    assert json.loads((project / "outputs/model.onnx.json").read_text())["source"].endswith("epoch_0002.pt")
    assert lock["stages"]["evaluate"]["params"]["params.yaml"]["train.epochs"] == 2


def test_evaluate_writes_the_short_summary_beside_the_detailed_metrics(
    trained_checkpoint: tuple[Path, Path], tmp_path: Path
):
    from click.testing import CliRunner

    from cloudlulc.cli import cli

    checkpoint, dataset = trained_checkpoint
    out, summary_out = tmp_path / "evaluation.json", tmp_path / "evaluation_summary.json"
    arguments = ["--dataset", str(dataset), "--checkpoint", str(checkpoint), "--out", str(out)]
    result = CliRunner().invoke(cli, ["evaluate", *arguments, "--summary-out", str(summary_out)])
    assert result.exit_code == 0, result.output
    detailed, summary = json.loads(out.read_text()), json.loads(summary_out.read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["miou"] == detailed["overall"]["miou"] and summary["oa"] == detailed["overall"]["overall_accuracy"]
    assert summary["macro_f1"] == detailed["overall"]["macro_f1"]
    assert summary["ece"] == detailed["calibration"]["overall"]["ece"]
    with_pixels = {label: scores["miou"] for label, scores in detailed["bins"].items() if scores["pixels"]}
    assert summary["miou_by_cloud"] == with_pixels and with_pixels
    assert all(isinstance(summary[key], float) for key in ("miou", "oa", "macro_f1", "ece")), "flat scalars"
