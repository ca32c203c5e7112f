"""Publishing regional products to a static STAC catalogue beside the maps, and reading them back.

Layout under the catalogue root (a folder or an ``s3://`` prefix)::

    catalog.json
    <region>/collection.json
    <region>/<item_id>/<item_id>.json

Every href between these files is relative (a self-contained catalogue), so the tree can be copied or
moved as is. A publish writes the item first, then its collection, then the root catalogue, each
atomically: a run killed midway leaves at worst an item that nothing links yet, never a link to a
missing file. Every object is validated before it is written, offline, against schemas shipped in
``stac_schemas/`` (a catalogue job on a cluster without internet access must still check its output).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any

import pystac
import shapely.geometry
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterBand, RasterExtension
from pystac.utils import datetime_to_str
from rasterio.io import DatasetReader
from rio_stac.stac import get_projection_info, get_raster_info

from cloudlulc import schema
from cloudlulc.errors import DataError, MissingObjectError, StorageError
from cloudlulc.io.rasters import open_raster
from cloudlulc.io.storage import S3Storage, Storage, is_s3_uri, open_storage
from cloudlulc.products.model import ASSET_ROLES, RegionProduct
from cloudlulc.products.stac_validation import validate_stac

CATALOG_ID = "cloudlulc"
CATALOG_KEY = "catalog.json"
COLLECTION_NAME = "collection.json"
PREFIX = "cloudlulc"
"""Namespace of the product's own item properties (lineage, areas)."""
LICENSE = "other"
"""STAC 1.1 license field: the products carry no SPDX licence of their own (``proprietary`` is deprecated)."""
VIRTUAL_ROOT = "/cloudlulc-catalog"
"""Stand-in absolute root the objects are laid out under before pystac makes every link relative.

The written JSON then never depends on where the catalogue lives, so local and S3 copies are identical."""

QML_MEDIA_TYPE = "application/xml"
"""A QGIS style has no registered media type; it is an XML document, and RFC 6648 advises against ``x-`` types."""
MEDIA_TYPES: dict[str, str] = {
    ".tif": pystac.MediaType.COG,
    ".tiff": pystac.MediaType.COG,
    ".json": pystac.MediaType.JSON,
    ".geojson": pystac.MediaType.GEOJSON,
    ".png": pystac.MediaType.PNG,
    ".html": pystac.MediaType.HTML,
    ".qml": QML_MEDIA_TYPE,
    ".csv": "text/csv",
    ".txt": pystac.MediaType.TEXT,
}
RASTER_SUFFIXES = (".tif", ".tiff")
ROLES: dict[str, list[str]] = {
    "classes": ["data"],
    "confidence": ["data", "quality"],
    "source": ["metadata", "lineage"],
    "areas": ["metadata"],
    "style": ["style"],
    "quicklook": ["overview", "thumbnail"],
    "change": ["data"],
    "transitions": ["metadata"],
    "report": ["metadata"],
}
TITLES: dict[str, str] = {
    "classes": "Land-cover classes",
    "confidence": "Calibrated confidence of the class",
    "source": "Scene and optics state that decided each pixel",
    "areas": "Class areas (km2)",
    "style": "QGIS layer style of the class map",
    "quicklook": "Quicklook",
    "change": "Change since the previous product",
    "transitions": "Class transitions since the previous product (km2)",
    "report": "Product report",
}
CATEGORICAL = frozenset({"classes", "source", "change"})
"""Bands whose values are codes: means, histograms and scale/offset say nothing about them."""
CONFIDENCE_NODATA = 0
SHA256_MULTIHASH = "1220"
"""Multihash prefix of a SHA-256 digest (code 0x12, length 0x20), as ``file:checksum`` wants."""
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --- Building the item --------------------------------------------------------------------------------------------


def item_key(product: RegionProduct) -> str:
    """Key of the product's item JSON under the catalogue root."""
    return f"{product.region}/{product.item_id}/{product.item_id}.json"


