"""The tools that tell whether CloudLULC-Net's modules earn their place: module diagnostics, modality
dropout and single-modality evaluation, in-memory datasets, generator physics, and the seed-paired
comparison rule of the benchmark table."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cloudlulc import schema
from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.data.synthetic import PARAMS_FILE, SynthConfig, generate_dataset
from cloudlulc.data.synthetic_scene import Physics, make_scene
from cloudlulc.models import build_model, model_config
from cloudlulc.models.config import ALL_MODULES
from cloudlulc.training.diagnostics import diagnostics_text, module_diagnostics
from cloudlulc.training.evaluation import evaluate_model, evaluation_dataset, feed
from cloudlulc.training.trainer import drop_modalities

ROOT = Path(__file__).resolve().parents[1]


class _BrightnessReliability(nn.Module):
    """A stand-in ORM head with a known rule (bright = cloud), to check the diagnostics' arithmetic."""

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return 40.0 * (0.35 - optical[:, 1:4].mean(dim=1, keepdim=True))


def test_diagnostics_report_what_each_module_does(synthetic_set):
    root = synthetic_set(24, 11)
    model = build_model(model_config("cloudlulc_net", "tiny", **ALL_MODULES)).eval()
    model.reliability = _BrightnessReliability()
    masked = CloudLULCDataset(str(root), ["train", "val", "test"], return_cloud_mask=True, size_multiple=32)
    result = module_diagnostics(model, masked, batch_size=8)
    orm = result["orm"]
    assert list(orm) == ["input", "stage 1", "stage 2", "stage 3", "stage 4"]
    # Opaque synthetic clouds are bright: the brightness rule finds them, and clear ground stays trusted.
    assert orm["input"]["iou_low_with_opaque"] > 0.5
    assert orm["input"]["mean_opaque"] < 0.2 < 0.8 < orm["input"]["mean_clear"]
    assert orm["stage 4"]["iou_low_with_opaque"] < orm["input"]["iou_low_with_opaque"], "coarse maps blur edges"
    assert set(result["shoi"]) == set(result["choi"]) == {f"stage {i}" for i in range(1, 5)}
    assert all(stats["norm_ratio_to_mix"] > 0 for stats in result["shoi"].values())
    assert all(0 < s["gate_min"] <= s["gate_mean"] <= s["gate_max"] < 1 for s in result["choi"].values())
    assert 0 <= result["usmt"]["semantic_oa"] <= 1
    text = diagnostics_text(result)
    assert "IoU low~opaque" in text and "USMT semantic map" in text


def test_diagnostics_of_a_network_without_the_modules_are_empty(synthetic_set):
    root = synthetic_set(24, 11)
    dual = build_model(model_config("dual_stream", "tiny")).eval()
    masked = CloudLULCDataset(str(root), "test", return_cloud_mask=True, size_multiple=32)
    assert module_diagnostics(dual, masked) == {"orm": {}, "shoi": {}, "choi": {}, "usmt": None}


