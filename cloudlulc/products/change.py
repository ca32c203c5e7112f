"""Change since the region's previous product: a from -> to class map and the transition areas.

Only pixels where both products are confident (calibrated probability at least ``min_confidence`` in
each) count, so a change is a change of land cover rather than of the model's doubt. Both products
must share their grid (same AOI, CRS and pixels); another grid is refused, naming both, because
resampling one product onto the other would invent changes along every class edge.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.ingest.grid import Grid
from cloudlulc.io.rasters import open_raster, publish_cog, raster_info, read_window
from cloudlulc.products.areas import CELL, cell_area_m2
from cloudlulc.products.mosaic import partial_profile

CHANGE_NODATA = 255
"""Change-map value where a product has no data or a confidence is below the threshold."""
CLASS_COUNT = len(schema.CLASSES)


def change_code(before: int, after: int) -> int:
    """The change map's value for a pixel that was class ``before`` and is class ``after``."""
    return before * CLASS_COUNT + after


def confidence_value(probability: float) -> int:
    """The stored confidence (1-255) of a calibrated probability."""
    return int(np.clip(np.ceil(1 + 254 * probability), 1, 255))


def check_same_grid(current_uri: str, previous_uri: str) -> None:
    """Refuse a previous product on another grid (different CRS, transform or size), naming both."""
    current, previous = raster_info(current_uri), raster_info(previous_uri)
    same = (
        current.crs == previous.crs
        and current.transform.almost_equals(previous.transform)
        and (current.width, current.height) == (previous.width, previous.height)
    )
    if not same:
        raise DataError(
            previous_uri,
            f"the previous product is on another grid ({previous.crs} {previous.width}x{previous.height} at "
            f"{tuple(previous.transform)[:6]}) than {current_uri} ({current.crs} {current.width}x{current.height} at "
            f"{tuple(current.transform)[:6]}); change maps need the same AOI and CRS",
        )


def change_map(
    current: dict[str, str], previous: dict[str, str], grid: Grid, out_uri: str, *, min_confidence: float = 0.5
) -> dict[str, dict[str, float]]:
    """Write the change map of two products' ``classes``/``confidence`` COGs; the transition areas (km2).

    Returns:
        From-class name -> to-class name -> km2 (on the ellipsoid), counting confident pixels only.
    """
    check_same_grid(current["classes"], previous["classes"])
    threshold = confidence_value(min_confidence)
    transitions = np.zeros((CLASS_COUNT, CLASS_COUNT), np.float64)
    transformer = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    with tempfile.TemporaryDirectory(prefix="cloudlulc-change-") as folder:
        partial = Path(folder) / "change.tif"
        with (
            open_raster(current["classes"]) as now_classes,
            open_raster(current["confidence"]) as now_confidence,
            open_raster(previous["classes"]) as then_classes,
            open_raster(previous["confidence"]) as then_confidence,
            rasterio.open(partial, "w", count=1, dtype="uint8", nodata=CHANGE_NODATA, **partial_profile(grid)) as out,
        ):
            out.set_band_description(1, f"change: before * {CLASS_COUNT} + after (255: no confident pair)")
            for row in range(0, grid.height, CELL):
                for col in range(0, grid.width, CELL):
                    window = Window(col, row, min(CELL, grid.width - col), min(CELL, grid.height - row))
                    after, before = (read_window(d, window, indexes=[1])[0] for d in (now_classes, then_classes))
                    sure = (read_window(now_confidence, window, indexes=[1])[0] >= threshold) & (
                        read_window(then_confidence, window, indexes=[1])[0] >= threshold
                    )
                    valid = sure & (after < CLASS_COUNT) & (before < CLASS_COUNT)
                    codes = np.where(valid, before.astype(np.int32) * CLASS_COUNT + after, CHANGE_NODATA)
                    out.write(codes.astype(np.uint8), 1, window=window)
                    counts = np.bincount(codes[valid].ravel(), minlength=CLASS_COUNT**2)[: CLASS_COUNT**2]
                    pixel_m2 = cell_area_m2(grid, window, transformer) / (window.width * window.height)
                    transitions += counts.reshape(CLASS_COUNT, CLASS_COUNT) * pixel_m2
        publish_cog(partial, out_uri, overview_resampling="nearest")
    names = [c.name for c in schema.CLASSES]
    return {
        names[i]: {names[j]: float(transitions[i, j] / 1e6) for j in range(CLASS_COUNT)} for i in range(CLASS_COUNT)
    }
