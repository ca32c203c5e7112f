"""Ingest building blocks: pairing rules, asset resolution, L2A offsets, label tables, grids, co-registration.

The co-registration test puts point-like targets at known ground positions into a Sentinel-1 raster in
another UTM zone, shifted by a sub-pixel offset, and measures where they land on the 10 m output grid.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as transform_points
from rasterio.windows import Window
from scipy import ndimage

from cloudlulc import schema
from cloudlulc.errors import DataError, UsageError
from cloudlulc.ingest.assets import (
    S2_ASSET_KEYS,
    Asset,
    RetryPolicy,
    boa_offset_dn,
    s2_band_assets,
    sar_assets,
    with_retries,
)
from cloudlulc.ingest.coregister import GridReader, dn_to_uint16, scl_to_cloud_mask
from cloudlulc.ingest.grid import Grid, chips, grid_crs_for, snapped_grid, to_crs, utm_crs
from cloudlulc.ingest.labels import WORLDCOVER, load_table, lookup_array, remap
from cloudlulc.ingest.pairing import pair_acquisitions
from cloudlulc.ingest.stac import Acquisition, SearchResult, load_aoi, parse_bbox
from cloudlulc.io.rasters import RasterProfile, write_raster

T0 = datetime(2026, 6, 10, 10, 30, tzinfo=UTC)


def acquisition(
    item_id: str, mission: str, days: float, footprint: shapely.Geometry, **properties: object
) -> Acquisition:
    when = T0 + timedelta(days=days)
    item = pystac.Item(item_id, shapely.geometry.mapping(footprint), list(footprint.bounds), when, dict(properties))
    return Acquisition(item, mission, when, footprint)  # type: ignore[arg-type]


# --- pairing -------------------------------------------------------------------------------------


def test_pairing_prefers_full_coverage_then_the_closest_date_and_reports_the_unpaired() -> None:
    aoi = shapely.box(0, 0, 1, 1)
    s2 = acquisition("s2-a", "S2", 0, shapely.box(0, 0, 1, 1), **{"eo:cloud_cover": 40})
    lonely = acquisition("s2-b", "S2", 30, shapely.box(0, 0, 1, 1))
    far_away = acquisition("s2-c", "S2", 60, shapely.box(0, 0, 1, 1))
    partial_close = acquisition("s1-partial", "S1", -1, shapely.box(0, 0, 0.5, 1))
    full_later = acquisition("s1-full", "S1", 4, shapely.box(-1, -1, 2, 2))
    full_too_late = acquisition("s1-late", "S1", 7, shapely.box(-1, -1, 2, 2))
    elsewhere = acquisition("s1-elsewhere", "S1", 61, shapely.box(5, 5, 6, 6))
    found = SearchResult((s2, lonely, far_away), (partial_close, full_later, full_too_late, elsewhere))

    pairing = pair_acquisitions(found, aoi, window_days=6)

    assert [(p.s2.id, p.s1.id) for p in pairing.pairs] == [("s2-a", "s1-full")]
    assert pairing.pairs[0].gap_days == pytest.approx(-4.0)
    assert pairing.pairs[0].coverage == pytest.approx(1.0)
    reasons = {u.s2.id: u.reason for u in pairing.unpaired}
    assert "over the area of interest within +/- 6 days" in reasons["s2-b"]
    assert "overlaps" in reasons["s2-c"] and "s1-elsewhere" in reasons["s2-c"]


def test_pairing_takes_the_closest_partial_cover_when_no_acquisition_covers_fully() -> None:
    s2 = acquisition("s2", "S2", 0, shapely.box(0, 0, 1, 1))
    near = acquisition("near", "S1", 1, shapely.box(0, 0, 0.6, 1))
    far = acquisition("far", "S1", -5, shapely.box(0, 0, 0.9, 1))
    pairing = pair_acquisitions(SearchResult((s2,), (near, far)), shapely.box(0, 0, 1, 1), window_days=6)
    assert pairing.pairs[0].s1.id == "near"
    assert pairing.pairs[0].coverage == pytest.approx(0.6)


# --- areas of interest and grids -----------------------------------------------------------------


def test_aoi_from_geojson_and_bbox_with_clear_errors(tmp_path: Path) -> None:
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(shapely.box(2, 48, 3, 49))}
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    assert load_aoi(path).bounds == (2, 48, 3, 49)
    assert parse_bbox("2,48,3,49").bounds == (2, 48, 3, 49)
    with pytest.raises(UsageError, match="bbox") as refused:
        parse_bbox("3,48,2,49")
    assert refused.value.exit_code == 2
    (tmp_path / "empty.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(DataError, match=r"empty.geojson.*no geometry"):
        load_aoi(tmp_path / "empty.geojson")
    projected = {"type": "Polygon", "coordinates": [[[500000, 5e6], [501000, 5e6], [501000, 5.001e6], [500000, 5e6]]]}
    (tmp_path / "utm.geojson").write_text(json.dumps(projected))
    with pytest.raises(DataError, match="not lon/lat"):
        load_aoi(tmp_path / "utm.geojson")


def test_an_aoi_across_a_utm_zone_boundary_gets_its_dominant_zone() -> None:
    assert utm_crs(2.5, 45).to_epsg() == 32631
    assert utm_crs(3.5, -10).to_epsg() == 32731
    across = shapely.box(5.0, 45.0, 6.4, 45.2)  # zones 31 and 32 meet at 6 degrees east
    assert grid_crs_for(across).to_epsg() == 32631
    assert grid_crs_for(shapely.box(5.8, 45.0, 7.0, 45.2)).to_epsg() == 32632
    assert grid_crs_for(shapely.box(5.8, -45.2, 7.0, -45.0)).to_epsg() == 32732  # south of the equator
    # an L whose centroid lies in zone 31 but whose area lies mostly in zone 32
    ell = shapely.union_all([shapely.box(0.0, 45.0, 6.0, 45.5), shapely.box(6.0, 45.0, 7.0, 49.0)])
    assert utm_crs(ell.centroid.x, ell.centroid.y).to_epsg() == 32631 and grid_crs_for(ell).to_epsg() == 32632
    wide = shapely.union_all([shapely.box(0.5, 45.0, 5.9, 46.0), shapely.box(5.9, 45.0, 6.6, 45.1)])
    assert grid_crs_for(wide).to_epsg() == 32631
    grid = snapped_grid(to_crs(across, grid_crs_for(across)), CRS.from_epsg(32631), 5120.0)
    assert grid.transform.c % 5120 == 0 and grid.transform.f % 5120 == 0 and grid.transform.a == 10.0
    lattice = list(chips(grid, 512))
    assert len(lattice) == (grid.width // 512) * (grid.height // 512)
    assert len({(c.column, c.row) for c in lattice}) == len(lattice)


# --- assets and offsets --------------------------------------------------------------------------


def s2_item(keys: dict[str, tuple[str, int]], **properties: object) -> pystac.Item:
    item = pystac.Item("S2B_31UFS_20260610_0_L2A", None, None, T0, dict(properties))
    for key, (band, gsd) in keys.items():
        extra = {"eo:bands": [{"name": band}], "gsd": gsd} if band else {}
        item.add_asset(
            key, pystac.Asset(f"https://example.org/{key}.tif", media_type=pystac.MediaType.COG, extra_fields=extra)
        )
    return item


def test_bands_are_found_by_eo_name_at_the_finest_resolution_and_missing_bands_are_named() -> None:
    cdse = {f"{b}_{r}m": (b, r) for b in schema.S2_BANDS for r in (10, 20, 60) if r >= schema.S2_BAND_RESOLUTION_M[b]}
    assets = s2_band_assets(s2_item(cdse))
    assert {band: a.key for band, a in assets.items()}["B05"] == "B05_20m"
    assert assets["B02"].key == "B02_10m"
    item = s2_item({})  # Earth Search keys without eo:bands, B8A (nir08) missing
    for band in schema.S2_BANDS:
        if band != "B8A":
            item.add_asset(S2_ASSET_KEYS[band][0], pystac.Asset(f"s3://b/{band}.tif", media_type=pystac.MediaType.COG))
    with pytest.raises(DataError, match=r"S2B_31UFS_20260610_0_L2A has no GeoTIFF asset for band\(s\) B8A .*nir08"):
        s2_band_assets(item)


def test_l2a_offset_follows_the_item_metadata() -> None:
    with_raster_offset = Asset("i", "red", "x", {"scale": 0.0001, "offset": -0.1})
    plain = Asset("i", "red", "x", {})
    assert boa_offset_dn(s2_item({}, **{"s2:processing_baseline": "05.10"}), with_raster_offset) == -1000
    assert boa_offset_dn(s2_item({}, **{"earthsearch:boa_offset_applied": True}), with_raster_offset) == 0
    assert boa_offset_dn(s2_item({}, **{"s2:processing_baseline": "04.00"}), plain) == -1000
    assert boa_offset_dn(s2_item({}, **{"s2:processing_baseline": "03.01"}), plain) == 0
    assert boa_offset_dn(s2_item({}), plain) == 0


def test_sar_item_without_vh_is_refused_by_name() -> None:
    item = pystac.Item("S1A_X", None, None, T0, {})
    item.add_asset("vv", pystac.Asset("s3://b/vv.tif"))
    with pytest.raises(DataError, match="S1A_X has no VH asset"):
        sar_assets(item)


def test_retries_back_off_then_name_what_failed() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("connection reset")
        return "ok"

    assert with_retries(flaky, "item X asset 'red'", RetryPolicy(attempts=3, first_delay_s=0.01)) == "ok"
    calls.clear()
    with pytest.raises(DataError, match=r"item X asset 'red'.*unreachable after 2 attempts.*connection reset"):
        with_retries(lambda: flaky() and flaky() and flaky(), "item X asset 'red'", RetryPolicy(2, 0.01))


# --- labels --------------------------------------------------------------------------------------


def test_label_tables_builtin_and_csv(tmp_path: Path) -> None:
    lookup = lookup_array(load_table("worldcover"))
    assert remap(np.array([10, 80, 50, 0, 70, 123]), lookup).tolist() == [1, 0, 4, 255, 255, 255]
    table = tmp_path / "table.csv"
    table.write_text("source,target\n1,0\n2,5\n")
    assert load_table(str(table)) == {1: 0, 2: 5}
    table.write_text("1,9\n")
    with pytest.raises(DataError, match=r"table.csv:1.*not a class id"):
        load_table(str(table))
    with pytest.raises(DataError, match="label table not found"):
        load_table("corine")


def test_real_worldcover_window_is_remapped_onto_a_utm_10m_grid(realdata: Path) -> None:
    source = next((realdata / "worldcover").glob("*.tif"))
    with rasterio.open(source) as dataset:
        codes = dataset.read(1)
        bounds = dataset.bounds
    area = shapely.box(*bounds)
    crs = grid_crs_for(area)
    grid = snapped_grid(to_crs(area, crs).buffer(-200), crs, 10.0)
    with GridReader(grid, RetryPolicy(attempts=1)) as reader:
        view = reader.open(Asset("label source", "label", str(source), {}), "categorical")
        labels = remap(view.read(Window(0, 0, grid.width, grid.height)), lookup_array(WORLDCOVER))
    assert crs.to_epsg() == 32632  # Sao Tome, 6.5 degrees east
    expected = {WORLDCOVER[c]: np.mean(codes == c) for c in (10, 80, 50)}
    for class_id, share in expected.items():
        assert np.mean(labels == class_id) == pytest.approx(share, abs=0.03)


# --- co-registration -----------------------------------------------------------------------------

TARGETS_M = [(300.0, 300.0), (700.0, 250.0), (520.0, 760.0), (250.0, 820.0)]
"""Target offsets (east, south) in metres from the optical grid origin."""
ORIGIN = (500_000.0, 5_000_000.0)
SIGMA_M = 18.0


def _blobs_at(xs: np.ndarray, ys: np.ndarray, centres: list[tuple[float, float]], sigma: float = SIGMA_M) -> np.ndarray:
    field = np.full(xs.shape, 0.01, np.float64)
    for cx, cy in centres:
        field += 0.5 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    return field


def _target_centres(targets: list[tuple[float, float]] = TARGETS_M) -> list[tuple[float, float]]:
    return [(ORIGIN[0] + east, ORIGIN[1] - south) for east, south in targets]


def _write_sar(path: Path, crs: CRS, shift: tuple[float, float], pixel: float, units: str) -> None:
    """Targets at their true ground positions, sampled on a grid in ``crs`` shifted by a sub-pixel offset."""
    corners_x, corners_y = transform_points(
        "EPSG:32631", crs, [ORIGIN[0], ORIGIN[0] + 1000], [ORIGIN[1], ORIGIN[1] - 1000]
    )
    left = np.floor(min(corners_x) / pixel) * pixel - 200 + shift[0]
    top = np.ceil(max(corners_y) / pixel) * pixel + 200 + shift[1]
    size = int(1500 / pixel)
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    xs, ys = left + cols * pixel, top - rows * pixel
    xs31, ys31 = transform_points(crs, "EPSG:32631", xs.ravel(), ys.ravel())
    power = _blobs_at(np.array(xs31).reshape(xs.shape), np.array(ys31).reshape(ys.shape), _target_centres())
    values = 10 * np.log10(power) if units == "db" else power
    profile = RasterProfile(crs, Affine(pixel, 0, left, 0, -pixel, top), float("nan"), ("VV",))
    write_raster(str(path), values.astype(np.float32), profile)


def _centroid_errors_px(
    image: np.ndarray, grid: Grid, centres: list[tuple[float, float]] | None = None, half: int = 6
) -> list[float]:
    """Distance in pixels between each target's true position and the centroid of its blob on the grid."""
    errors = []
    inverse = ~grid.transform
    for x, y in centres or _target_centres():
        col, row = inverse @ (x, y)
        r0, c0 = round(row), round(col)
        patch = image[r0 - half : r0 + half + 1, c0 - half : c0 + half + 1] - 0.01
        cy, cx = ndimage.center_of_mass(np.clip(patch, 0, None))
        errors.append(float(np.hypot(r0 - half + cy + 0.5 - row, c0 - half + cx + 0.5 - col)))
    return errors


