import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cloudlulc import schema
from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.data.layout import DatasetLayout
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import RasterProfile, raster_info, read_raster, write_raster


def test_sample_tensors_shapes_and_ranges(synthetic_master: Path):
    dataset = CloudLULCDataset(str(synthetic_master), "train", return_clear=True, return_cloud_mask=True)
    sample = dataset[0]
    assert sample["optical"].shape == (12, 64, 64) and sample["optical"].dtype == torch.float32
    assert sample["sar"].shape == (2, 64, 64) and sample["label"].dtype == torch.int64
    assert sample["clear"].shape == (12, 64, 64) and sample["cloud_mask"].shape == (64, 64)
    for key in ("optical", "sar", "clear"):
        assert float(sample[key].min()) >= 0.0 and float(sample[key].max()) <= 1.0
    assert set(sample["label"].unique().tolist()) <= set(range(6))
    assert isinstance(sample["name"], str)


def test_scaling_matches_the_contract(synthetic_master: Path):
    dataset = CloudLULCDataset(str(synthetic_master), "test")
    record = dataset.records[0]
    sample = dataset[0]
    dn = read_raster(dataset.layout.uri(record.opt_cloudy))
    np.testing.assert_allclose(sample["optical"].numpy(), schema.s2_dn_to_reflectance(dn, -1000), atol=1e-6)
    vh = read_raster(dataset.layout.uri(record.sar_vh))[0]
    np.testing.assert_allclose(sample["sar"][1].numpy(), schema.scale_sar_db(vh, "VH"), atol=1e-6)


def test_evaluation_path_is_deterministic_and_crops_centre(synthetic_master: Path):
    dataset = CloudLULCDataset(str(synthetic_master), "val", crop_size=32)
    first, second = dataset[0], dataset[0]
    assert torch.equal(first["optical"], second["optical"]) and first["optical"].shape == (12, 32, 32)
    full = CloudLULCDataset(str(synthetic_master), "val")[0]
    assert torch.equal(first["label"], full["label"][16:48, 16:48])


def test_augmentation_moves_all_arrays_together(synthetic_master: Path):
    torch.manual_seed(0)
    plain = CloudLULCDataset(str(synthetic_master), "train", return_cloud_mask=True)[1]
    augmented_set = CloudLULCDataset(str(synthetic_master), "train", augment=True, crop_size=64, return_cloud_mask=True)
    seen = set()
    for _ in range(12):
        sample = augmented_set[1]
        matches = [
            (turns, flip)
            for turns in range(4)
            for flip in (False, True)
            if all(
                torch.equal(sample[key], _transform(plain[key], turns, flip))
                for key in ("optical", "sar", "label", "cloud_mask")
            )
        ]
        assert matches, "optical, SAR, label and mask must get the same flip/rotation"
        seen.add(matches[0])
    assert len(seen) > 2, "augmentation varies"


def _transform(tensor: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    out = torch.rot90(tensor, turns, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if flip else out


def test_random_crops_read_windows(synthetic_master: Path):
    dataset = CloudLULCDataset(str(synthetic_master), "train", crop_size=24, augment=True)
    shapes = {tuple(dataset[i % len(dataset)]["optical"].shape) for i in range(5)}
    assert shapes == {(12, 24, 24)}
    with pytest.raises(DataError, match=r"synth_\d+\.tif: patch is 64 x 64 pixels, smaller than the crop of 100"):
        CloudLULCDataset(str(synthetic_master), "train", crop_size=100)[0]


def test_dataloader_with_workers(synthetic_master: Path):
    dataset = CloudLULCDataset(str(synthetic_master), ("train", "val"), crop_size=32, augment=True)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=True)
    batches = list(loader)
    assert sum(len(b["name"]) for b in batches) == len(dataset)
    assert batches[0]["optical"].shape == (4, 12, 32, 32)


def test_exclude_skips_quarantined_samples(synthetic_master: Path):
    everything = CloudLULCDataset(str(synthetic_master), ("train", "val", "test"))
    names = [r.name for r in everything.records]
    subset = CloudLULCDataset(str(synthetic_master), ("train", "val", "test"), exclude=names[:3])
    assert len(subset) == len(everything) - 3


def _rewrite(path: str, array: np.ndarray, **changes) -> None:
    info = raster_info(path)
    profile = RasterProfile(changes.get("crs", info.crs), info.transform, nodata=info.nodata)
    write_raster(path, array, profile)


def test_wrong_band_count_crs_mismatch_and_bad_labels_name_the_file(dataset_copy: Path):
    from rasterio.crs import CRS

    layout = DatasetLayout(str(dataset_copy))
    records = {r.name: r for r in layout.read_records(("train",))}
    names = sorted(records)
    dataset = CloudLULCDataset(str(dataset_copy), "train")
    position = {r.name: i for i, r in enumerate(dataset.records)}

    optical = layout.uri(records[names[0]].opt_cloudy)
    _rewrite(optical, read_raster(optical)[:11])
    with pytest.raises(DataError, match=rf"{names[0]}.tif: Opt_S2_cloudy must have 12 band\(s\), found 11"):
        dataset[position[names[0]]]

    vv = layout.uri(records[names[1]].sar_vv)
    _rewrite(vv, read_raster(vv), crs=CRS.from_epsg(4326))
    with pytest.raises(DataError, match=rf"SAR_S1/VV/{names[1]}.tif: CRS EPSG:4326 differs"):
        dataset[position[names[1]]]

    label = layout.uri(records[names[2]].label)
    values = read_raster(label)
    values[0, :2, :2] = 9
    _rewrite(label, values)
    with pytest.raises(DataError, match=rf"Label/{names[2]}.tif: label values \[9\] are outside"):
        dataset[position[names[2]]]


def test_nan_sar_pixels_become_zero(dataset_copy: Path):
    layout = DatasetLayout(str(dataset_copy))
    record = layout.read_records(("test",))[0]
    vv = layout.uri(record.sar_vv)
    values = read_raster(vv)
    values[0, :8, :8] = np.nan
    _rewrite(vv, values)
    sample = CloudLULCDataset(str(dataset_copy), "test")[0]
    assert torch.isfinite(sample["sar"]).all() and float(sample["sar"][0, :8, :8].abs().max()) == 0.0


def test_dataset_over_s3(s3_bucket: str, synthetic_master: Path, tmp_path: Path):
    from cloudlulc.io.storage import open_storage

    storage = open_storage(f"s3://{s3_bucket}/set")
    for path in synthetic_master.rglob("*"):
        if path.is_file():
            storage.upload_file(path, path.relative_to(synthetic_master).as_posix())
    remote = CloudLULCDataset(f"s3://{s3_bucket}/set", "test")
    local = CloudLULCDataset(str(synthetic_master), "test")
    assert torch.equal(remote[0]["optical"], local[0]["optical"])
    shutil.rmtree(tmp_path, ignore_errors=True)
