from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from cloudlulc.errors import DataError
from cloudlulc.io.rasters import (
    OPEN_PROBLEM,
    RasterProfile,
    check_same_grid,
    gdal_errors,
    open_raster,
    raster_info,
    read_raster,
    read_window,
    validate_cog,
    write_raster,
)

UTM = CRS.from_epsg(32633)
GRID = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0)


def _array(bands: int = 3, size: int = 300, dtype=np.uint16) -> np.ndarray:
    return np.arange(bands * size * size, dtype=np.int64).reshape(bands, size, size).astype(dtype)


def test_geotiff_round_trip_keeps_grid_nodata_tags_and_windows(tmp_path: Path):
    path = str(tmp_path / "a.tif")
    data = _array()
    profile = RasterProfile(
        UTM,
        GRID,
        nodata=0,
        descriptions=("B02", "B03", "B04"),
        tags={"K": "v"},
        band_tags=[{"BOA_ADD_OFFSET": "-1000"}] * 3,
    )
    write_raster(path, data, profile)
    info = raster_info(path)
    assert (info.count, info.shape, info.dtype, info.nodata) == (3, (300, 300), "uint16", 0)
    assert info.crs == UTM and info.transform == GRID
    assert info.descriptions == ("B02", "B03", "B04") and info.tags["K"] == "v"
    np.testing.assert_array_equal(read_raster(path), data)
    window = Window(col_off=10, row_off=20, width=30, height=40)
    np.testing.assert_array_equal(read_raster(path, window, indexes=[2]), data[1:2, 20:60, 10:40])
    with open_raster(path) as dataset:
        assert dataset.tags(1)["BOA_ADD_OFFSET"] == "-1000"


def test_cog_output_is_a_valid_cloud_optimized_geotiff(tmp_path: Path):
    path = str(tmp_path / "map.tif")
    labels = (np.indices((1024, 1024)).sum(axis=0) // 100 % 6).astype(np.uint8)
    write_raster(path, labels, RasterProfile(UTM, GRID, nodata=255, colormap={0: (255, 0, 0, 255)}), cog=True)
    assert validate_cog(path) == []
    with open_raster(path) as dataset:
        assert dataset.overviews(1), "a COG of this size carries overviews"
        assert dataset.colormap(1)[0] == (255, 0, 0, 255)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]


def test_plain_geotiff_is_not_reported_as_cog(tmp_path: Path):
    path = str(tmp_path / "plain.tif")
    write_raster(path, _array(1, 1024, np.uint8), RasterProfile(UTM, GRID, compress="none"))
    assert validate_cog(path)


def test_corrupt_and_truncated_files_are_named(tmp_path: Path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"this is not a tiff" * 10)
    with pytest.raises(DataError, match=r"garbage\.tif"):
        raster_info(str(garbage))
    good = tmp_path / "good.tif"
    write_raster(
        str(good), np.random.default_rng(0).integers(0, 9999, (4, 512, 512), dtype=np.uint16), RasterProfile(UTM, GRID)
    )
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated.tif.*(truncated or corrupt|cannot open)"):
        read_raster(str(truncated))
    with pytest.raises(DataError, match="file not found"):
        raster_info(str(tmp_path / "absent.tif"))


def test_grid_check_names_the_mismatching_file(tmp_path: Path):
    a, b, c = (str(tmp_path / f"{n}.tif") for n in "abc")
    write_raster(a, _array(1, 64), RasterProfile(UTM, GRID))
    write_raster(b, _array(1, 64), RasterProfile(CRS.from_epsg(32634), GRID))
    write_raster(c, _array(1, 64), RasterProfile(UTM, GRID @ Affine.translation(1, 0)))
    with pytest.raises(DataError, match=r"b.tif: CRS EPSG:32634 differs from EPSG:32633"):
        check_same_grid(raster_info(a), raster_info(b))
    with pytest.raises(DataError, match=r"c.tif: transform"):
        check_same_grid(raster_info(a), raster_info(c))
    check_same_grid(raster_info(a), raster_info(a))


def test_s3_geotiff_round_trip(s3_bucket: str):
    uri = f"s3://{s3_bucket}/rasters/a.tif"
    data = _array(2, 128, np.float32)
    write_raster(uri, data, RasterProfile(UTM, GRID, nodata=float("nan")))
    np.testing.assert_array_equal(read_raster(uri, Window(0, 0, 16, 16)), data[:, :16, :16])
    assert raster_info(uri).crs == UTM


def test_real_bigearthnet_bands_read_with_their_native_resolution(realdata: Path):
    patch = next((realdata / "bigearthnet" / "S2").iterdir())
    b02 = raster_info(str(next(patch.glob("*_B02.tif"))))
    b05 = raster_info(str(next(patch.glob("*_B05.tif"))))
    b01 = raster_info(str(next(patch.glob("*_B01.tif"))))
    assert (b02.shape, b05.shape, b01.shape) == ((120, 120), (60, 60), (20, 20))
    assert b02.dtype == "uint16" and b02.nodata is None
    assert b02.crs is not None and b02.crs.to_epsg() in {32629, 32633, 32635}
    with open_raster(b02.path) as dataset:
        values = read_window(dataset)
    assert 0 < np.median(values) < 10000


def test_real_sen12ms_cr_l1c_has_13_bands(realdata: Path):
    s2 = raster_info(str(realdata / "sen12ms-cr" / "ROIs1868_summer_s2_cloudy_19_p30.tif"))
    s1 = raster_info(str(realdata / "sen12ms-cr" / "ROIs1868_summer_s1_19_p30.tif"))
    assert (s2.count, s1.count) == (13, 2)
    assert s2.crs == s1.crs and s2.transform.almost_equals(s1.transform)


def test_gdal_errors_name_the_source_with_the_readers_wording(tmp_path: Path):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    opened = r"^item asset 'red': cannot open as a raster \(not a GeoTIFF or corrupt header\)$"
    with pytest.raises(DataError, match=opened), gdal_errors("item asset 'red'", OPEN_PROBLEM):
        rasterio.open(broken)
    read = r"^x.tif: cannot read pixels, file truncated or corrupt \(file not found\)$"
    with pytest.raises(DataError, match=read), gdal_errors("x.tif"):
        rasterio.open(tmp_path / "missing.tif")