@pytest.mark.parametrize(
    ("epsg", "shift", "pixel", "units"),
    [(32632, (3.7, -2.3), 10.0, "linear"), (32632, (-6.1, 4.4), 10.0, "db"), (32631, (4.0, 7.5), 20.0, "linear")],
)
def test_sar_in_another_crs_with_a_subpixel_offset_lands_on_the_optical_grid(
    tmp_path: Path, epsg: int, shift: tuple[float, float], pixel: float, units: str
) -> None:
    sar_path = tmp_path / "vv.tif"
    _write_sar(sar_path, CRS.from_epsg(epsg), shift, pixel, units)
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), 100, 100)
    with GridReader(grid, RetryPolicy(attempts=1)) as reader:
        power = reader.open(Asset("S1A_TEST", "vv", str(sar_path), {"unit": units}), "sar").read(Window(0, 0, 100, 100))
    errors = _centroid_errors_px(power, grid)
    assert max(errors) < 0.1, f"alignment errors in pixels: {errors}"
    background = power[:10, :10]
    assert np.allclose(background, 0.01, rtol=0.02)  # linear power, whatever the file stored


def test_a_sar_asset_whose_declared_unit_contradicts_its_values_is_refused(tmp_path: Path) -> None:
    sar_path = tmp_path / "vv.tif"
    _write_sar(sar_path, CRS.from_epsg(32631), (0.0, 0.0), 10.0, "linear")
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), 100, 100)
    with GridReader(grid, RetryPolicy(attempts=1)) as reader, pytest.raises(DataError) as refused:
        reader.open(Asset("S1A_TEST", "vv", str(sar_path), {"unit": "dB"}), "sar")
    assert "declares sigma0 in dB but its values" in str(refused.value) and "vv.tif" in str(refused.value)


