"""The output grid of an ingest run: one UTM CRS at 10 m, aligned so chips of every run coincide.

Choice for an area of interest that crosses a UTM zone boundary (our choice, stated in the run summary
and the manifest): the whole run uses the AOI's dominant UTM zone (WGS84, the zone holding the largest
share of its area; north or south by its centroid); acquisitions delivered in a neighbouring zone are
warped onto it. Regional products choose their CRS by the same rule, so they and the scene stacks
they are built from share a zone. One grid keeps chips of different
dates over the same ground identical in extent, which the split assignment and time series rely on.
Grid origins are multiples of the chip size in metres, so two runs over overlapping AOIs cut the
same chips.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_geom
from rasterio.windows import Window
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from cloudlulc.ingest import earth_search

PIXEL_M = earth_search.PIXEL_M
"""Output ground sampling distance (the 10 m bands of Sentinel-2)."""


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    def window_box(self, window: Window) -> BaseGeometry:
        """The footprint of ``window`` in the grid's CRS."""
        left, top = self.transform @ (window.col_off, window.row_off)
        right, bottom = self.transform @ (window.col_off + window.width, window.row_off + window.height)
        return shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))

    def window_transform(self, window: Window) -> Affine:
        """Transform of a raster holding just ``window``."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)


@dataclass(frozen=True)
class Chip:
    """One chip of the grid: its window and its place in the global chip lattice of the CRS."""

    column: int
    """Global lattice index: floor(left / chip extent in metres)."""
    row: int
    """Global lattice index: floor(top / chip extent in metres)."""
    window: Window


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone holding (lon, lat) (standard 6-degree zones; the Norway exceptions are ignored)."""
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + _zone(lon))


def grid_crs_for(aoi: BaseGeometry) -> CRS:
    """The AOI's dominant UTM zone (largest share of its area, in lon/lat degrees; ties to the west).

    Shares are compared in degrees squared: within one AOI the zones' strips have the same latitudes,
    so the order of the shares is the order of their areas on the ground.
    """
    west, _, east, _ = aoi.bounds
    zones = range(_zone(west), _zone(east) + 1)
    shares = [aoi.intersection(shapely.box(-180 + 6 * (z - 1), -90, -180 + 6 * z, 90)).area for z in zones]
    zone = zones[max(range(len(shares)), key=lambda i: (shares[i], -i))]
    return CRS.from_epsg((32600 if aoi.centroid.y >= 0 else 32700) + zone)


def _zone(lon: float) -> int:
    return min(60, max(1, math.floor((lon + 180.0) / 6.0) + 1))


def to_crs(geometry: BaseGeometry, crs: CRS) -> BaseGeometry:
    """A WGS84 geometry in ``crs`` (densified by GDAL, so long edges bend as they should)."""
    return shape(transform_geom("EPSG:4326", crs, mapping(geometry), precision=-1))


def snapped_grid(area: BaseGeometry, crs: CRS, align_m: float) -> Grid:
    """The 10 m grid covering ``area`` (in ``crs``), its edges snapped outward to multiples of ``align_m``."""
    west, south, east, north = (round(value, 6) for value in area.bounds)  # a reprojected edge's 1e-10 m is not a pixel
    left, top = math.floor(west / align_m) * align_m, math.ceil(north / align_m) * align_m
    right, bottom = math.ceil(east / align_m) * align_m, math.floor(south / align_m) * align_m
    width, height = round((right - left) / PIXEL_M), round((top - bottom) / PIXEL_M)
    return Grid(crs, Affine(PIXEL_M, 0.0, left, 0.0, -PIXEL_M, top), max(width, 0), max(height, 0))


def chips(grid: Grid, chip_size: int) -> Iterator[Chip]:
    """Every chip of a grid whose origin is a multiple of the chip extent (see :func:`snapped_grid`)."""
    extent_m = chip_size * PIXEL_M
    left, top = grid.transform.c, grid.transform.f
    for row_off in range(0, grid.height - chip_size + 1, chip_size):
        for col_off in range(0, grid.width - chip_size + 1, chip_size):
            column = round(left / extent_m) + col_off // chip_size
            row = round(top / extent_m) - row_off // chip_size
            yield Chip(column, row, Window(col_off, row_off, chip_size, chip_size))
