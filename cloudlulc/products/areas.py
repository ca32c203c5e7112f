"""Class areas of a product on the ellipsoid, once per pixel of the mosaic, overall and per AOI feature.

A UTM pixel's ground area is not its nominal 100 m2: the projection's scale factor changes it by up
to about 0.1 % across a zone. Areas are therefore computed with pyproj's geodesic polygon area
(``Geod.polygon_area_perimeter`` on the WGS84 ellipsoid) of cells of ``CELL`` x ``CELL`` pixels,
shared equally by their pixels (the scale factor varies by far less than 1e-6 inside a cell), and
counted window by window, so memory does not grow with the region.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pyproj import Geod, Transformer
from rasterio.features import geometry_mask
from rasterio.windows import Window
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from cloudlulc import schema
from cloudlulc.ingest.grid import Grid, to_crs
from cloudlulc.io.gdal_env import bounded_block_cache
from cloudlulc.io.rasters import open_raster, read_window
from cloudlulc.products.model import ClassArea

CELL = 256
"""Side in pixels of the cells whose geodesic area is computed (and of the windows read)."""
EDGE_POINTS = 8
"""Points per cell edge in the geodesic polygon (edges of a projected cell are curves in lon/lat)."""
WGS84 = Geod(ellps="WGS84")


def cell_area_m2(grid: Grid, window: Window, transformer: Transformer) -> float:
    """Geodesic area of the ground under ``window`` of ``grid``, in m2."""
    left, top = grid.transform @ (window.col_off, window.row_off)
    right, bottom = grid.transform @ (window.col_off + window.width, window.row_off + window.height)
    steps = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)
    xs = np.concatenate([left + (right - left) * steps, np.full(EDGE_POINTS, right), right - (right - left) * steps])
    ys = np.concatenate([np.full(EDGE_POINTS, top), top + (bottom - top) * steps, np.full(EDGE_POINTS, bottom)])
    xs = np.concatenate([xs, np.full(EDGE_POINTS, left)])
    ys = np.concatenate([ys, bottom - (bottom - top) * steps])
    lons, lats = transformer.transform(xs, ys)
    area, _ = WGS84.polygon_area_perimeter(lons, lats)
    return abs(float(area))


def product_areas(
    classes_uri: str, grid: Grid, features: Sequence[BaseGeometry] = ()
) -> tuple[tuple[ClassArea, ...], tuple[tuple[ClassArea, ...], ...]]:
    """Class areas (km2) of the product map overall and inside each AOI feature (WGS84 polygons).

    With one feature (or none) the per-feature areas are empty: they would repeat the overall ones.
    """
    transformer = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    projected = [mapping(to_crs(feature, grid.crs)) for feature in features] if len(features) > 1 else []
    overall = np.zeros(256, np.float64)
    per_feature = np.zeros((len(projected), 256), np.float64)
    with bounded_block_cache(), open_raster(classes_uri) as dataset:
        for row in range(0, grid.height, CELL):
            for col in range(0, grid.width, CELL):
                window = Window(col, row, min(CELL, grid.width - col), min(CELL, grid.height - row))
                values = read_window(dataset, window, indexes=[1])[0]
                pixel_m2 = cell_area_m2(grid, window, transformer) / (window.width * window.height)
                overall += np.bincount(values.ravel(), minlength=256) * pixel_m2
                for index, feature in enumerate(projected):
                    inside = geometry_mask(
                        [feature], out_shape=values.shape, transform=grid.window_transform(window), invert=True
                    )
                    per_feature[index] += np.bincount(values[inside], minlength=256) * pixel_m2
    return _areas(overall), tuple(_areas(row) for row in per_feature)


def _areas(m2: np.ndarray) -> tuple[ClassArea, ...]:
    return tuple(ClassArea(c.id, c.name, float(m2[c.id] / 1e6)) for c in schema.CLASSES)
