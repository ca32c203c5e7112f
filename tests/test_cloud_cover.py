"""Per-cloud-bin scores on any dataset: cloud cover from the mask, the clear twin, or the cloudy image alone."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cloudlulc import schema
from cloudlulc.data.clouds import cloud_test, sample_cloud_cover
from cloudlulc.data.layout import DatasetLayout
from cloudlulc.data.synthetic import SynthConfig, generate_dataset
from cloudlulc.data.synthetic_scene import make_scene
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import RasterProfile, raster_info, read_raster, write_raster

ALL_BINS = {schema.cloud_bin_label(low) for low, _ in schema.CLOUD_BINS}


@pytest.fixture(scope="module")
def published_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic set reshaped like the published CloudLULC-Set: no metadata.csv, no CloudMask/, all in test."""
    root = tmp_path_factory.mktemp("published") / "set"
    generate_dataset(str(root), SynthConfig(n=40, size=64, seed=11), progress=False)
    layout = DatasetLayout(str(root))
    records = [replace(record, split="test", cloud_mask=None) for record in layout.read_records()]
    shutil.rmtree(root / "CloudMask")
    (root / "metadata.csv").unlink()
    layout.write_splits(records)
    return root


def test_evaluate_scores_every_bin_without_metadata_or_masks(
    published_like: Path, trained_checkpoint: tuple[Path, Path]
):
    from cloudlulc.training.evaluation import evaluate_model, evaluation_dataset, evaluation_table, load_trained_model

    result = evaluate_model(
        load_trained_model(str(trained_checkpoint[0])), evaluation_dataset(str(published_like), "test")
    )
    assert set(result["bins"]) == ALL_BINS  # type: ignore[arg-type]
    assert result["cloud_cover_sources"] == {"clear twin": 40}
    assert "cloud cover per sample: 40 from clear twin" in evaluation_table(result)


def test_each_source_agrees_with_the_mask_it_stands_in_for(tmp_path: Path):
    """Measured on generated scenes, where the mask is the truth (the cloud test is a crude last resort)."""
    root = tmp_path / "set"
    generate_dataset(str(root), SynthConfig(n=24, size=64, seed=5), progress=False)
    layout = DatasetLayout(str(root))
    errors: dict[str, list[float]] = {"clear twin": [], "cloud test": []}
    for record in layout.read_records():
        truth, source = sample_cloud_cover(layout, record)
        assert source == "CloudMask"
        errors["clear twin"].append(abs(sample_cloud_cover(layout, replace(record, cloud_mask=None))[0] - truth))
        alone = replace(record, cloud_mask=None, opt_clear=None)
        errors["cloud test"].append(abs(sample_cloud_cover(layout, alone)[0] - truth))
    print({source: round(float(np.mean(values)), 3) for source, values in errors.items()})
    assert np.mean(errors["clear twin"]) < 0.1  # measured 0.087: thin haze under 0.05 is missed, shadows counted
    assert np.mean(errors["cloud test"]) < 0.12


def test_cloud_test_leaves_bright_land_and_snow_alone():
    scene = make_scene(np.random.default_rng(2), 64)
    clear_pixels = scene.clear
    assert cloud_test(clear_pixels).mean() < 0.05, "cloud-free reflectance is not cloud"
    snow = np.full((12, 4, 4), 0.8, np.float32)
    snow[schema.S2_BANDS.index("B11")] = 0.1
    assert not cloud_test(snow).any(), "bright in the visible but dark in SWIR is snow"


def test_a_mask_with_unknown_codes_is_refused_naming_it(tmp_path: Path):
    root = tmp_path / "set"
    generate_dataset(str(root), SynthConfig(n=4, size=64, seed=3), progress=False)
    layout = DatasetLayout(str(root))
    record = layout.read_records()[0]
    mask_path = layout.uri(str(record.cloud_mask))
    mask = read_raster(mask_path)
    mask[0, 0, 0] = 7
    info = raster_info(mask_path)
    write_raster(mask_path, mask, RasterProfile(info.crs, info.transform))
    with pytest.raises(DataError, match=rf"{record.name}\.tif: cloud mask values \[7\] are not cloud codes"):
        sample_cloud_cover(layout, record)