def test_modality_dropout_zeroes_one_modality_per_chosen_sample():
    optical, sar = torch.rand(400, 12, 4, 4) + 0.1, torch.rand(400, 2, 4, 4) + 0.1
    mask = torch.zeros(400, 4, 4, dtype=torch.uint8)
    same = drop_modalities(optical, sar, mask, 0.0, torch.Generator().manual_seed(1))
    assert same[0] is optical and same[1] is sar and same[2] is mask
    dropped_optical, dropped_sar, new_mask = drop_modalities(optical, sar, mask, 0.5, torch.Generator().manual_seed(1))
    no_optics = dropped_optical.flatten(1).abs().sum(1) == 0
    no_sar = dropped_sar.flatten(1).abs().sum(1) == 0
    assert not bool((no_optics & no_sar).any()), "never both"
    assert 60 < int(no_optics.sum()) < 140 and 60 < int(no_sar.sum()) < 140  # a quarter each of 400
    assert new_mask is not None and bool((new_mask[no_optics] == 2).all()) and bool((new_mask[~no_optics] == 0).all())
    again = drop_modalities(optical, sar, mask, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(again[0], dropped_optical), "the same draws for the same seed (exact resume)"


def test_single_modality_evaluation_feeds_zeros_for_the_missing_one(synthetic_set):
    optical, sar = torch.rand(1, 12, 8, 8), torch.rand(1, 2, 8, 8)
    assert torch.equal(feed(optical, sar, "optical")[1], torch.zeros_like(sar))
    assert torch.equal(feed(optical, sar, "sar")[0], torch.zeros_like(optical))
    with pytest.raises(ValueError, match="unknown modalities 'radar'"):
        feed(optical, sar, "radar")
    test_set = evaluation_dataset(str(synthetic_set(24, 11)), "test")

    def ece(model: nn.Module, modalities: str = "both") -> float:
        return evaluate_model(model, test_set, modalities=modalities)["calibration"]["overall"].ece()  # type: ignore[index]

    torch.manual_seed(0)
    sar_only = build_model(model_config("sar_only", "tiny"))
    assert ece(sar_only, "sar") == ece(sar_only), "SAR-only ignores the optics"
    torch.manual_seed(0)
    optical_only = build_model(model_config("optical_only", "tiny"))
    assert ece(optical_only, "sar") != ece(optical_only), "optical-only fed no optics sees zeros"


def test_in_memory_dataset_gives_the_disk_samples_and_reads_each_file_once(synthetic_set, tmp_path):
    root = tmp_path / "set"
    shutil.copytree(synthetic_set(24, 11), root)
    on_disk = CloudLULCDataset(str(root), "train", return_cloud_mask=True)
    in_memory = CloudLULCDataset(str(root), "train", return_cloud_mask=True, in_memory=True)
    for index in range(len(on_disk)):
        for key in ("optical", "sar", "label", "cloud_mask"):
            assert torch.equal(on_disk[index][key], in_memory[index][key])  # type: ignore[literal-required]
    shutil.rmtree(root / "Opt_S2_cloudy")
    cropped = CloudLULCDataset(str(root), "train", return_cloud_mask=True, in_memory=True, crop_size=32, augment=True)
    sample = cropped[0]  # a new Dataset object on the same set: the process's copy serves it, no file is opened
    assert sample["optical"].shape == (12, 32, 32) and sample["cloud_mask"].shape == (32, 32)
    with pytest.raises(Exception, match="Opt_S2_cloudy"):
        on_disk[0]


def test_physics_knobs_change_the_world_and_sets_record_them(tmp_path):
    def scenes(physics: Physics) -> list:
        return [make_scene(np.random.default_rng([21, i]), 96, physics) for i in range(6)]

    default, thick = scenes(Physics()), scenes(Physics(cloud_thickness=2.5))
    opaque = [sum(int((s.cloud_mask == schema.CLOUD_OPAQUE).sum()) for s in world) for world in (default, thick)]
    assert opaque[1] > 1.1 * opaque[0], "thicker clouds have larger opaque cores"
    assert all(np.array_equal(a.label, b.label) for a, b in zip(default, thick, strict=True)), "same land"
    unchanged = scenes(Physics(change_rate=0.0))
    assert all(np.array_equal(s.label, s.sar_land_cover) for s in unchanged)
    assert all(set(np.unique(s.label)) <= {0, 1, 2, 4, 5} for s in scenes(Physics(parcel_weights=(0.5, 0.5, 0.0))))
    with pytest.raises(ValueError, match="sar_separability must be positive"):
        Physics(sar_separability=0)
    with pytest.raises(ValueError, match="three shares summing to 1"):
        Physics(parcel_weights=(0.5, 0.2, 0.2))
    generate_dataset(str(tmp_path / "default"), SynthConfig(n=2, size=64, seed=3), progress=False)
    generate_dataset(
        str(tmp_path / "gap"), SynthConfig(n=2, size=64, seed=3, physics=Physics(change_rate=0.3)), progress=False
    )
    assert "physics" not in json.loads((tmp_path / "default" / PARAMS_FILE).read_text()), "old sets stay resumable"
    assert json.loads((tmp_path / "gap" / PARAMS_FILE).read_text())["physics"]["change_rate"] == 0.3


def _bench_table():
    spec = importlib.util.spec_from_file_location("bench_table", ROOT / "benchmarks" / "bench_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_calls_a_difference_only_beyond_twice_the_spread_of_paired_differences():
    bench = _bench_table()
    reference = {0: 0.70, 1: 0.75, 2: 0.80}
    assert bench.paired(reference, {0: 0.72, 1: 0.77, 2: 0.82}).endswith("(better)"), "+2 points every seed"
    assert bench.paired(reference, {0: 0.75, 1: 0.72, 2: 0.80}).endswith("(~)"), "+5, -3, 0: within noise"
    assert bench.paired(reference, {0: 0.69, 1: 0.74, 2: 0.785}).endswith("(worse)")
    assert bench.paired(reference, {0: 0.9}) == "-", "one shared seed cannot be judged"
    rows = [
        {
            "variant": "default",
            "model": model,
            "seed": seed,
            "train_seconds": 60.0,
            "steps": 1000,
            "scores": {"mIoU": base + 0.01 * seed, "OA": 0.9, "ECE": 0.02, **{f"mIoU {b}": base for b in bench.BINS}},
        }
        for model, base in (("CloudLULC-Net", 0.8), ("dual-stream", 0.78))
        for seed in range(3)
    ]
    text = bench.report(rows)
    assert "| CloudLULC-Net | 3 | 81.0 ± 1.0 |" in text
    assert "| dual-stream | 3 | 79.0 ± 1.0 |" in text and "-2.0 ± 0.0 (worse)" in text


def test_orm_stays_finite_under_bf16_autocast():
    """A confident reliability (logit +12) pooled in bf16 rounded to 1 and logit(1) was infinite: NaN weights."""
    model = build_model(model_config("cloudlulc_net", "tiny")).train()
    assert model.reliability is not None
    last = model.reliability.score[-1]
    torch.nn.init.constant_(last.bias, 12.0)
    optical, sar = torch.rand(2, 12, 64, 64), torch.rand(2, 2, 64, 64)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        output = model.forward_features(optical, sar)
        loss = output.logits.float().mean() + sum(r.float().mean() for r in output.reliability)
    loss.backward()
    assert all(torch.isfinite(r).all() for r in output.reliability)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_a_diverging_run_stops_naming_the_step_and_keeps_its_checkpoints(synthetic_set, tmp_path):
    from cloudlulc.errors import DivergedError
    from cloudlulc.training.config import load_train_config
    from cloudlulc.training.trainer import train

    config = load_train_config(
        None,
        [
            f"dataset={synthetic_set(24, 11)}",
            f"output_dir={tmp_path / 'run'}",
            "epochs=2",
            "batch_size=4",
            "crop_size=64",
            "learning_rate=1e30",
            "warmup_steps=0",
            "calibrate=false",
        ],
    )
    with pytest.raises(DivergedError, match=r"training diverged: loss is nan at epoch \d+, step \d+ \(cross_entropy"):
        train(config, progress=False)
