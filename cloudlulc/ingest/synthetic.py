"""A static STAC catalog of synthetic Sentinel-2 L2A and Sentinel-1 acquisitions with known land cover.

Tests, benchmarks and demos of the ingest need a catalog that looks like the real one (items in Element 84's
Earth Search v1 ``sentinel-2-l2a`` schema; Sentinel-1 items with the STAC ``sar`` extension, here as an
analysis-ready product: calibrated linear sigma0, geocoded) and whose truth is known. The ground comes from
:func:`cloudlulc.data.synthetic_scene.make_scene` tiles laid side by side on the tile's 10 m grid; each optical
acquisition gets its own clouds over that ground, each radar acquisition its own grid (CRS, pixel size,
sub-pixel shift, partial cover), so co-registration and cloud handling can be scored against
``truth/labels.tif``.

Memory stays bounded on large tiles: the ground is made one row of scene tiles at a time and streamed into
tiled GeoTIFFs window by window (coarse bands through block means that carry leftover rows to the next
row of tiles); only the label map and the two SAR bands are held for the whole tile. The same config
always gives the same bytes: per-tile generators, no timestamps in files or JSON.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetWriter
from rasterio.warp import reproject, transform_bounds, transform_geom
from rasterio.windows import Window
from tqdm import tqdm

from cloudlulc import schema
from cloudlulc.data.synthetic_scene import BARREN, BUILT, CROP, FOREST, GRASS, WATER, Scene, add_clouds, make_scene
from cloudlulc.ingest.earth_search import (
    BASELINE_WITH_OFFSET,
    BOA_OFFSET_APPLIED,
    COG_MEDIA_TYPE,
    EARTH_SEARCH_BANDS,
    PIXEL_M,
    PROCESSING_BASELINE,
    S1_COLLECTION,
    S2_COLLECTION,
    SCL_ASSET_KEY,
    SCL_CIRRUS,
    SCL_CLOUD_HIGH,
    SCL_NOT_VEGETATED,
    SCL_SHADOW,
    SCL_VEGETATION,
    SCL_WATER,
    WC_BARE,
    WC_BUILT_UP,
    WC_CROPLAND,
    WC_GRASSLAND,
    WC_TREE_COVER,
    WC_WATER,
    WORLDCOVER_COLOURS,
    WORLDCOVER_PIXEL_DEG,
    sar_asset_key,
)
from cloudlulc.io.storage import is_s3_uri, join_uri, open_storage
from cloudlulc.logs import progress_enabled

log = logging.getLogger(__name__)

__all__ = [
    "S1Spec",
    "S2Spec",
    "SyntheticCatalog",
    "SyntheticCatalogConfig",
    "ground_tile",
    "optical_tile",
    "s1_grid",
    "s1_item_id",
    "s2_item_id",
    "s2_shape",
    "s2_transform",
    "write_synthetic_catalog",
]

S1_NODATA = -32768.0
S2_TIME = time(10, 30, 0, tzinfo=UTC)
S1_START, S1_END = "055411", "055436"
S1_TIME = time(5, 54, 11, tzinfo=UTC)
S1_ABSOLUTE_ORBIT_BASE = 54_000
"""Absolute orbit of the first radar acquisition; the next ones count up from it (unique ids)."""
WORK_CACHE_BYTES = 256 * 2**20
"""GDAL block cache while streaming: the default (5 % of RAM) would hold blocks of every open band file."""

S2_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
]
S1_EXTENSIONS = [
    "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]


SCL_OF_CLASS = np.zeros(256, np.uint8)
SCL_OF_CLASS[[WATER, FOREST, GRASS, BARREN, BUILT, CROP]] = [
    SCL_WATER,
    SCL_VEGETATION,
    SCL_VEGETATION,
    SCL_NOT_VEGETATED,
    SCL_NOT_VEGETATED,
    SCL_VEGETATION,
]
SCL_CLEAR_CODES = (SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER)

WORLDCOVER_CODES = {
    WATER: WC_WATER,
    FOREST: WC_TREE_COVER,
    GRASS: WC_GRASSLAND,
    BARREN: WC_BARE,
    BUILT: WC_BUILT_UP,
    CROP: WC_CROPLAND,
}
"""Our class id -> ESA WorldCover code."""

MGRS_TILE = re.compile(r"^(\d{1,2})([C-HJ-NP-X])([A-HJ-NP-Z]{2})$")


def _baseline(text: str) -> tuple[int, int] | None:
    """(major, minor) of a processing baseline such as ``"05.10"``; None when malformed."""
    major, _, minor = text.partition(".")
    return (int(major), int(minor or 0)) if major.isdigit() and (minor or "0").isdigit() else None


@dataclass(frozen=True)
class S2Spec:
    """One Sentinel-2 L2A acquisition of the tile."""

    date: str
    """ISO date; the item's datetime is 10:30:00Z of that day."""
    cloud_cover: float = 0.3
    """Target cloud fraction given to the cloud generator (haze and cirrus come on top)."""
    processing_baseline: str = "05.10"
    boa_offset_applied: bool = False
    """Earth Search's ``earthsearch:boa_offset_applied``: pixels already carry no -1000 offset."""
    all_nodata: bool = False
    """Every pixel of every band 0 (a bad-input case)."""
    declared_offset: float | None = None
    """``raster:bands`` offset to declare instead of the one matching the pixels. Real Earth Search items
    with ``earthsearch:boa_offset_applied: true`` still declare -0.1; set -0.1 to reproduce that."""

    def __post_init__(self) -> None:
        date.fromisoformat(self.date)
        if not 0.0 <= self.cloud_cover <= 1.0:
            raise ValueError(f"cloud_cover must be a fraction in [0, 1], got {self.cloud_cover}")
        if _baseline(self.processing_baseline) is None:
            raise ValueError(f"processing_baseline must look like '05.10', got {self.processing_baseline!r}")

    @property
    def offset_dn(self) -> int:
        """BOA_ADD_OFFSET the pixels carry: -1000 from baseline 04.00 on, unless Earth Search removed it."""
        carries = (
            _baseline(self.processing_baseline) or (0, 0)
        ) >= BASELINE_WITH_OFFSET and not self.boa_offset_applied
        return schema.S2_BASELINE_OFFSET_DN if carries else 0


