"""Regional products: best-observation mosaic, GIS-readable classes, geodesic areas, change, agreement."""

from __future__ import annotations

import ctypes
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_geom
from shapely.geometry import mapping, shape

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.ingest.labels import load_table, lookup_array, remap
from cloudlulc.io.rasters import validate_cog
from cloudlulc.products.agreement import agreement
from cloudlulc.products.areas import product_areas
from cloudlulc.products.change import change_code, change_map
from cloudlulc.products.model import OPTICS_CODES
from cloudlulc.products.mosaic import EXACT, MappedScene, mosaic
from cloudlulc.products.region import region_grid
from cloudlulc.products.style import category_names, write_qgis_style

UTM31 = CRS.from_epsg(32631)
LEFT, TOP = 600_000.0, 5_000_000.0
ROWS = 96
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _write(path: Path, array: np.ndarray, col_off: int, nodata: int | None, crs: CRS = UTM31) -> str:
    """A small tiled GeoTIFF whose first column lies ``col_off`` pixels east of the common origin."""
    bands = array if array.ndim == 3 else array[None]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=bands.shape[2],
        height=bands.shape[1],
        count=bands.shape[0],
        dtype=bands.dtype,
        crs=crs,
        transform=Affine(10, 0, LEFT + 10 * col_off, 0, -10, TOP),
        nodata=nodata,
    ) as dataset:
        dataset.write(bands)
    return str(path)


def _scene(
    folder: Path, code: int, col_off: int, width: int, klass: int, confidence: int, *, cloudy_cols=(), optics=True
) -> MappedScene:
    """A mapped scene of one class at one confidence; ``cloudy_cols`` (scene columns) flagged opaque cloud."""
    name = f"scene{code}"
    classes = _write(folder / f"{name}.tif", np.full((ROWS, width), klass, np.uint8), col_off, 255)
    scores = _write(folder / f"{name}_conf.tif", np.full((ROWS, width), confidence, np.uint8), col_off, 0)
    mask = np.zeros((ROWS, width), np.uint8)
    mask[:, list(cloudy_cols)] = schema.CLOUD_OPAQUE
    cloud = _write(folder / f"{name}_cloud.tif", mask, col_off, None)
    optical = _write(folder / f"{name}_s2.tif", np.full((12, ROWS, width), 900, np.uint16), col_off, 0)
    return MappedScene(code, classes, scores, optical if optics else None, cloud if optics else None)


def _aoi(folder: Path, col_range: tuple[int, int], *features: tuple[int, int]) -> str:
    """A GeoJSON AOI (WGS84) over the given column ranges of the common grid, all rows."""
    boxes = [col_range, *features] if not features else list(features)
    collection = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": transform_geom(
                    UTM31,
                    "EPSG:4326",
                    mapping(shapely.box(LEFT + 10 * start, TOP - 10 * ROWS, LEFT + 10 * stop, TOP)),
                    precision=-1,
                ),
            }
            for start, stop in boxes
        ],
    }
    path = folder / "aoi.geojson"
    path.write_text(json.dumps(collection))
    return str(path)


def _outputs(folder: Path, name: str = "product") -> dict[str, str]:
    return {role: str(folder / f"{name}_{role}.tif") for role in ("classes", "confidence", "source")}


def _read(uri: str, band: int = 1) -> np.ndarray:
    with rasterio.open(uri) as dataset:
        return dataset.read(band)


def _gdalinfo(path: str) -> dict:
    """``gdalinfo -json`` of a file, run by the libgdal rasterio is built on (what GIS tools see)."""
    gdal = ctypes.CDLL(next(Path(rasterio.__file__).parent.parent.glob("rasterio.libs/libgdal*.so*")).as_posix())
    gdal.GDALAllRegister()
    gdal.GDALOpen.restype, gdal.GDALOpen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    gdal.GDALInfoOptionsNew.restype = ctypes.c_void_p
    gdal.GDALInfoOptionsNew.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p]
    gdal.GDALInfoOptionsFree.argtypes = [ctypes.c_void_p]
    gdal.GDALInfo.restype, gdal.GDALInfo.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p]
    gdal.GDALClose.argtypes = [ctypes.c_void_p]
    gdal.VSIFree.argtypes = [ctypes.c_void_p]
    options = gdal.GDALInfoOptionsNew((ctypes.c_char_p * 2)(b"-json", None), None)
    handle = gdal.GDALOpen(path.encode(), 0)
    assert handle, f"GDAL cannot open {path}"
    try:
        text = gdal.GDALInfo(handle, options)
        document = json.loads(ctypes.string_at(text).decode())
        gdal.VSIFree(text)
        return document
    finally:
        gdal.GDALClose(handle)
        gdal.GDALInfoOptionsFree(options)


