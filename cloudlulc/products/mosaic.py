"""One map of a region from many mapped scene pairs: each pixel takes the best observation, window by window.

Every scene's class map, confidence and cloud mask are read through GDAL warped views onto the
product grid (nearest neighbour: classes and codes must not be averaged), one band of rows at a time,
so memory is bounded by the band, never by the region. The rule for a pixel seen by several scenes:

1. optics that were clear beat cloudy optics, which beat a prediction without optics (SAR only);
2. within the same optics state, the highest calibrated confidence wins;
3. a tie goes to the scene listed first (oldest Sentinel-2 acquisition, then pair id), so the result
   never depends on timing.

Pixels outside the AOI are nodata. The outputs are written to temporary GeoTIFFs and published as
COGs atomically, so a killed run leaves nothing half-published and a rerun recomputes the same bytes
from the scene maps (which themselves resume, ``cloudlulc.mapping``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import geometry_mask
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from shapely.geometry import mapping

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.ingest.grid import Grid
from cloudlulc.io.gdal_env import bounded_block_cache
from cloudlulc.io.rasters import open_raster, publish_cog
from cloudlulc.io.vrt import warped_view
from cloudlulc.products.model import OPTICS_CODES
from cloudlulc.products.region import RegionGrid, footprint
from cloudlulc.products.style import write_category_names

log = logging.getLogger(__name__)

CLASS_NODATA = schema.IGNORE_INDEX
SCORE_NODATA = 0
EXACT = 1e-6
"""Error threshold (pixels) of the warps onto the product grid: practically exact (GDAL's default of 0.125
lets a pixel's neighbour win at some window edges, so the result would depend on the band size; 0 is
refused by GDAL)."""
ROWS_PER_BAND = 256
"""Rows of the product held at once (one band of every output, and one band of one scene's layers)."""
FLAGGED_CODES = [schema.CLOUD_THIN, schema.CLOUD_OPAQUE, schema.CLOUD_SHADOW]
"""Cloud-mask codes that make optics cloudy (thin and opaque cloud, shadow)."""
OPTICS_RANK = {OPTICS_CODES["clear"]: 3, OPTICS_CODES["cloudy"]: 2, OPTICS_CODES["absent"]: 1}


@dataclass(frozen=True)
class MappedScene:
    """One scene pair's published map and the layers that say how much to trust it."""

    code: int
    """Value this scene takes in the source band (1-based)."""
    map_uri: str
    confidence_uri: str
    optical_uri: str | None
    """None for a Sentinel-1-only map: its optics are absent everywhere."""
    cloud_mask_uri: str | None


@dataclass(frozen=True)
class MosaicStats:
    """What the mosaic found, per scene code."""

    decided_pixels: dict[int, int]
    """Pixels of the product each scene decided."""
    cloud_cover: dict[int, float | None]
    """Percent of each scene's valid optical pixels inside the AOI that its mask flags (None without optics)."""
    mapped_pixels: int


@dataclass
class _Best:
    """The winning observation so far for one band of rows."""

    key: np.ndarray
    classes: np.ndarray
    confidence: np.ndarray
    scene: np.ndarray
    optics: np.ndarray

    @classmethod
    def empty(cls, rows: int, width: int) -> _Best:
        shape = (rows, width)
        return cls(
            np.zeros(shape, np.uint16),
            np.full(shape, CLASS_NODATA, np.uint8),
            np.zeros(shape, np.uint8),
            np.zeros(shape, np.uint16),
            np.zeros(shape, np.uint16),
        )


def mosaic(
    scenes: Sequence[MappedScene], region: RegionGrid, outputs: dict[str, str], *, work_dir: str | Path | None = None
) -> MosaicStats:
    """Combine ``scenes`` over ``region`` into the ``classes``, ``confidence`` and ``source`` COGs of ``outputs``.

    Raises:
        DataError: no scene overlaps the AOI, or a scene's layers cannot be read.
    """
    grid = region.grid
    overlapping = [scene for scene in scenes if _overlaps(scene, region)]
    if not overlapping:
        raise DataError("aoi", f"no mapped scene overlaps the area of interest ({len(scenes)} scene(s) looked at)")
    decided = {scene.code: 0 for scene in scenes}
    cloudy = {scene.code: 0 for scene in scenes}
    seen = {scene.code: 0 for scene in scenes}
    with tempfile.TemporaryDirectory(prefix="cloudlulc-mosaic-", dir=work_dir) as folder:
        partials = _create_partials(Path(folder), region)
        with ExitStack() as stack:
            stack.enter_context(bounded_block_cache())  # GDAL's default cache would grow with the region
            layers = {scene.code: stack.enter_context(_warped_layers(scene, region)) for scene in overlapping}
            writers = {name: stack.enter_context(rasterio.open(path, "r+")) for name, path in partials.items()}
            for row in range(0, grid.height, ROWS_PER_BAND):
                window = Window(0, row, grid.width, min(ROWS_PER_BAND, grid.height - row))
                best = _best_of_band(overlapping, layers, region, window, cloudy, seen)
                _write_band(writers, window, best)
                for code, count in zip(*np.unique(best.scene[best.scene > 0], return_counts=True), strict=True):
                    decided[int(code)] += int(count)
        _publish(partials, outputs)
    cover = {code: (100.0 * cloudy[code] / seen[code] if seen[code] else None) for code in decided}
    return MosaicStats(decided, cover, sum(decided.values()))


def _overlaps(scene: MappedScene, region: RegionGrid) -> bool:
    """Whether the scene's map footprint meets the AOI (a scene beside it is skipped, saying so)."""
    meets = footprint(scene.map_uri).intersects(region.aoi)
    if not meets:
        log.warning("%s: outside the area of interest, not used", scene.map_uri)
    return meets


@contextmanager
def _warped_layers(scene: MappedScene, region: RegionGrid) -> Iterator[dict[str, WarpedVRT | None]]:
    """The scene's class map, confidence, cloud mask and first optical band as views on the product grid."""
    grid = region.grid
    sources = {
        "classes": (scene.map_uri, CLASS_NODATA),
        "confidence": (scene.confidence_uri, SCORE_NODATA),
        "cloud_mask": (scene.cloud_mask_uri, None),
        "optical": (scene.optical_uri, 0),
    }
    with ExitStack() as stack:
        views: dict[str, WarpedVRT | None] = {}
        for name, (uri, nodata) in sources.items():
            if uri is None:
                views[name] = None
                continue
            dataset: DatasetReader = stack.enter_context(open_raster(uri))
            fill = nodata if nodata is not None else dataset.nodata
            views[name] = stack.enter_context(
                warped_view(dataset, grid, Resampling.nearest, src_nodata=dataset.nodata, nodata=fill, tolerance=EXACT)
            )
        yield views


def _best_of_band(
    scenes: Sequence[MappedScene],
    layers: dict[int, dict[str, WarpedVRT | None]],
    region: RegionGrid,
    window: Window,
    cloudy: dict[int, int],
    seen: dict[int, int],
) -> _Best:
    """The winning observation of every pixel of one band of rows; counts each scene's cloudy pixels."""
    rows, width = int(window.height), int(window.width)
    inside = geometry_mask(
        [mapping(region.aoi_projected)],
        out_shape=(rows, width),
        transform=region.grid.window_transform(window),
        invert=True,
    )
    best = _Best.empty(rows, width)
    for scene in scenes:
        views = layers[scene.code]
        classes = _read(views["classes"], window, CLASS_NODATA, rows, width)
        confidence = _read(views["confidence"], window, SCORE_NODATA, rows, width)
        optics = _optics_state(views, window, rows, width)
        valid = inside & (classes != CLASS_NODATA)
        has_optics = valid & (optics != OPTICS_CODES["absent"])
        seen[scene.code] += int(has_optics.sum())
        cloudy[scene.code] += int((has_optics & (optics == OPTICS_CODES["cloudy"])).sum())
        rank = np.select([optics == code for code in OPTICS_RANK], list(OPTICS_RANK.values()), 0).astype(np.uint16)
        key = np.where(valid, rank * 256 + confidence, 0).astype(np.uint16)
        better = key > best.key
        best.key[better] = key[better]
        best.classes[better] = classes[better]
        best.confidence[better] = confidence[better]
        best.scene[better] = scene.code
        best.optics[better] = optics[better]
    return best


def _read(view: WarpedVRT | None, window: Window, fill: int, rows: int, width: int) -> np.ndarray:
    if view is None:
        return np.full((rows, width), fill, np.uint8)
    return view.read(1, window=window)


def _optics_state(views: dict[str, WarpedVRT | None], window: Window, rows: int, width: int) -> np.ndarray:
    """Clear, cloudy or absent optics per pixel: no optical file or 0 DN is absent; a flagged mask is cloudy."""
    if views["optical"] is None:
        return np.full((rows, width), OPTICS_CODES["absent"], np.uint16)
    present = views["optical"].read(1, window=window) != 0
    flagged = (
        np.zeros((rows, width), bool)
        if views["cloud_mask"] is None
        else np.isin(views["cloud_mask"].read(1, window=window), FLAGGED_CODES)
    )
    state = np.where(flagged, OPTICS_CODES["cloudy"], OPTICS_CODES["clear"])
    return np.where(present, state, OPTICS_CODES["absent"]).astype(np.uint16)


def partial_profile(grid: Grid) -> dict[str, Any]:
    """Creation options of a product's temporary GeoTIFF on ``grid`` (tiled, compressed; COG made from it)."""
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "crs": grid.crs,
        "transform": grid.transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "bigtiff": "if_safer",
    }