@dataclass(frozen=True)
class S1Spec:
    """One Sentinel-1 acquisition, delivered on its own grid."""

    date: str
    epsg: int | None = None
    """CRS of the SAR assets; None = the optical tile's."""
    pixel_m: float = 10.0
    shift_m: tuple[float, float] = (0.0, 0.0)
    """(east, north) shift of the grid origin in metres, not snapped back: sub-pixel offsets."""
    extent: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    """(left, bottom, right, top) fractions of the optical footprint that the acquisition covers."""
    orbit_state: str = "descending"

    def __post_init__(self) -> None:
        date.fromisoformat(self.date)
        if self.pixel_m <= 0:
            raise ValueError(f"pixel_m must be positive, got {self.pixel_m}")
        left, bottom, right, top = self.extent
        if not (0.0 <= left < right <= 1.0 and 0.0 <= bottom < top <= 1.0):
            raise ValueError(f"extent must be fractions (left, bottom, right, top) with left<right, got {self.extent}")
        if self.orbit_state not in ("ascending", "descending"):
            raise ValueError(f"orbit_state must be 'ascending' or 'descending', got {self.orbit_state!r}")


@dataclass(frozen=True)
class SyntheticCatalogConfig:
    """Everything that decides the catalog's bytes."""

    size: int = 1024
    """Pixels per side of the 10 m optical grid."""
    epsg: int = 32631
    origin: tuple[float, float] = (600_000.0, 5_000_040.0)
    """Upper-left corner (x, y) of the tile; multiples of 60 m so the 20 m and 60 m grids share it."""
    mgrs_tile: str = "31UFS"
    s2: tuple[S2Spec, ...] = (S2Spec("2026-06-10"),)
    s1: tuple[S1Spec, ...] = (S1Spec("2026-06-08"),)
    seed: int = 0
    scene_tile: int = 512
    """Side of the make_scene tiles the ground is built from (bounds memory; seams between tiles are fine)."""
    reference_landcover: bool = True
    """Also write ``reference/worldcover.tif``: the land cover as WorldCover codes in EPSG:4326."""
    asset_base_url: str | None = None
    """When set, asset hrefs are absolute URLs under it (to serve the catalog over HTTP)."""

    def __post_init__(self) -> None:
        if self.size < 6:
            raise ValueError(f"size must be at least 6 pixels, got {self.size}")
        if self.scene_tile < 32:
            raise ValueError(f"scene_tile must be at least 32 pixels, got {self.scene_tile}")
        if any(value % 60 for value in self.origin):
            raise ValueError(f"origin must be multiples of 60 m (shared by the 10/20/60 m grids), got {self.origin}")
        if not MGRS_TILE.match(self.mgrs_tile):
            raise ValueError(f"mgrs_tile must look like '31UFS', got {self.mgrs_tile!r}")
        dates = [spec.date for spec in self.s2]
        if len(set(dates)) != len(dates):
            raise ValueError(f"Sentinel-2 dates must be unique (they make the item ids), got {dates}")


@dataclass(frozen=True)
class SyntheticCatalog:
    """Where the written catalog and its truth are."""

    root: str
    catalog_href: str
    s2_ids: tuple[str, ...]
    s1_ids: tuple[str, ...]
    landcover_uri: str | None
    bbox_wgs84: tuple[float, float, float, float]
    truth_labels_uri: str
    """uint8 class ids on the 10 m optical grid (nodata 255): the land cover at the optical dates."""


# --- ids and grids ------------------------------------------------------------------------------