@pytest.fixture
def two_scenes(tmp_path: Path) -> list[MappedScene]:
    """Scene 1 (cols 0-199, class 1, confidence 200, cloudy in cols 150-199) and scene 2 (cols 100-299, class 2,
    confidence 150, clear)."""
    return [_scene(tmp_path, 1, 0, 200, 1, 200, cloudy_cols=range(150, 200)), _scene(tmp_path, 2, 100, 200, 2, 150)]


def test_each_pixel_takes_clear_optics_first_then_the_most_confident_scene(two_scenes, tmp_path: Path):
    region = region_grid(_aoi(tmp_path, (50, 250)))
    assert region.epsg == 32631 and region.grid.transform.a == 10.0
    outputs = _outputs(tmp_path)
    stats = mosaic(two_scenes, region, outputs)
    offset = round((region.grid.transform.c - LEFT) / 10)  # the product grid's first column on the common grid
    row = ROWS // 2 - round((TOP - region.grid.transform.f) / 10)
    classes, scene, optics = _read(outputs["classes"]), _read(outputs["source"], 1), _read(outputs["source"], 2)
    confidence = _read(outputs["confidence"])

    def at(col: int) -> tuple[int, int, int, int]:
        c = col - offset
        return int(classes[row, c]), int(confidence[row, c]), int(scene[row, c]), int(optics[row, c])

    clear, cloudy = OPTICS_CODES["clear"], OPTICS_CODES["cloudy"]
    assert at(60) == (1, 200, 1, clear)  # scene 1 alone
    assert at(120) == (1, 200, 1, clear)  # both clear: the more confident wins
    assert at(170) == (2, 150, 2, clear)  # scene 1 is cloudy there: clear optics win over confidence
    assert at(240) == (2, 150, 2, clear)  # scene 2 alone
    assert classes[row, : max(0, 45 - offset)].tolist() == [schema.IGNORE_INDEX] * max(0, 45 - offset)
    assert stats.decided_pixels[1] + stats.decided_pixels[2] == stats.mapped_pixels
    assert stats.cloud_cover[1] == pytest.approx(50 / 150 * 100, abs=2)  # cols 150-199 of its 50-199 in the AOI
    assert stats.cloud_cover[2] == 0
    for uri in outputs.values():
        assert validate_cog(uri) == [], uri
    assert not (optics == cloudy).any()  # a cloudy pixel is only kept where no clear scene sees it


def test_sar_only_evidence_fills_only_where_no_scene_has_optics(tmp_path: Path):
    scenes = [
        _scene(tmp_path, 1, 0, 200, 1, 100, cloudy_cols=range(0, 200)),
        _scene(tmp_path, 2, 0, 300, 3, 255, optics=False),
    ]
    outputs = _outputs(tmp_path)
    mosaic(scenes, region_grid(_aoi(tmp_path, (0, 300))), outputs)
    classes, optics = _read(outputs["classes"]), _read(outputs["source"], 2)
    inside = classes != schema.IGNORE_INDEX
    cloudy_first = inside & (optics == OPTICS_CODES["cloudy"])
    assert cloudy_first.any() and (classes[cloudy_first] == 1).all()  # cloudy optics beat SAR-only evidence
    absent = inside & (optics == OPTICS_CODES["absent"])
    assert absent.any() and (classes[absent] == 3).all()  # SAR only where no optics at all


def test_ties_go_to_the_scene_listed_first_whatever_the_order_of_work(tmp_path: Path):
    scenes = [_scene(tmp_path, 1, 0, 200, 4, 180), _scene(tmp_path, 2, 0, 200, 5, 180)]
    first, second = _outputs(tmp_path, "a"), _outputs(tmp_path, "b")
    region = region_grid(_aoi(tmp_path, (0, 200)))
    mosaic(scenes, region, first)
    mosaic(scenes, region, second)
    assert set(np.unique(_read(first["classes"]))) <= {4, schema.IGNORE_INDEX}
    assert Path(first["classes"]).read_bytes() == Path(second["classes"]).read_bytes()


