"""The product grid of a region: its AOI (one or several polygons), CRS and 10 m pixel grid.

The CRS is the AOI's dominant UTM zone, by the rule ingest uses for scene stacks
(``cloudlulc.ingest.grid.grid_crs_for``), unless the user names one. The grid covers the AOI's
bounds, edges snapped outward to whole 10 m pixels of that CRS, so a stack ingested in the same zone
lies on it pixel for pixel and no resampling shifts its classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import shapely
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.warp import transform_bounds
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from cloudlulc.errors import DataError, UsageError
from cloudlulc.ingest.grid import PIXEL_M, Grid, grid_crs_for, snapped_grid, to_crs
from cloudlulc.ingest.stac import load_aoi_features, parse_bbox
from cloudlulc.io.rasters import open_raster


@dataclass(frozen=True)
class RegionGrid:
    """Where a product lies: AOI features (WGS84), their union in the grid's CRS, and the grid."""

    features: tuple[BaseGeometry, ...]
    aoi: BaseGeometry
    aoi_projected: BaseGeometry
    grid: Grid

    @property
    def epsg(self) -> int:
        """EPSG code of the grid's CRS (a UTM zone)."""
        return int(self.grid.crs.to_epsg() or 0)

    def geojson(self) -> dict[str, object]:
        """The AOI as a GeoJSON geometry in WGS84."""
        return dict(mapping(self.aoi))


def region_grid(aoi: str, crs: str | None = None) -> RegionGrid:
    """The grid of ``aoi`` (a GeoJSON file, or ``west,south,east,north`` in degrees) in ``crs`` or its UTM zone.

    Raises:
        DataError: an unreadable, empty, zero-area or non-polygon AOI file.
        UsageError: a bbox or CRS that cannot be used.
    """
    features = _features(aoi)
    union = shapely.union_all(features)
    target = _crs(crs) if crs else grid_crs_for(union)
    projected = to_crs(union, target)
    if projected.area <= 0 or not projected.is_valid:
        raise DataError(aoi, f"the area of interest has no area in {target.to_string()}")
    grid = snapped_grid(projected, target, PIXEL_M)
    return RegionGrid(tuple(features), union, projected, grid)


def footprint(uri: str) -> BaseGeometry:
    """A raster's footprint in WGS84 (its bounds, densified along the edges), from its header alone."""
    with open_raster(uri) as dataset:
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds, densify_pts=21)
    return shapely.box(west, south, east, north)


def _features(aoi: str) -> list[BaseGeometry]:
    if Path(aoi).suffix.lower() in {".json", ".geojson"} or Path(aoi).exists():
        return load_aoi_features(aoi)
    return [parse_bbox(aoi)]


def _crs(text: str) -> CRS:
    try:
        crs = CRS.from_user_input(text)
    except CRSError as error:
        raise UsageError(f"--crs {text}: not a coordinate reference system ({error})") from None
    if not crs.is_projected:
        raise UsageError(f"--crs {text}: the product grid needs a projected CRS in metres (e.g. a UTM zone)")
    return crs