def build_item(product: RegionProduct, catalog_uri: str) -> pystac.Item:
    """The product's STAC item, its asset hrefs relative to where :func:`publish_item` puts it.

    Reads each asset once: rasters for their grid and bands, every file for its size and checksum.
    """
    _check_names(product)
    if "classes" not in product.assets:
        raise DataError(product.item_id, "the product has no 'classes' asset; its grid describes the item")
    scene_times = _scene_datetimes(product)
    midnight = datetime.combine(product.target_date, time(), tzinfo=UTC)
    item = pystac.Item(
        id=product.item_id,
        geometry=json.loads(json.dumps(product.aoi)),
        bbox=list(shapely.geometry.shape(product.aoi).bounds),
        datetime=midnight,
        start_datetime=min(scene_times, default=midnight),
        end_datetime=max(scene_times, default=midnight),
        properties={"title": f"Land cover of {product.region} on {product.target_date.isoformat()}"},
    )
    item.properties.update(_lineage_properties(product))
    key = item_key(product)
    for role in sorted(product.assets, key=ASSET_ROLES.index):
        uri = product.assets[role]
        asset = pystac.Asset(
            href=_asset_href(uri, catalog_uri, key),
            title=TITLES[role],
            media_type=_media_type(uri),
            roles=list(ROLES[role]),
        )
        item.add_asset(role, asset)
        _describe_file(asset, uri)
        if uri.lower().endswith(RASTER_SUFFIXES):
            _describe_raster(item, asset, role, uri, product)
    return item


def _check_names(product: RegionProduct) -> None:
    """Region and item id become folder names: refuse anything that could escape the catalogue."""
    for what, name in (("region", product.region), ("item id", product.item_id)):
        if not SAFE_NAME.match(name) or ".." in name:
            raise DataError(product.item_id, f"{what} {name!r} cannot name a catalogue folder (letters, digits, ._-)")
    unknown = sorted(set(product.assets) - set(ASSET_ROLES))
    if unknown:
        raise DataError(product.item_id, f"unknown asset roles {unknown}; known: {list(ASSET_ROLES)}")


def _utc(moment: datetime) -> datetime:
    """Scene times without a zone are UTC (Sentinel metadata always is)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _scene_datetimes(product: RegionProduct) -> list[datetime]:
    times = [t for scene in product.scenes for t in (scene.s2_datetime, scene.s1_datetime) if t is not None]
    return [_utc(t) for t in times]


def _lineage_properties(product: RegionProduct) -> dict[str, Any]:
    """Lineage, scenes and areas under the ``cloudlulc:`` prefix; absent values are left out, not nulled."""
    lineage = product.lineage
    scenes = product.scenes
    fields: dict[str, Any] = {
        "region": product.region,
        "registered_model": lineage.registered_model,
        "registered_version": lineage.registered_version,
        "served_model": lineage.served_model,
        "served_version": lineage.served_version,
        "data_hash": lineage.data_hash,
        "software_version": lineage.software_version,
        "previous_item_id": product.previous_item_id,
        "s2_item_ids": sorted({s.s2_id for s in scenes if s.s2_id}),
        "s1_item_ids": sorted({s.s1_id for s in scenes if s.s1_id}),
        "s2_datetimes": sorted({datetime_to_str(_utc(s.s2_datetime)) for s in scenes if s.s2_datetime}),
        "s1_datetimes": sorted({datetime_to_str(_utc(s.s1_datetime)) for s in scenes if s.s1_datetime}),
        "scenes": [_scene_fields(scene) for scene in scenes],
        "areas_km2": {area.name: area.km2 for area in product.areas},
        "feature_areas_km2": [{area.name: area.km2 for area in feature} for feature in product.feature_areas],
        "transitions_km2": product.transitions_km2,
        "agreement": product.agreement,
    }
    kept = {f"{PREFIX}:{name}": value for name, value in fields.items() if value not in (None, [], {})}
    return json.loads(json.dumps(kept, default=_plain))


def _scene_fields(scene: Any) -> dict[str, Any]:
    fields = {
        "code": scene.code,
        "pair_id": scene.pair_id,
        "s2_id": scene.s2_id,
        "s2_datetime": datetime_to_str(_utc(scene.s2_datetime)) if scene.s2_datetime else None,
        "s1_id": scene.s1_id,
        "s1_datetime": datetime_to_str(_utc(scene.s1_datetime)) if scene.s1_datetime else None,
        "cloud_cover": scene.cloud_cover,
        "pixels": scene.pixels,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _plain(value: Any) -> Any:
    """JSON for the numpy scalars and arrays an agreement report may hold."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _asset_href(uri: str, catalog_uri: str, key: str) -> str:
    """Relative to the item JSON when the asset lives under the catalogue root, absolute otherwise."""
    if is_s3_uri(uri) != is_s3_uri(catalog_uri):
        return uri if is_s3_uri(uri) else os.path.abspath(uri)
    if is_s3_uri(uri):
        root, target = catalog_uri.rstrip("/"), uri
    else:
        root, target = os.path.abspath(catalog_uri), os.path.abspath(uri)
    if not target.startswith(root.rstrip("/") + "/"):
        return target
    relative = target[len(root.rstrip("/")) + 1 :].replace(os.sep, "/")
    return posixpath.relpath(relative, posixpath.dirname(key))


