"""Finding Sentinel acquisitions: a STAC API through pystac-client, or a static catalog in a folder or on S3.

Both sources go through the same filter (:func:`matches`), so an API that ignores part of a query (a
``query`` extension it does not support, say) and a static catalog that has no search at all give the
same answer for the same items.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import pystac
import shapely
from pystac.stac_io import DefaultStacIO
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from cloudlulc.errors import DataError, MissingObjectError, StorageError, UsageError
from cloudlulc.ingest import earth_search
from cloudlulc.io.storage import is_s3_uri, open_storage

DEFAULT_CATALOG = earth_search.CATALOG_URL
DEFAULT_S2_COLLECTION = earth_search.S2_COLLECTION
DEFAULT_S1_COLLECTION = earth_search.S1_COLLECTION
DEFAULT_PAIR_WINDOW_DAYS = 6
"""Largest S1/S2 time gap paired by default (DATA.md; Sentinel-1 revisits every 6 to 12 days)."""
API_TIMEOUT_S = 60

Mission = Literal["S2", "S1"]


@dataclass(frozen=True)
class Acquisition:
    """One STAC item of either mission, with the facts pairing and preparation need."""

    item: pystac.Item
    mission: Mission
    when: datetime
    footprint: BaseGeometry
    """Item geometry in WGS84 (lon, lat)."""

    @property
    def id(self) -> str:
        """The STAC item id."""
        return self.item.id

    @property
    def collection(self) -> str:
        """The item's collection id."""
        return self.item.collection_id or ""

    @property
    def cloud_cover(self) -> float | None:
        """Scene cloud cover in percent (``eo:cloud_cover``), None for SAR or when absent."""
        value = self.item.properties.get("eo:cloud_cover")
        return None if value is None else float(value)

    def summary(self) -> dict[str, Any]:
        """Plain facts for reports and JSON output."""
        return {
            "id": self.id,
            "collection": self.collection,
            "mission": self.mission,
            "datetime": self.when.isoformat().replace("+00:00", "Z"),
            "cloud_cover": self.cloud_cover,
            "href": self.item.get_self_href(),
        }


@dataclass(frozen=True)
class SearchQuery:
    """What to look for: where, when, how cloudy, and in which catalog and collections."""

    aoi: BaseGeometry
    """Area of interest in WGS84."""
    start: date
    end: date
    """Last day included."""
    max_cloud_cover: float = 100.0
    """Largest scene cloud cover (percent) of a Sentinel-2 acquisition."""
    catalog: str = DEFAULT_CATALOG
    """A STAC API URL, or a static catalog: ``catalog.json`` (or its folder) locally, on ``s3://`` or over HTTP."""
    s2_collection: str = DEFAULT_S2_COLLECTION
    s1_collection: str = DEFAULT_S1_COLLECTION
    pair_window_days: int = DEFAULT_PAIR_WINDOW_DAYS
    """Sentinel-1 is searched this many days beyond both ends of the range, so edge dates can pair."""

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise UsageError(f"date range: end {self.end} is before start {self.start}")
        if not 0.0 <= self.max_cloud_cover <= 100.0:
            raise UsageError(f"max cloud cover: must be a percentage in [0, 100], got {self.max_cloud_cover}")
        if self.pair_window_days < 0:
            raise UsageError(f"pair window: must be >= 0 days, got {self.pair_window_days}")


@dataclass(frozen=True)
class SearchResult:
    """Sentinel-2 and Sentinel-1 acquisitions found, each sorted by time then id."""

    s2: tuple[Acquisition, ...]
    s1: tuple[Acquisition, ...]


# --- area of interest ---------------------------------------------------------------------------