def test_gis_tools_read_class_names_colours_and_the_confidence_scale(two_scenes, tmp_path: Path):
    outputs = _outputs(tmp_path)
    mosaic(two_scenes, region_grid(_aoi(tmp_path, (50, 250))), outputs)
    band = _gdalinfo(outputs["classes"])["bands"][0]
    assert band["categories"] == category_names()
    assert band["colorTable"]["entries"][schema.CLASSES[0].id][:3] == list(schema.CLASSES[0].colour)
    assert category_names()[: len(schema.CLASSES)] == [c.name for c in schema.CLASSES]
    with rasterio.open(outputs["classes"]) as dataset:
        assert dataset.colormap(1)[schema.CLASSES[0].id][:3] == schema.CLASSES[0].colour
    with rasterio.open(outputs["confidence"]) as dataset:
        assert dataset.scales[0] == pytest.approx(1 / 254) and dataset.offsets[0] == pytest.approx(-1 / 254)
        value = int(dataset.read(1).max())
        assert value * dataset.scales[0] + dataset.offsets[0] == pytest.approx((200 - 1) / 254)
    style = ET.parse(write_qgis_style(str(tmp_path / "classes.qml"))).getroot()
    entries = style.findall("./pipe/rasterrenderer/colorPalette/paletteEntry")
    assert [(int(e.get("value")), e.get("label")) for e in entries] == [(c.id, c.name) for c in schema.CLASSES]


def test_areas_are_geodesic_once_per_pixel_overall_and_per_feature(two_scenes, tmp_path: Path):
    aoi = _aoi(tmp_path, (0, 0), (50, 150), (150, 250))
    region = region_grid(aoi)
    assert len(region.features) == 2
    outputs = _outputs(tmp_path)
    stats = mosaic(two_scenes, region, outputs)
    overall, per_feature = product_areas(outputs["classes"], region.grid, region.features)
    total = sum(area.km2 for area in overall)
    # a 10 m UTM pixel 100 km east of the central meridian covers a little over 100 m2 on the ground
    assert total == pytest.approx(stats.mapped_pixels * 100 / 1e6, rel=2e-3)
    assert total != pytest.approx(stats.mapped_pixels * 100 / 1e6, rel=1e-6)
    assert len(per_feature) == 2
    assert sum(a.km2 for feature in per_feature for a in feature) == pytest.approx(total, rel=2e-2)
    assert {a.name for a in per_feature[0] if a.km2 > 0} == {schema.CLASSES[1].name}
    assert {a.name for a in per_feature[1] if a.km2 > 0} == {schema.CLASSES[2].name}


def test_change_counts_only_pixels_both_products_are_sure_of(tmp_path: Path):
    region = region_grid(_aoi(tmp_path, (0, 200)))
    before, after = _outputs(tmp_path, "before"), _outputs(tmp_path, "after")
    mosaic([_scene(tmp_path, 1, 0, 200, 1, 230)], region, before)
    unsure = _scene(tmp_path, 2, 0, 100, 5, 60)  # cols 0-99 became cropland, but the model doubts it
    sure = _scene(tmp_path, 3, 100, 100, 5, 230)  # cols 100-199 became cropland, confidently
    mosaic([unsure, sure], region, after)
    transitions = change_map(after, before, region.grid, str(tmp_path / "change.tif"), min_confidence=0.5)
    names = [c.name for c in schema.CLASSES]
    forest_to_crop = transitions[names[1]][names[5]]
    assert forest_to_crop > 0 and sum(v for row in transitions.values() for v in row.values()) == pytest.approx(
        forest_to_crop
    )
    codes = _read(str(tmp_path / "change.tif"))
    assert set(np.unique(codes)) <= {change_code(1, 5), 255}
    assert validate_cog(str(tmp_path / "change.tif")) == []