def s2_item_id(config: SyntheticCatalogConfig, spec: S2Spec) -> str:
    """Earth Search id of an optical acquisition, e.g. ``S2B_31UFS_20260610_0_L2A``."""
    return f"S2B_{config.mgrs_tile}_{spec.date.replace('-', '')}_0_L2A"


def s1_item_id(index: int, spec: S1Spec) -> str:
    """A Sentinel-1 GRD product name; the orbit and datatake fields count up with ``index`` (unique)."""
    day = spec.date.replace("-", "")
    number = S1_ABSOLUTE_ORBIT_BASE + index
    return f"S1A_IW_GRDH_1SDV_{day}T{S1_START}_{day}T{S1_END}_{number:06d}_{number:06X}_ABCD"


def s2_transform(config: SyntheticCatalogConfig, resolution_m: float = PIXEL_M) -> Affine:
    """Grid of the optical bands at ``resolution_m`` (10, 20 or 60), all sharing the tile's origin."""
    return Affine(resolution_m, 0.0, config.origin[0], 0.0, -resolution_m, config.origin[1])


def s2_shape(config: SyntheticCatalogConfig, resolution_m: int) -> tuple[int, int]:
    """(rows, cols) of a band at ``resolution_m``: the tile, rounded up to whole coarse pixels."""
    side = -(-config.size // round(resolution_m / PIXEL_M))
    return side, side


def s2_bounds(config: SyntheticCatalogConfig) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the optical tile in its CRS."""
    left, top = config.origin
    extent = config.size * PIXEL_M
    return left, top - extent, left + extent, top


def s1_grid(config: SyntheticCatalogConfig, spec: S1Spec) -> tuple[CRS, Affine, int, int]:
    """(crs, transform, width, height) of a radar acquisition's assets.

    The covered part of the optical footprint is transformed into the SAR CRS and snapped outward to
    whole pixels; then the origin moves by ``shift_m`` and is deliberately left off the pixel lattice.
    """
    crs = CRS.from_epsg(spec.epsg or config.epsg)
    left, bottom, right, top = s2_bounds(config)
    fl, fb, fr, ft = spec.extent
    width_m, height_m = right - left, top - bottom
    sub = (left + fl * width_m, bottom + fb * height_m, left + fr * width_m, bottom + ft * height_m)
    west, south, east, north = transform_bounds(CRS.from_epsg(config.epsg), crs, *sub, densify_pts=21)
    pixel, (shift_x, shift_y) = spec.pixel_m, spec.shift_m
    if crs.is_geographic:  # metres to degrees at the centre latitude
        metres_per_degree = 111_320.0
        cos_lat = math.cos(math.radians((south + north) / 2))
        pixel = spec.pixel_m / metres_per_degree
        shift_x, shift_y = shift_x / (metres_per_degree * cos_lat), shift_y / metres_per_degree
    west, south = math.floor(west / pixel) * pixel, math.floor(south / pixel) * pixel
    east, north = math.ceil(east / pixel) * pixel, math.ceil(north / pixel) * pixel
    width, height = round((east - west) / pixel), round((north - south) / pixel)
    return crs, Affine(pixel, 0.0, west + shift_x, 0.0, -pixel, north + shift_y), width, height


def tile_count(config: SyntheticCatalogConfig) -> int:
    """Scene tiles per side of the optical grid (the last row and column are cropped)."""
    return -(-config.size // config.scene_tile)


def ground_tile(config: SyntheticCatalogConfig, tile_row: int, tile_col: int) -> Scene:
    """The uncropped make_scene tile at (tile_row, tile_col): land cover, clear reflectance and SAR of that area."""
    return make_scene(np.random.default_rng([config.seed, 0, tile_row, tile_col]), config.scene_tile)


def optical_tile(
    config: SyntheticCatalogConfig, index: int, tile_row: int, tile_col: int, ground: Scene | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(reflectance [12,T,T], cloud mask [T,T]) of optical acquisition ``index`` over one uncropped tile.

    The ground is shared by all acquisitions; the clouds are the acquisition's own.
    """
    if ground is None:
        ground = ground_tile(config, tile_row, tile_col)
    rng = np.random.default_rng([config.seed, 1 + index, tile_row, tile_col])
    return add_clouds(rng, ground.clear, config.s2[index].cloud_cover)


# --- streaming writers --------------------------------------------------------------------------


def _pad_to_multiple(array: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Pad ``axis`` by repeating its last entry up to a multiple of ``factor``."""
    missing = -array.shape[axis] % factor
    if not missing:
        return array
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, missing)
    return np.pad(array, widths, mode="edge")


class _BlockStream:
    """Reduces factor x factor blocks of 10 m rows as they stream in; rows short of a block wait for the next push."""

    def __init__(
        self, factor: int, reduce: Callable[[np.ndarray], np.ndarray], emit: Callable[[np.ndarray, int], None]
    ):
        self.factor = factor
        self.reduce = reduce
        self.emit = emit
        self.pending: np.ndarray | None = None
        self.next_row = 0

    def push(self, rows: np.ndarray, last: bool) -> None:
        f = self.factor
        data = rows if self.pending is None else np.concatenate((self.pending, rows), axis=-2)
        if last:
            data = _pad_to_multiple(data, -2, f)
        whole = data.shape[-2] // f * f
        if whole:
            blocks = _pad_to_multiple(data[..., :whole, :], -1, f)
            *lead, height, width = blocks.shape
            out = self.reduce(blocks.reshape(*lead, height // f, f, width // f, f))
            self.emit(out, self.next_row)
            self.next_row += height // f
        self.pending = None if last or whole == data.shape[-2] else data[..., whole:, :].copy()


def _block_mean(blocks: np.ndarray) -> np.ndarray:
    return blocks.mean(axis=(-3, -1), dtype=np.float32)


def _block_scl(blocks: np.ndarray) -> np.ndarray:
    """SCL of a 20 m pixel from its 2x2 pixels: opaque > thin > shadow, else the most common clear class."""
    rows, f, cols, _ = blocks.shape
    pixels = blocks.transpose(0, 2, 1, 3).reshape(rows, cols, f * f)
    counts = np.stack([(pixels == code).sum(axis=-1) for code in SCL_CLEAR_CODES])
    out = np.asarray(SCL_CLEAR_CODES, np.uint8)[counts.argmax(axis=0)]
    for code in (SCL_SHADOW, SCL_CIRRUS, SCL_CLOUD_HIGH):  # rising priority: the last one found wins
        out[(pixels == code).any(axis=-1)] = code
    return out


def _open_work(path: Path, dtype: str, crs: CRS, transform: Affine, shape: tuple[int, ...], nodata: float) -> Any:
    """An uncompressed tiled GeoTIFF to stream windows into (the COG copy compresses it once, at the end)."""
    return rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=shape[1],
        height=shape[0],
        count=1,
        dtype=dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )


def _to_cog(source: Path, target: Path, resampling: str) -> None:
    """Copy a finished GeoTIFF to a deflate-compressed COG (GDAL's COG driver, overviews included)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    rasterio.shutil.copy(
        str(source),
        str(target),
        driver="COG",
        compress="DEFLATE",
        predictor="YES",
        blocksize=512,
        overview_resampling=resampling,
        bigtiff="IF_SAFER",
        num_threads="ALL_CPUS",
    )


def _write_cog(
    work: Path,
    target: Path,
    array: np.ndarray,
    crs: CRS,
    transform: Affine,
    nodata: float,
    resampling: str,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> None:
    data = array[np.newaxis] if array.ndim == 2 else array
    temp = work / f"{target.parent.name}-{target.name}"
    with _open_work(temp, str(data.dtype), crs, transform, data.shape[-2:], nodata) as dst:
        dst.write(data[0], 1)
        if colormap:
            dst.write_colormap(1, colormap)
    _to_cog(temp, target, resampling)
    temp.unlink()


@dataclass
class _Acquisition:
    """One optical acquisition being streamed: its band files and running cloud counts."""

    config: SyntheticCatalogConfig
    index: int
    spec: S2Spec
    work: Path
    files: dict[str, Path] = field(default_factory=dict)
    datasets: dict[str, DatasetWriter] = field(default_factory=dict)
    streams: list[tuple[_BlockStream, list[int]]] = field(default_factory=list)
    mask_counts: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))

    def __post_init__(self) -> None:
        crs = CRS.from_epsg(self.config.epsg)
        for band in (*schema.S2_BANDS, "SCL"):
            resolution = schema.S2_BAND_RESOLUTION_M.get(band, 20)
            path = self.work / f"s2-{self.index}-{band}.tif"
            dtype = "uint8" if band == "SCL" else "uint16"
            transform = s2_transform(self.config, resolution)
            shape = s2_shape(self.config, resolution)
            self.files[band] = path
            self.datasets[band] = _open_work(path, dtype, crs, transform, shape, schema.S2_NODATA_DN)
        for factor in (2, 6):
            bands = [i for i, b in enumerate(schema.S2_BANDS) if schema.S2_BAND_RESOLUTION_M[b] == factor * PIXEL_M]
            names = [schema.S2_BANDS[i] for i in bands]
            self.streams.append((_BlockStream(factor, _block_mean, self._band_emitter(names)), bands))
        self.scl = _BlockStream(2, _block_scl, self._scl_emit)

    def _dn(self, reflectance: np.ndarray) -> np.ndarray:
        if self.spec.all_nodata:
            return np.zeros(reflectance.shape, np.uint16)
        return schema.reflectance_to_s2_dn(reflectance, self.spec.offset_dn)

    def _write(self, band: str, array: np.ndarray, row: int) -> None:
        height, width = array.shape
        self.datasets[band].write(array, 1, window=Window(0, row, width, height))

    def _band_emitter(self, names: list[str]) -> Callable[[np.ndarray, int], None]:
        def emit(means: np.ndarray, row: int) -> None:
            for name, mean in zip(names, means, strict=True):
                self._write(name, self._dn(mean), row)

        return emit

    def _scl_emit(self, scl: np.ndarray, row: int) -> None:
        self._write("SCL", np.zeros_like(scl) if self.spec.all_nodata else scl, row)

    def push(self, tile_row: int, row: int, tiles: Sequence[tuple[int, int, Scene]], labels: np.ndarray) -> None:
        """Add one row of scene tiles (uncropped ``tiles`` as (col0, col1, scene), ``labels`` cropped)."""
        height, width = labels.shape
        last = row + height == self.config.size
        reflectance = np.zeros((len(schema.S2_BANDS), height, width), np.float32)
        mask = np.zeros((height, width), np.uint8)
        if not self.spec.all_nodata:
            for tile_col, (col0, col1, ground) in enumerate(tiles):
                cloudy, cloud_mask = optical_tile(self.config, self.index, tile_row, tile_col, ground)
                reflectance[:, :, col0:col1] = cloudy[:, :height, : col1 - col0]
                mask[:, col0:col1] = cloud_mask[:height, : col1 - col0]
            self.mask_counts += np.bincount(mask.ravel(), minlength=4)[:4]
        for i, band in enumerate(schema.S2_BANDS):
            if schema.S2_BAND_RESOLUTION_M[band] == PIXEL_M:
                self._write(band, self._dn(reflectance[i]), row)
        for stream, bands in self.streams:
            stream.push(reflectance[bands], last)
        del reflectance
        scl = SCL_OF_CLASS[labels]
        scl[mask == schema.CLOUD_SHADOW] = SCL_SHADOW
        scl[mask == schema.CLOUD_THIN] = SCL_CIRRUS
        scl[mask == schema.CLOUD_OPAQUE] = SCL_CLOUD_HIGH
        self.scl.push(scl, last)

    def close(self) -> None:
        """Close the band files (also after a failure, before the work folder goes)."""
        for dataset in self.datasets.values():
            dataset.close()

    def finish(self, item_folder: Path) -> None:
        """Close the band files and publish them as COGs in the item's folder."""
        self.close()
        for band, path in self.files.items():
            _to_cog(path, item_folder / f"{band}.tif", "nearest" if band == "SCL" else "average")
            path.unlink()

    def fractions(self) -> dict[str, float]:
        """Share of the 10 m pixels (0-1) per cloud-mask code; all 0 for an all-nodata acquisition."""
        total = max(int(self.mask_counts.sum()), 1)
        return {name: float(self.mask_counts[code]) / total for code, name in schema.CLOUD_MASK_NAMES.items()}


# --- STAC ---------------------------------------------------------------------------------------


def _ring(left: float, bottom: float, right: float, top: float, steps: int = 8) -> list[tuple[float, float]]:
    """Counter-clockwise closed ring along the edges of a box, ``steps`` segments per side."""
    xs = np.linspace(left, right, steps + 1)
    ys = np.linspace(top, bottom, steps + 1)
    ring = [(left, float(y)) for y in ys] + [(float(x), bottom) for x in xs[1:]]
    ring += [(right, float(y)) for y in ys[::-1][1:]] + [(float(x), top) for x in xs[::-1][1:]]
    return ring


def _footprint(crs: CRS, bounds: tuple[float, float, float, float]) -> tuple[dict[str, Any], list[float]]:
    """(GeoJSON polygon in WGS84, bbox) of a box in ``crs``, edges densified."""
    polygon = {"type": "Polygon", "coordinates": [_ring(*bounds)]}
    wgs84 = transform_geom(crs, "EPSG:4326", polygon)
    coordinates = [[round(x, 9), round(y, 9)] for x, y in wgs84["coordinates"][0]]
    xs, ys = [c[0] for c in coordinates], [c[1] for c in coordinates]
    return {"type": "Polygon", "coordinates": [coordinates]}, [min(xs), min(ys), max(xs), max(ys)]


def _proj_transform(transform: Affine) -> list[float]:
    return [float(v) for v in tuple(transform)[:6]]


def _href(config: SyntheticCatalogConfig, item_folder: str, name: str) -> str:
    if config.asset_base_url:
        return f"{config.asset_base_url.rstrip('/')}/{item_folder}/{name}"
    return f"./{name}"


def _s2_item(config: SyntheticCatalogConfig, acquisition: _Acquisition) -> pystac.Item:
    """An Earth Search v1 ``sentinel-2-l2a`` item: properties, 12 band assets and the SCL asset."""
    spec = acquisition.spec
    item_id = s2_item_id(config, spec)
    geometry, bbox = _footprint(CRS.from_epsg(config.epsg), s2_bounds(config))
    when = datetime.combine(date.fromisoformat(spec.date), S2_TIME)
    properties = _s2_properties(config, acquisition)
    item = pystac.Item(item_id, geometry, bbox, when, properties, stac_extensions=list(S2_EXTENSIONS))
    folder = f"{S2_COLLECTION}/{item_id}"
    offset = spec.declared_offset if spec.declared_offset is not None else spec.offset_dn / schema.S2_DN_SCALE
    for band_name in schema.S2_BANDS:
        item.add_asset(EARTH_SEARCH_BANDS[band_name].key, _s2_band_asset(config, folder, band_name, offset))
    item.add_asset(SCL_ASSET_KEY, _scl_asset(config, folder))
    return item


def _s2_properties(config: SyntheticCatalogConfig, acquisition: _Acquisition) -> dict[str, Any]:
    """Item properties as Earth Search writes them, with cloud shares measured on the generated mask."""
    spec = acquisition.spec
    zone, band, square = MGRS_TILE.match(config.mgrs_tile).groups()  # type: ignore[union-attr]
    fractions = acquisition.fractions()
    cloudy = fractions["thin cloud"] + fractions["opaque cloud"]
    return {
        "platform": "sentinel-2b",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": round(100 * cloudy, 6),
        "proj:epsg": config.epsg,
        "mgrs:utm_zone": int(zone),
        "mgrs:latitude_band": band,
        "mgrs:grid_square": square,
        "grid:code": f"MGRS-{config.mgrs_tile}",
        "s2:nodata_pixel_percentage": 100.0 if spec.all_nodata else 0.0,
        "s2:cloud_shadow_percentage": round(100 * fractions["shadow"], 6),
        "s2:high_proba_clouds_percentage": round(100 * fractions["opaque cloud"], 6),
        "s2:thin_cirrus_percentage": round(100 * fractions["thin cloud"], 6),
        "s2:product_type": "S2MSI2A",
        PROCESSING_BASELINE: spec.processing_baseline,
        "s2:sequence": "0",
        BOA_OFFSET_APPLIED: spec.boa_offset_applied,
    }


def _s2_band_asset(config: SyntheticCatalogConfig, folder: str, band_name: str, offset: float) -> pystac.Asset:
    """One band's COG asset with its ``eo:bands``, ``raster:bands`` (scale, offset) and ``proj:`` fields."""
    meta = EARTH_SEARCH_BANDS[band_name]
    resolution = schema.S2_BAND_RESOLUTION_M[band_name]
    eo_band = {
        "name": meta.key,
        "common_name": meta.common_name,
        "description": meta.description,
        "center_wavelength": meta.center_wavelength,
        "full_width_half_max": meta.full_width_half_max,
    }
    raster_band = {
        "nodata": 0,
        "data_type": "uint16",
        "bits_per_sample": 15,
        "spatial_resolution": resolution,
        "scale": 1 / schema.S2_DN_SCALE,
        "offset": offset,
    }
    extra = {
        "eo:bands": [eo_band],
        "gsd": resolution,
        "proj:shape": list(s2_shape(config, resolution)),
        "proj:transform": _proj_transform(s2_transform(config, resolution)),
        "raster:bands": [raster_band],
    }
    title = f"{meta.description} - {resolution}m"
    href = _href(config, folder, f"{band_name}.tif")
    return pystac.Asset(href, title, None, COG_MEDIA_TYPE, ["data", "reflectance"], extra)


def _scl_asset(config: SyntheticCatalogConfig, folder: str) -> pystac.Asset:
    """The 20 m scene classification asset."""
    extra = {
        "proj:shape": list(s2_shape(config, 20)),
        "proj:transform": _proj_transform(s2_transform(config, 20)),
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
    }
    title = "Scene classification map (SCL)"
    return pystac.Asset(_href(config, folder, "SCL.tif"), title, None, COG_MEDIA_TYPE, ["data"], extra)


def _s1_item(config: SyntheticCatalogConfig, index: int, spec: S1Spec) -> pystac.Item:
    item_id = s1_item_id(index, spec)
    crs, transform, width, height = s1_grid(config, spec)
    left, bottom, right, top = s2_bounds(config)
    fl, fb, fr, ft = spec.extent
    covered = (
        left + fl * (right - left),
        bottom + fb * (top - bottom),
        left + fr * (right - left),
        bottom + ft * (top - bottom),
    )
    geometry, bbox = _footprint(CRS.from_epsg(config.epsg), covered)
    absolute_orbit = S1_ABSOLUTE_ORBIT_BASE + index
    properties: dict[str, Any] = {
        "platform": "sentinel-1a",
        "constellation": "sentinel-1",
        "instruments": ["c-sar"],
        "sar:instrument_mode": "IW",
        "sar:frequency_band": "C",
        "sar:center_frequency": 5.405,
        "sar:polarizations": ["VV", "VH"],
        "sar:product_type": "GRD",
        "sar:resolution_range": 20,
        "sar:resolution_azimuth": 22,
        "sar:pixel_spacing_range": 10,
        "sar:pixel_spacing_azimuth": 10,
        "sar:looks_range": 5,
        "sar:looks_azimuth": 1,
        "sar:looks_equivalent_number": 4.4,
        "sar:observation_direction": "right",
        "sat:orbit_state": spec.orbit_state,
        "sat:absolute_orbit": absolute_orbit,
        "sat:relative_orbit": (absolute_orbit - 73) % 175 + 1,  # Sentinel-1A's 175-orbit repeat cycle
        "proj:epsg": crs.to_epsg(),
        "s1:processing_level": "1",
        "s1:product_timeliness": "Fast-24h",
        "s1:resolution": "high",
    }
    when = datetime.combine(date.fromisoformat(spec.date), S1_TIME)
    item = pystac.Item(item_id, geometry, bbox, when, properties, stac_extensions=list(S1_EXTENSIONS))
    folder = f"{S1_COLLECTION}/{item_id}"
    for polarisation in schema.S1_POLARISATIONS:
        key = sar_asset_key(polarisation)
        extra = {
            "sar:polarizations": [polarisation],
            "proj:shape": [height, width],
            "proj:transform": _proj_transform(transform),
            "raster:bands": [{"nodata": int(S1_NODATA), "data_type": "float32", "unit": "linear"}],
        }
        title = f"{polarisation}: sigma0, linear power"
        item.add_asset(
            key, pystac.Asset(_href(config, folder, f"{key}.tif"), title, None, COG_MEDIA_TYPE, ["data"], extra)
        )
    return item


def _collection(collection_id: str, title: str, description: str, items: list[pystac.Item]) -> pystac.Collection:
    if items:
        boxes = np.array([item.bbox for item in items])
        bbox = [float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max())]
        times = sorted(item.datetime for item in items if item.datetime)
        interval: list[datetime | None] = [times[0], times[-1]]
    else:
        bbox, interval = [-180.0, -90.0, 180.0, 90.0], [None, None]
    extent = pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval]))
    collection = pystac.Collection(collection_id, description, extent, title=title, license="proprietary")
    for item in items:
        collection.add_item(item)
    return collection


