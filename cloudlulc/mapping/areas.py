"""Class areas of a finished map in km², read block row by block row.

Projected CRS: every pixel has the area of the transform's pixel parallelogram (|det|, in the CRS's
linear unit converted to metres). Geographic CRS (north-up grids only): pixel area varies with
latitude only, so each row gets the geodesic area of one of its pixels on the WGS84 ellipsoid, from
pyproj's ``Geod`` through :func:`cloudlulc.products.areas.cell_area_m2` (the one owner of geodesic
cell areas); rotated geographic grids are refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from itertools import pairwise

import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.ingest.grid import Grid
from cloudlulc.io.rasters import open_raster, read_window
from cloudlulc.io.storage import staged_output
from cloudlulc.products.areas import cell_area_m2

M2_PER_KM2 = 1e6
ROWS_PER_READ = 512


@dataclass(frozen=True)
class ClassArea:
    """Pixels and area of one class."""

    id: int
    name: str
    pixels: int
    km2: float


@dataclass(frozen=True)
class ClassAreas:
    """Per-class pixel counts and areas of a map, and how the areas were computed."""

    classes: list[ClassArea]
    nodata_pixels: int
    mapped_pixels: int
    mapped_km2: float
    area_method: str  # "planar" (projected CRS) or "ellipsoidal" (geographic CRS)
    crs: str
    pixel_size: tuple[float, float]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """The areas as a JSON document (what is written beside the map)."""
        return json.dumps(asdict(self), indent=2) + "\n"


def row_areas_m2(crs: CRS, transform: Affine, height: int) -> np.ndarray:
    """Area in m² of one pixel of each row [height] of a grid.

    Raises:
        ValueError: a geographic grid that is not north-up (rows are not parallels).
    """
    if not crs.is_geographic:
        _, metres_per_unit = crs.linear_units_factor
        area = abs(transform.a * transform.e - transform.b * transform.d) * metres_per_unit**2
        return np.full(height, area, np.float64)
    if transform.b or transform.d:
        raise ValueError("geographic grid is rotated; reproject it to a north-up or projected grid")
    edges = np.clip(transform.f + transform.e * np.arange(height + 1), -90.0, 90.0)  # beyond a pole: 0 m²
    to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return np.array([_pixel_m2(crs, transform, top, bottom, to_lonlat) for top, bottom in pairwise(edges)])


def _pixel_m2(crs: CRS, transform: Affine, top: float, bottom: float, to_lonlat: Transformer) -> float:
    """Geodesic area of the first pixel of the row between latitudes ``top`` and ``bottom``."""
    row = Affine(transform.a, 0.0, transform.c, 0.0, bottom - top, top)
    return cell_area_m2(Grid(crs, row, 1, 1), Window(0, 0, 1, 1), to_lonlat)


def class_areas(map_uri: str) -> ClassAreas:
    """Count every class of a class map (uint8 ids, 255 = nodata) and convert counts to km²."""
    with open_raster(map_uri) as dataset:
        crs = dataset.crs
        if crs is None:
            raise DataError(map_uri, "map has no CRS: areas cannot be computed")
        try:
            areas = row_areas_m2(crs, dataset.transform, dataset.height)
        except ValueError as error:
            raise DataError(map_uri, str(error)) from error
        pixels = np.zeros(256, np.int64)
        m2 = np.zeros(256, np.float64)
        for row in range(0, dataset.height, ROWS_PER_READ):
            rows = min(ROWS_PER_READ, dataset.height - row)
            values = read_window(dataset, Window(0, row, dataset.width, rows), indexes=[1])[0]
            per_row = np.bincount((values + 256 * np.arange(rows)[:, None]).ravel(), minlength=256 * rows)
            per_row = per_row.reshape(rows, 256)
            pixels += per_row.sum(axis=0)
            m2 += areas[row : row + rows] @ per_row
        pixel_size = (abs(dataset.transform.a), abs(dataset.transform.e))
    classes = [ClassArea(c.id, c.name, int(pixels[c.id]), float(m2[c.id] / M2_PER_KM2)) for c in schema.CLASSES]
    mapped = sum(c.pixels for c in classes)
    notes = []
    unexpected = sorted(set(np.flatnonzero(pixels).tolist()) - schema.VALID_LABEL_VALUES)
    if unexpected:
        notes.append(f"values outside the class set found: {unexpected}")
    return ClassAreas(
        classes=classes,
        nodata_pixels=int(pixels[schema.IGNORE_INDEX]),
        mapped_pixels=mapped,
        mapped_km2=float(sum(c.km2 for c in classes)),
        area_method="ellipsoidal" if crs.is_geographic else "planar",
        crs=crs.to_string(),
        pixel_size=pixel_size,
        notes=notes,
    )


def write_class_areas(areas: ClassAreas, uri: str) -> None:
    """Write the areas JSON atomically to a local path or ``s3://`` URI."""
    with staged_output(uri) as temp_path:
        temp_path.write_text(areas.to_json())