def _media_type(uri: str) -> str | None:
    return MEDIA_TYPES.get(posixpath.splitext(uri.lower())[1])


def _split(uri: str) -> tuple[str, str]:
    """(folder, name) of a file URI, for a Storage opened at the folder."""
    if is_s3_uri(uri):
        folder, _, name = uri.rpartition("/")
        return folder, name
    return os.path.split(os.path.abspath(uri))


def _describe_file(asset: pystac.Asset, uri: str) -> None:
    """``file:size`` and ``file:checksum`` (multihash SHA-256), so a reader can check what it downloaded."""
    folder, name = _split(uri)
    storage = open_storage(folder)
    file_ext = FileExtension.ext(asset, add_if_missing=True)
    file_ext.checksum = SHA256_MULTIHASH + storage.sha256(name)
    file_ext.size = _file_size(storage, name)


def _file_size(storage: Storage, name: str) -> int:
    """Bytes of an object: a stat locally, a HEAD request on S3 (Storage has no size call of its own)."""
    if not isinstance(storage, S3Storage):
        try:
            return os.stat(storage.join(name)).st_size
        except FileNotFoundError as error:
            raise MissingObjectError(f"{storage.join(name)}: no such file") from error
    from botocore.exceptions import BotoCoreError, ClientError

    key = f"{storage.prefix}/{name}" if storage.prefix else name
    try:
        return int(storage.client.head_object(Bucket=storage.bucket, Key=key)["ContentLength"])
    except (ClientError, BotoCoreError) as error:
        raise StorageError(f"{storage.join(name)}: cannot read its size: {error}") from error


def _describe_raster(item: pystac.Item, asset: pystac.Asset, role: str, uri: str, product: RegionProduct) -> None:
    """Raster bands of any COG asset; the item's projection and the class legend from the class map."""
    with open_raster(uri) as dataset:
        bands = [_band(info, role, dataset, product) for info in get_raster_info(dataset)]
        RasterExtension.ext(asset, add_if_missing=True).bands = [RasterBand(band) for band in bands]
        if role != "classes":
            return
        projection = get_projection_info(dataset)
    _check_grid(projection, product, uri)
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        epsg=projection["epsg"], shape=projection["shape"], transform=projection["transform"], bbox=projection["bbox"]
    )
    classification = ClassificationExtension.ext(asset, add_if_missing=True)
    classification.classes = _legend(bands[0]["nodata"])