# --- the catalog --------------------------------------------------------------------------------


def write_synthetic_catalog(
    root: str, config: SyntheticCatalogConfig = SyntheticCatalogConfig(), *, progress: bool = False
) -> SyntheticCatalog:
    """Write a static STAC catalog of synthetic acquisitions under ``root`` (a folder or ``s3://`` URI).

    On S3 everything is made in a local temporary folder and uploaded file by file, ``catalog.json``
    last, so a reader never finds a catalog whose files are missing.
    """
    root = str(root).rstrip("/")
    remote = is_s3_uri(root)
    with tempfile.TemporaryDirectory(prefix="cloudlulc-stac-") as temp:
        work = Path(temp) / "work"
        work.mkdir()
        stage = Path(temp) / "stage" if remote else Path(root)
        stage.mkdir(parents=True, exist_ok=True)
        with rasterio.Env(GDAL_CACHEMAX=WORK_CACHE_BYTES):
            acquisitions = _write_rasters(config, stage, work, progress)
        s2_items = [_s2_item(config, acquisition) for acquisition in acquisitions]
        s1_items = [_s1_item(config, index, spec) for index, spec in enumerate(config.s1)]
        catalog = pystac.Catalog(
            "cloudlulc-synthetic",
            f"Synthetic Sentinel-2 L2A and Sentinel-1 acquisitions over MGRS tile {config.mgrs_tile} "
            f"({config.size} x {config.size} px at 10 m, seed {config.seed}); truth in truth/labels.tif.",
            title="CloudLULC synthetic acquisitions",
        )
        catalog.add_child(
            _collection(S2_COLLECTION, "Sentinel-2 Level-2A (synthetic)", "Earth Search v1 item schema.", s2_items)
        )
        catalog.add_child(
            _collection(S1_COLLECTION, "Sentinel-1 GRD (synthetic)", "Calibrated, geocoded sigma0.", s1_items)
        )
        catalog.normalize_hrefs(str(stage))
        catalog.save(pystac.CatalogType.SELF_CONTAINED)
        if remote:
            storage = open_storage(root)
            files = sorted(p for p in stage.rglob("*") if p.is_file())
            for path in sorted(files, key=lambda p: p.relative_to(stage).as_posix() == "catalog.json"):
                storage.upload_file(path, path.relative_to(stage).as_posix())
    _, bbox = _footprint(CRS.from_epsg(config.epsg), s2_bounds(config))
    return SyntheticCatalog(
        root=root,
        catalog_href=join_uri(root, "catalog.json"),
        s2_ids=tuple(item.id for item in s2_items),
        s1_ids=tuple(item.id for item in s1_items),
        landcover_uri=join_uri(root, "reference/worldcover.tif") if config.reference_landcover else None,
        bbox_wgs84=(bbox[0], bbox[1], bbox[2], bbox[3]),
        truth_labels_uri=join_uri(root, "truth/labels.tif"),
    )