def _create_partials(folder: Path, region: RegionGrid) -> dict[str, Path]:
    """Empty tiled GeoTIFFs on the product grid: classes (palette), confidence, source (scene, optics)."""
    common = partial_profile(region.grid)
    paths = {name: folder / f"{name}.tif" for name in ("classes", "confidence", "source")}
    with rasterio.open(paths["classes"], "w", count=1, dtype="uint8", nodata=CLASS_NODATA, **common) as dataset:
        dataset.write_colormap(1, schema.colour_table())
        dataset.set_band_description(1, "land-cover class")
    with rasterio.open(paths["confidence"], "w", count=1, dtype="uint8", nodata=SCORE_NODATA, **common) as dataset:
        dataset.set_band_description(1, "calibrated confidence: p = (value - 1) / 254")
        dataset.scales, dataset.offsets = (1 / 254,), (-1 / 254,)
    with rasterio.open(paths["source"], "w", count=2, dtype="uint16", nodata=0, **common) as dataset:
        dataset.set_band_description(1, "scene (code of the product's scene list)")
        dataset.set_band_description(2, "optics: 1 clear, 2 cloudy, 3 absent")
    return paths


def _write_band(writers: dict[str, rasterio.io.DatasetWriter], window: Window, best: _Best) -> None:
    writers["classes"].write(best.classes, 1, window=window)
    writers["confidence"].write(best.confidence, 1, window=window)
    writers["source"].write(np.stack([best.scene, best.optics]), window=window)


def _publish(partials: dict[str, Path], outputs: dict[str, str]) -> None:
    """Each partial as a validated COG at its output URI; class names beside the class map."""
    resampling = {"classes": "mode", "confidence": "average", "source": "nearest"}
    for name, path in partials.items():
        publish_cog(path, outputs[name], overview_resampling=resampling[name])
    write_category_names(outputs["classes"])