@pytest.mark.parametrize(("pixel", "sigma", "half"), [(20, SIGMA_M, 6), (60, 45.0, 18)])
def test_20m_and_60m_bands_land_on_the_10m_grid(tmp_path: Path, pixel: int, sigma: float, half: int) -> None:
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), 100, 100)
    centres = _target_centres([(300.0, 300.0), (720.0, 720.0)]) if pixel == 60 else _target_centres()
    size = 1200 // pixel
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    field = _blobs_at(ORIGIN[0] + cols * pixel, ORIGIN[1] - rows * pixel, centres, sigma)
    path = tmp_path / f"b{pixel}.tif"
    profile = RasterProfile(CRS.from_epsg(32631), Affine(pixel, 0, ORIGIN[0], 0, -pixel, ORIGIN[1]), 0)
    write_raster(str(path), (field * 10_000).astype(np.uint16), profile)
    with GridReader(grid, RetryPolicy(attempts=1)) as reader:
        view = reader.open(Asset("S2", f"b{pixel}", str(path), {"nodata": 0}), "reflectance")
        dn = view.read(Window(0, 0, 100, 100))
    errors = _centroid_errors_px(dn / 10_000, grid, centres, half)
    assert max(errors) < 0.2, f"alignment errors in pixels: {errors}"