def _write_rasters(config: SyntheticCatalogConfig, stage: Path, work: Path, progress: bool) -> list[_Acquisition]:
    """Stream the ground row of tiles by row of tiles into every optical acquisition; then SAR and references."""
    size = config.size
    crs = CRS.from_epsg(config.epsg)
    labels = np.empty((size, size), np.uint8)
    sar_truth = np.empty((len(schema.S1_POLARISATIONS), size, size), np.float32)  # linear power, 10 m
    acquisitions = [_Acquisition(config, index, spec, work) for index, spec in enumerate(config.s2)]
    try:
        _stream_ground(config, acquisitions, labels, sar_truth, progress)
    finally:
        for acquisition in acquisitions:
            acquisition.close()
    for acquisition in acquisitions:
        acquisition.finish(stage / S2_COLLECTION / s2_item_id(config, acquisition.spec))
    transform = s2_transform(config)
    labels_colours = schema.colour_table()
    _write_cog(
        work, stage / "truth" / "labels.tif", labels, crs, transform, schema.IGNORE_INDEX, "nearest", labels_colours
    )
    for index, spec in enumerate(config.s1):
        _write_sar(config, spec, sar_truth, stage / S1_COLLECTION / s1_item_id(index, spec), work)
    del sar_truth
    if config.reference_landcover:
        _write_worldcover(config, labels, stage / "reference" / "worldcover.tif", work)
    return acquisitions