def parse_bbox(text: str) -> BaseGeometry:
    """``"west,south,east,north"`` in degrees to a polygon."""
    try:
        west, south, east, north = (float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise UsageError(f"bbox: expected 'west,south,east,north' in degrees, got {text!r}") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise UsageError(f"bbox: {text!r} is not a valid lon/lat box (west < east, south < north, in range)")
    return shapely.box(west, south, east, north)


def load_aoi(path: str | Path) -> BaseGeometry:
    """The union of the geometries of a GeoJSON file (geometry, Feature or FeatureCollection), in WGS84."""
    return shapely.union_all(load_aoi_features(path))


def load_aoi_features(path: str | Path) -> list[BaseGeometry]:
    """The polygons of a GeoJSON file, one per feature, in WGS84; refused when empty, invalid or not lon/lat."""
    source = str(path)
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(source, "area-of-interest file not found") from None
    except (OSError, ValueError) as error:
        raise DataError(source, f"not a readable GeoJSON file ({error})") from None
    geometries = list(_geometries(document))
    if not geometries:
        raise DataError(source, "holds no geometry (expected a Polygon, MultiPolygon, Feature or FeatureCollection)")
    try:
        features = [shape(g) for g in geometries]
        union = shapely.union_all(features)
    except (ValueError, TypeError, shapely.errors.GEOSException) as error:
        raise DataError(source, f"invalid geometry ({error})") from None
    if union.is_empty or union.area == 0:
        raise DataError(source, "the area of interest is empty (zero area)")
    west, south, east, north = union.bounds
    if west < -180 or east > 180 or south < -90 or north > 90:
        raise DataError(source, f"coordinates {union.bounds} are not lon/lat degrees (GeoJSON is WGS84)")
    return features


def _geometries(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    kind = document.get("type")
    if kind == "FeatureCollection":
        for feature in document.get("features", []):
            yield from _geometries(feature)
    elif kind == "Feature":
        if document.get("geometry"):
            yield document["geometry"]
    elif kind in {"Polygon", "MultiPolygon"}:
        yield document


# --- reading catalogs ---------------------------------------------------------------------------


class StorageStacIO(DefaultStacIO):
    """pystac I/O that also reads ``s3://`` through the product's storage layer (custom endpoints included)."""

    def read_text_from_href(self, href: str) -> str:
        """Read ``s3://`` through the storage layer, anything else as pystac does."""
        if is_s3_uri(href):
            parent, _, name = href.rpartition("/")
            return open_storage(parent).read_bytes(name).decode("utf-8")
        return super().read_text_from_href(href)


def is_static_catalog(source: str) -> bool:
    """Whether ``source`` names a static catalog (a JSON file or a folder) rather than a STAC API."""
    if source.endswith(".json") or is_s3_uri(source):
        return True
    return not source.startswith(("http://", "https://"))


def catalog_root(source: str) -> str | None:
    """The folder or ``s3://`` prefix holding a static catalog's files; None for a STAC API or HTTP catalog."""
    if not is_static_catalog(source) or source.startswith(("http://", "https://")):
        return None
    return _static_catalog_href(source).rpartition("/")[0] or "."


def _static_catalog_href(source: str) -> str:
    if source.endswith(".json"):
        return source
    return source.rstrip("/") + "/catalog.json"


def _static_items(source: str) -> Iterator[pystac.Item]:
    href = _static_catalog_href(source)
    try:
        catalog = pystac.Catalog.from_file(href, stac_io=StorageStacIO())
        yield from catalog.get_items(recursive=True)
    except MissingObjectError as error:
        raise DataError(href, f"cannot read the static STAC catalog ({error})") from error
    except StorageError as error:  # the store is unreachable or refuses us: exit 4, not bad data
        raise StorageError(f"static STAC catalog {href}: {error}") from error
    except (OSError, ValueError, KeyError, pystac.STACError) as error:
        raise DataError(href, f"cannot read the static STAC catalog ({type(error).__name__}: {error})") from error


def _api_items(query: SearchQuery, collection: str, start: date, end: date, cloud: bool) -> Iterator[pystac.Item]:
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        client = Client.open(query.catalog, timeout=API_TIMEOUT_S)
        search = client.search(
            collections=[collection],
            intersects=mapping(query.aoi),
            datetime=(_day_start(start), _day_end(end)),
            query={"eo:cloud_cover": {"lte": query.max_cloud_cover}} if cloud else None,
        )
        yield from search.items()
    except (APIError, OSError, ValueError) as error:
        raise DataError(query.catalog, f"STAC API search of {collection!r} failed ({error})") from error


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _day_end(day: date) -> datetime:
    return datetime.combine(day, time.max, tzinfo=UTC)


def item_datetime(item: pystac.Item) -> datetime:
    """The item's time in UTC (``datetime``, else the middle of ``start_datetime``/``end_datetime``)."""
    when = item.datetime
    if when is None:
        start, end = item.common_metadata.start_datetime, item.common_metadata.end_datetime
        if start is None or end is None:
            raise DataError(item.get_self_href() or item.id, "item has no datetime")
        when = start + (end - start) / 2
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def item_footprint(item: pystac.Item) -> BaseGeometry:
    """The item's geometry (else its bbox) as a shapely geometry in WGS84."""
    if item.geometry:
        return shape(item.geometry)
    if item.bbox:
        return shapely.box(*item.bbox[:2], *item.bbox[-2:])
    raise DataError(item.get_self_href() or item.id, "item has neither geometry nor bbox")


def matches(acquisition: Acquisition, aoi: BaseGeometry, start: date, end: date, max_cloud: float | None) -> bool:
    """The one filter both sources pass through: footprint meets the AOI, time in range, cloud cover low enough."""
    if not (_day_start(start) <= acquisition.when <= _day_end(end)):
        return False
    if not acquisition.footprint.intersects(aoi):
        return False
    return not (max_cloud is not None and acquisition.cloud_cover is not None and acquisition.cloud_cover > max_cloud)


def _acquisitions(items: Iterable[pystac.Item], collection: str, mission: Mission) -> Iterator[Acquisition]:
    for item in items:
        if item.collection_id != collection:
            continue
        yield Acquisition(item, mission, item_datetime(item), item_footprint(item))


def search(query: SearchQuery) -> SearchResult:
    """Sentinel-2 acquisitions in the date range and Sentinel-1 ones within the pairing window around it."""
    s1_start = query.start - timedelta(days=query.pair_window_days)
    s1_end = query.end + timedelta(days=query.pair_window_days)
    if is_static_catalog(query.catalog):
        items = list(_static_items(query.catalog))
        s2_items: Iterable[pystac.Item] = items
        s1_items: Iterable[pystac.Item] = items
    else:
        s2_items = _api_items(query, query.s2_collection, query.start, query.end, cloud=True)
        s1_items = _api_items(query, query.s1_collection, s1_start, s1_end, cloud=False)
    s2 = [
        a
        for a in _acquisitions(s2_items, query.s2_collection, "S2")
        if matches(a, query.aoi, query.start, query.end, query.max_cloud_cover)
    ]
    s1 = [
        a for a in _acquisitions(s1_items, query.s1_collection, "S1") if matches(a, query.aoi, s1_start, s1_end, None)
    ]
    order = lambda a: (a.when, a.id)  # noqa: E731
    return SearchResult(tuple(sorted(s2, key=order)), tuple(sorted(s1, key=order)))