# --- real Sentinel files -------------------------------------------------------------------------


def test_real_bigearthnet_bands_at_three_resolutions_and_sar_in_db_stack_on_10m(realdata: Path, tmp_path: Path) -> None:
    s2_dir = next(p for p in (realdata / "bigearthnet" / "S2").iterdir() if p.is_dir())
    s1_dir = next(p for p in (realdata / "bigearthnet" / "S1").iterdir() if s2_dir.name[-5:] in p.name)
    b02 = next(s2_dir.glob("*_B02.tif"))
    with rasterio.open(b02) as reference:
        grid = Grid(reference.crs, reference.transform, reference.width, reference.height)
        truth = reference.read(1)
    window = Window(0, 0, grid.width, grid.height)
    with GridReader(grid, RetryPolicy(attempts=1)) as reader:
        bands = {
            b: reader.open(Asset("S2", b, str(next(s2_dir.glob(f"*_{b}.tif"))), {}), "reflectance")
            for b in schema.S2_BANDS
        }
        stack = np.stack([bands[b].read(window) for b in schema.S2_BANDS])
        vv_path = next(s1_dir.glob("*_VV.tif"))
        vv_power = reader.open(Asset("S1", "vv", str(vv_path), {}), "sar").read(window)
    assert stack.shape == (12, 120, 120) and np.isfinite(stack).all()
    assert np.array_equal(dn_to_uint16(stack[1]), truth)  # a band on the grid passes through unchanged
    with rasterio.open(vv_path) as sar:
        assert np.allclose(schema.linear_to_db(vv_power), sar.read(1), atol=1e-3)  # dB detected, round trip exact