def _stream_ground(
    config: SyntheticCatalogConfig,
    acquisitions: list[_Acquisition],
    labels: np.ndarray,
    sar_truth: np.ndarray,
    progress: bool,
) -> None:
    """Make the ground one row of scene tiles at a time and push each row into every optical acquisition."""
    size, tile = config.size, config.scene_tile
    tiles_per_side = tile_count(config)
    shown = progress_enabled(progress)
    with tqdm(total=tiles_per_side**2, desc="synthetic tiles", unit="tile", disable=not shown) as bar:
        for tile_row in range(tiles_per_side):
            row0, row1 = tile_row * tile, min(size, (tile_row + 1) * tile)
            tiles: list[tuple[int, int, Scene]] = []
            for tile_col in range(tiles_per_side):
                col0, col1 = tile_col * tile, min(size, (tile_col + 1) * tile)
                scene = ground_tile(config, tile_row, tile_col)
                labels[row0:row1, col0:col1] = scene.label[: row1 - row0, : col1 - col0]
                sar_truth[:, row0:row1, col0:col1] = schema.db_to_linear(scene.sar_db[:, : row1 - row0, : col1 - col0])
                scene.cloudy = scene.sar_db = scene.cloud_mask = np.empty(0, np.float32)  # keep only what clouds need
                tiles.append((col0, col1, scene))
                bar.update(1)
            for acquisition in acquisitions:
                acquisition.push(tile_row, row0, tiles, labels[row0:row1])
            del tiles
    log.info("synthetic tiles: %d ground tiles into %d optical acquisitions", tiles_per_side**2, len(acquisitions))