def _band(info: dict[str, Any], role: str, dataset: DatasetReader, product: RegionProduct) -> dict[str, Any]:
    """One rio-stac band, with the product's conventions where the file cannot carry them."""
    band = {"spatial_resolution": abs(dataset.transform.a), **info}
    if role in CATEGORICAL:
        for name in ("statistics", "histogram", "scale", "offset"):
            band.pop(name, None)
    if role == "classes":
        band.setdefault("nodata", schema.IGNORE_INDEX)
    if role == "confidence":
        band.setdefault("nodata", CONFIDENCE_NODATA)
        band["scale"], band["offset"] = product.confidence_scale, product.confidence_offset
    if isinstance(band.get("nodata"), float) and band["nodata"].is_integer() and "int" in band["data_type"]:
        band["nodata"] = int(band["nodata"])  # GDAL reports 255 as 255.0; an integer band's nodata is an integer
    return band


def _check_grid(projection: dict[str, Any], product: RegionProduct, uri: str) -> None:
    """The class map must be on the grid the product describes, or the item would lie about one of them."""
    described = (product.epsg, [product.height, product.width], list(product.transform))
    found = (projection["epsg"], projection["shape"], projection["transform"][:6])
    if described[:2] != found[:2] or any(abs(a - b) > 1e-6 for a, b in zip(described[2], found[2], strict=True)):
        raise DataError(uri, f"grid {found} differs from the product's {described} (EPSG, shape, transform)")


def _legend(nodata: float) -> list[Classification]:
    """Class values, machine names, titles and colours of the data contract, and the nodata value."""
    classes = [
        Classification.create(
            value=lulc.id,
            name=re.sub(r"[^0-9A-Za-z]+", "_", lulc.name.lower()),
            title=lulc.name,
            color_hint="{:02X}{:02X}{:02X}".format(*lulc.colour),
        )
        for lulc in schema.CLASSES
    ]
    return [*classes, Classification.create(value=int(nodata), name="nodata", title="No data", nodata=True)]


# --- Publishing ---------------------------------------------------------------------------------------------------


def publish_item(product: RegionProduct, catalog_uri: str, *, storage: Storage | None = None) -> str:
    """Write the product's item, then its region's collection, then the root catalogue; returns the item's URI.

    Publishing the same item again replaces it and writes byte-identical files. ``storage`` (default: opened
    at ``catalog_uri``) lets a caller bring its own endpoint.

    Raises:
        DataError: an asset is unreadable, off the product's grid, or an object fails its schemas.
        StorageError: the catalogue cannot be read or written.
    """
    storage = storage or open_storage(catalog_uri)
    item = build_item(product, catalog_uri)
    others = [i for i in _linked_items(storage, product.region) if i.id != item.id]
    regions = {*_catalog_regions(storage), product.region}
    catalog, collection = _assemble(product.region, [*others, item], regions)
    documents = [
        (item_key(product), item.to_dict(include_self_link=False, transform_hrefs=True)),
        (f"{product.region}/{COLLECTION_NAME}", collection.to_dict(include_self_link=False, transform_hrefs=True)),
        (CATALOG_KEY, catalog.to_dict(include_self_link=False, transform_hrefs=True)),
    ]
    for _, document in documents:
        validate_stac(document)
    for key, document in documents:  # leaves first: nothing ever links a file that is not written yet
        storage.write_bytes(key, _json_bytes(document))
    return storage.join(item_key(product))


