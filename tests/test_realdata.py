"""Readers, dataset and validation on real Sentinel-1/2 files (BigEarthNet, SEN12MS-CR)."""

import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from cloudlulc import schema
from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.data.layout import DatasetLayout, standard_record
from cloudlulc.io.rasters import RasterProfile, raster_info, write_raster
from cloudlulc.validation import validate_dataset


def _stack_bigearthnet(patch: Path) -> tuple[np.ndarray, RasterProfile]:
    """12 bands on the 10 m grid of B02 (bilinear for 20 m / 60 m bands), as the contract orders them."""
    reference = raster_info(str(next(patch.glob("*_B02.tif"))))
    bands = []
    for band in schema.S2_BANDS:
        with rasterio.open(next(patch.glob(f"*_{band}.tif"))) as dataset:
            bands.append(dataset.read(1, out_shape=reference.shape, resampling=Resampling.bilinear))
    profile = RasterProfile(reference.crs, reference.transform, nodata=0, descriptions=schema.S2_BANDS)
    return np.stack(bands), profile


def _real_set(realdata: Path, root: Path) -> DatasetLayout:
    layout = DatasetLayout(str(root))
    records = []
    for s2_patch in sorted((realdata / "bigearthnet" / "S2").iterdir()):
        suffix = "_".join(s2_patch.name.split("_")[-2:])
        s1_patch = next(p for p in (realdata / "bigearthnet" / "S1").iterdir() if p.name.endswith(suffix))
        optical, profile = _stack_bigearthnet(s2_patch)
        record = standard_record(s2_patch.name, "test")
        write_raster(layout.uri(record.opt_cloudy), optical, profile)
        write_raster(layout.uri(record.opt_clear), optical, profile)
        for pol, target in (("VV", record.sar_vv), ("VH", record.sar_vh)):
            Path(layout.uri(target)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(next(s1_patch.glob(f"*_{pol}.tif")), layout.uri(target))
        no_label = np.full(optical.shape[1:], schema.IGNORE_INDEX, np.uint8)
        write_raster(layout.uri(record.label), no_label, RasterProfile(profile.crs, profile.transform, nodata=255))
        records.append(record)
    layout.write_splits(records)
    return layout


def test_real_bigearthnet_pairs_pass_validation_and_load(realdata: Path, tmp_path: Path):
    layout = _real_set(realdata, tmp_path / "real")
    report = validate_dataset(layout.root, progress=False)
    assert report.success, report.failures
    assert report.sample_count == 6
    dataset = CloudLULCDataset(layout.root, "test")
    sample = dataset[0]
    assert sample["optical"].shape == (12, 120, 120) and sample["sar"].shape == (2, 120, 120)
    assert 0.0 < float(sample["optical"].mean()) < 0.6
    assert 0.1 < float(sample["sar"].mean()) < 0.9, "real dB values land inside the scaled range"


def test_real_l1c_13_band_file_is_rejected_by_name(realdata: Path, tmp_path: Path):
    layout = _real_set(realdata, tmp_path / "real")
    victim = layout.read_records()[2]
    shutil.copy(realdata / "sen12ms-cr" / "ROIs1868_summer_s2_cloudy_19_p30.tif", layout.uri(victim.opt_cloudy))
    report = validate_dataset(layout.root, progress=False)
    rules = {(f.sample, f.rule) for f in report.failures}
    assert (victim.name, "optical.band_count") in rules
    assert {sample for sample, _ in rules} == {victim.name}