def _write_sar(config: SyntheticCatalogConfig, spec: S1Spec, truth: np.ndarray, folder: Path, work: Path) -> None:
    """Resample the 10 m linear sigma0 onto the acquisition's grid: bilinear, or average for coarser pixels."""
    crs, transform, width, height = s1_grid(config, spec)
    resampling = Resampling.average if spec.pixel_m > PIXEL_M else Resampling.bilinear
    for band, polarisation in enumerate(schema.S1_POLARISATIONS):
        out = np.full((height, width), S1_NODATA, np.float32)
        reproject(
            truth[band],
            out,
            src_transform=s2_transform(config),
            src_crs=CRS.from_epsg(config.epsg),
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=S1_NODATA,
            resampling=resampling,
        )
        _write_cog(work, folder / f"{sar_asset_key(polarisation)}.tif", out, crs, transform, S1_NODATA, "average")


def _write_worldcover(config: SyntheticCatalogConfig, labels: np.ndarray, target: Path, work: Path) -> None:
    """The land cover as ESA WorldCover codes on WorldCover's own EPSG:4326 grid (nearest neighbour)."""
    lookup = np.zeros(256, np.uint8)
    for class_id, code in WORLDCOVER_CODES.items():
        lookup[class_id] = code
    west, south, east, north = transform_bounds(CRS.from_epsg(config.epsg), "EPSG:4326", *s2_bounds(config))
    step = WORLDCOVER_PIXEL_DEG
    col0, row0 = math.floor(west / step), math.ceil(north / step)
    width, height = math.ceil(east / step) - col0, row0 - math.floor(south / step)
    transform = Affine(step, 0.0, col0 * step, 0.0, -step, row0 * step)
    out = np.zeros((height, width), np.uint8)
    reproject(
        lookup[labels],
        out,
        src_transform=s2_transform(config),
        src_crs=CRS.from_epsg(config.epsg),
        dst_transform=transform,
        dst_crs=CRS.from_epsg(4326),
        src_nodata=0,
        dst_nodata=0,
        resampling=Resampling.nearest,
    )
    _write_cog(work, target, out, CRS.from_epsg(4326), transform, 0, "nearest", WORLDCOVER_COLOURS)
