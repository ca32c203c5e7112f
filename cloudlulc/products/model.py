"""What a regional product is: one land-cover map of a region on a target date, its files and its lineage.

A product is built by :mod:`cloudlulc.products.mosaic` from the region's mapped scene pairs and then
published: STAC item (:mod:`cloudlulc.products.catalog`) and report page
(:mod:`cloudlulc.products.report`) both read this one description, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

OpticsState = Literal["clear", "cloudy", "absent"]
OPTICS_CODES: dict[OpticsState, int] = {"clear": 1, "cloudy": 2, "absent": 3}
"""Values of the source band's optics layer (0 = nodata): what the optics of the winning scene showed."""

ASSET_ROLES = ("classes", "confidence", "source", "areas", "style", "quicklook", "change", "transitions", "report")
"""The files a product may have, by role (``change`` and ``transitions`` only when an earlier product exists)."""


@dataclass(frozen=True)
class SceneUse:
    """One scene pair that fed a product, as the source band numbers it."""

    code: int
    """Value of the source band's scene layer for pixels this pair decided (1-based; 0 = nodata)."""
    pair_id: str
    s2_id: str | None
    s2_datetime: datetime | None
    s1_id: str | None
    s1_datetime: datetime | None
    cloud_cover: float | None
    """Percent of the scene's valid optical pixels inside the AOI flagged cloudy or shadowed by its mask."""
    pixels: int = 0
    """Pixels of the product this pair decided."""


@dataclass(frozen=True)
class Lineage:
    """Where a product came from: the model that mapped it and the data it read."""

    served_model: str
    """Triton model name (or ``onnx:``/``checkpoint:`` for in-process predictors)."""
    served_version: str
    registered_model: str | None
    registered_version: str | None
    data_hash: str
    """SHA-256 over the scene stacks' manifest checksums, in source-code order."""
    software_version: str


@dataclass(frozen=True)
class ClassArea:
    """Area of one class in a product (km2 on the ellipsoid), overall or in one AOI feature."""

    class_id: int
    name: str
    km2: float


@dataclass(frozen=True)
class RegionProduct:
    """One published land-cover map of a region on a target date."""

    region: str
    target_date: date
    item_id: str
    epsg: int
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    aoi: dict[str, Any]
    """The AOI as a GeoJSON geometry in WGS84 (a MultiPolygon when it has several features)."""
    assets: dict[str, str]
    """Role (``ASSET_ROLES``) -> URI, local or ``s3://``."""
    scenes: tuple[SceneUse, ...]
    lineage: Lineage
    areas: tuple[ClassArea, ...]
    feature_areas: tuple[tuple[ClassArea, ...], ...] = ()
    """Per AOI feature, in the AOI's order (empty when the AOI is one polygon)."""
    previous_item_id: str | None = None
    """The earlier product the change map compares with."""
    transitions_km2: dict[str, dict[str, float]] = field(default_factory=dict)
    """From-class name -> to-class name -> km2, where both products are confident (empty without a previous)."""
    agreement: dict[str, Any] | None = None
    """Agreement with a reference product (``products.agreement``), when one was given."""
    confidence_scale: float = 1 / 254
    confidence_offset: float = -1 / 254
    """The confidence band stores ``round(1 + 254 p)`` (0 = nodata): ``p = value * scale + offset``."""