def _json_bytes(document: dict[str, Any]) -> bytes:
    """Stable text: same dict, same bytes (republishing must not change a file)."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _assemble(region: str, items: list[pystac.Item], regions: set[str]) -> tuple[pystac.Catalog, pystac.Collection]:
    """Root catalogue and the region's collection, laid out under VIRTUAL_ROOT so pystac writes relative links."""
    catalog = pystac.Catalog(
        id=CATALOG_ID,
        description="Land-cover maps of CloudLULC regions, one collection per region.",
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    catalog.set_self_href(f"{VIRTUAL_ROOT}/{CATALOG_KEY}")
    items = sorted(items, key=lambda i: i.id)
    collection = pystac.Collection(
        id=region,
        description=f"Land-cover maps of region {region}, one item per target date.",
        extent=_extent(items),
        license=LICENSE,
        title=_collection_title(region),
    )
    for name in sorted(regions):  # every child link built alike: the catalogue never depends on who published last
        if name == region:
            catalog.add_child(collection, title=_collection_title(region))
            collection.set_self_href(f"{VIRTUAL_ROOT}/{region}/{COLLECTION_NAME}")
        else:
            href = f"{VIRTUAL_ROOT}/{name}/{COLLECTION_NAME}"
            link = pystac.Link(
                pystac.RelType.CHILD, href, media_type=pystac.MediaType.JSON, title=_collection_title(name)
            )
            catalog.add_link(link)
    for item in items:
        collection.add_item(item)
        item.set_self_href(f"{VIRTUAL_ROOT}/{region}/{item.id}/{item.id}.json")
    return catalog, collection


def _collection_title(region: str) -> str:
    return f"CloudLULC land cover: {region}"


def _extent(items: list[pystac.Item]) -> pystac.Extent:
    """Union of the items' bboxes and of their datetimes and scene ranges."""
    boxes = [item.bbox for item in items if item.bbox]
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
    moments = [
        moment
        for item in items
        for moment in (item.datetime, item.common_metadata.start_datetime, item.common_metadata.end_datetime)
        if moment is not None
    ]
    return pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[min(moments), max(moments)]]))


# --- Reading ------------------------------------------------------------------------------------------------------


def _read_json(storage: Storage, key: str) -> dict[str, Any]:
    try:
        document = json.loads(storage.read_bytes(key))
    except json.JSONDecodeError as error:
        raise DataError(storage.join(key), f"not JSON ({error})") from error
    if not isinstance(document, dict):
        raise DataError(storage.join(key), "not a JSON object")
    return document


def _links(document: dict[str, Any], rel: str, base: str, source: str) -> Iterator[str]:
    """Keys (under the root) of a document's links of one relation; ``base`` is the document's folder."""
    for link in document.get("links", []):
        if link.get("rel") != rel:
            continue
        href = str(link.get("href", ""))
        key = posixpath.normpath(posixpath.join(base, href))
        if "://" in href or href.startswith("/") or key.startswith(".."):
            raise DataError(source, f"{rel} link {href!r} leaves the catalogue; only relative links are published")
        yield key


def _catalog_regions(storage: Storage) -> list[str]:
    """Regions the root catalogue already lists (a missing catalogue lists none)."""
    if not storage.exists(CATALOG_KEY):
        return []
    document = _read_json(storage, CATALOG_KEY)
    return [posixpath.dirname(key) for key in _links(document, "child", "", storage.join(CATALOG_KEY))]


def _linked_items(storage: Storage, region: str) -> list[pystac.Item]:
    """The items a region's collection links, each with its real self href so relative assets resolve."""
    collection_key = f"{region}/{COLLECTION_NAME}"
    if not storage.exists(collection_key):
        return []
    document = _read_json(storage, collection_key)
    items = []
    for key in _links(document, "item", region, storage.join(collection_key)):
        item = pystac.Item.from_dict(_read_json(storage, key), migrate=False)
        item.set_self_href(storage.join(key))
        items.append(item)
    return items


def read_items(catalog_uri: str, region: str) -> list[pystac.Item]:
    """The published items of a region, oldest target date first (empty when the region has none)."""
    items = _linked_items(open_storage(catalog_uri), region)
    return sorted(items, key=lambda i: (i.datetime or datetime.min.replace(tzinfo=UTC), i.id))


def latest_before(catalog_uri: str, region: str, target_date: date) -> pystac.Item | None:
    """The region's most recent product strictly before ``target_date`` (the change map's reference), if any."""
    earlier = [i for i in read_items(catalog_uri, region) if i.datetime and i.datetime.date() < target_date]
    return earlier[-1] if earlier else None


def asset_uri(item: pystac.Item, role: str) -> str:
    """Absolute URI of one of an item's assets (items from :func:`read_items` resolve relative hrefs)."""
    return item.assets[role].get_absolute_href() or item.assets[role].href