def test_a_previous_product_on_another_grid_is_refused_naming_both(tmp_path: Path):
    region = region_grid(_aoi(tmp_path, (0, 200)))
    wider = region_grid(_aoi(tmp_path, (0, 250)))
    now, then = _outputs(tmp_path, "now"), _outputs(tmp_path, "then")
    mosaic([_scene(tmp_path, 1, 0, 260, 1, 230)], region, now)
    mosaic([_scene(tmp_path, 1, 0, 260, 1, 230)], wider, then)
    with pytest.raises(DataError, match="another grid") as error:
        change_map(now, then, region.grid, str(tmp_path / "change.tif"))
    assert then["classes"] in str(error.value) and now["classes"] in str(error.value)
    assert not (tmp_path / "change.tif").exists()


def test_an_aoi_outside_every_scene_a_line_or_a_point_is_refused(two_scenes, tmp_path: Path):
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps(mapping(shapely.box(20.0, 10.0, 20.1, 10.1))))
    with pytest.raises(DataError, match="no mapped scene overlaps"):
        mosaic(two_scenes, region_grid(str(far)), _outputs(tmp_path))
    assert not Path(_outputs(tmp_path)["classes"]).exists()
    line = tmp_path / "line.geojson"
    line.write_text(json.dumps({"type": "LineString", "coordinates": [[2.0, 45.0], [2.1, 45.1]]}))
    with pytest.raises(DataError, match=str(line)):
        region_grid(str(line))
    flat = tmp_path / "flat.geojson"
    flat.write_text(json.dumps({"type": "Polygon", "coordinates": [[[2, 45], [2.1, 45], [2.2, 45], [2, 45]]]}))
    with pytest.raises(DataError, match=r"zero area|empty"):
        region_grid(str(flat))


def test_an_aoi_across_two_utm_zones_gets_its_dominant_zone(tmp_path: Path):
    aoi = tmp_path / "across.geojson"
    aoi.write_text(json.dumps(mapping(shapely.box(5.9, 45.0, 6.5, 45.1))))  # zones 31 | 32 at 6 E
    region = region_grid(str(aoi))
    assert region.epsg == 32632
    assert shape(region.geojson()).equals(shapely.box(5.9, 45.0, 6.5, 45.1))


def test_agreement_with_the_real_worldcover_window(tmp_path: Path):
    worldcover = REALDATA / "worldcover"
    reference = str(next(worldcover.glob("*.tif")))
    with rasterio.open(reference) as dataset:
        west, south, east, north = dataset.bounds
    aoi = tmp_path / "saotome.geojson"
    inner = shapely.box(west + 0.2 * (east - west), south + 0.2 * (north - south), east - 0.2 * (east - west), north)
    aoi.write_text(json.dumps(mapping(inner)))
    region = region_grid(str(aoi))
    # a product that is the reference itself, remapped and warped: full agreement, then 1 column band altered
    lookup = lookup_array(load_table("worldcover"))
    product = tmp_path / "product.tif"
    with (
        rasterio.open(reference) as source,
        WarpedVRT(
            source,
            crs=region.grid.crs,
            transform=region.grid.transform,
            width=region.grid.width,
            height=region.grid.height,
            resampling=Resampling.nearest,
            tolerance=EXACT,
            nodata=0,
        ) as view,
    ):
        classes = remap(view.read(1), lookup)
    _write_product(product, classes, region)
    perfect = agreement(str(product), reference, region.grid)
    assert perfect["overall_agreement"] == pytest.approx(1.0) and perfect["pixels"] > 10_000
    forest = schema.CLASSES[1].name
    assert perfect["per_class"][forest]["user"] == pytest.approx(1.0)
    altered = classes.copy()
    band = (altered != 255) & (np.arange(altered.shape[1])[None, :] < altered.shape[1] // 4)
    altered[band] = 5  # a quarter of the columns claimed as cropland
    _write_product(product, altered, region)
    worse = agreement(str(product), reference, region.grid)
    expected = 1 - band.sum() / (classes != 255).sum() + (band & (classes == 5)).sum() / (classes != 255).sum()
    assert worse["overall_agreement"] == pytest.approx(expected, abs=1e-9)
    confusion = np.array(worse["confusion"])
    assert confusion.sum() == worse["pixels"] and confusion[5].sum() >= band.sum()
    assert worse["per_class"]["Cropland"]["user"] < 0.5


def _write_product(path: Path, classes: np.ndarray, region) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=region.grid.width,
        height=region.grid.height,
        count=1,
        dtype="uint8",
        crs=region.grid.crs,
        transform=region.grid.transform,
        nodata=255,
    ) as dataset:
        dataset.write(classes, 1)