def test_scl_codes_become_cloud_mask_codes() -> None:
    scl = np.array([0, 3, 4, 8, 9, 10, 11], np.uint8)
    assert scl_to_cloud_mask(scl).tolist() == [0, 3, 0, 2, 2, 1, 0]


def test_uint16_sar_is_refused_as_uncalibrated(tmp_path: Path) -> None:
    path = tmp_path / "vv.tif"
    write_raster(
        str(path),
        np.full((32, 32), 300, np.uint16),
        RasterProfile(CRS.from_epsg(32631), Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])),
    )
    grid = Grid(CRS.from_epsg(32631), Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]), 32, 32)
    with (
        GridReader(grid, RetryPolicy(attempts=1)) as reader,
        pytest.raises(DataError, match=r"S1A_GRD asset 'vv'.*uint16 digital numbers, not calibrated"),
    ):
        reader.open(Asset("S1A_GRD", "vv", str(path), {}), "sar")


def test_corrupt_asset_is_named(tmp_path: Path, realdata: Path) -> None:
    source = next((realdata / "bigearthnet" / "S2").glob("*/*_B02.tif"))
    broken = tmp_path / "B02.tif"
    shutil.copy(source, broken)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with rasterio.open(source) as reference:
        grid = Grid(reference.crs, reference.transform, reference.width, reference.height)
    with (
        GridReader(grid, RetryPolicy(attempts=1)) as reader,
        pytest.raises(DataError, match=r"S2X asset 'blue'.*B02.tif"),
    ):
        reader.open(Asset("S2X", "blue", str(broken), {}), "reflectance").read(Window(0, 0, 120, 120))
