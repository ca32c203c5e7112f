"""Build and publish one regional product from a region's mapped scene pairs, in the order that keeps it safe.

Files come first (mosaic, areas, style, change map, agreement, quicklook and report page), each
written atomically; the STAC item is written last, so a product is visible in the catalogue only when
every file it points to is there. A product whose item already exists is not built again: a rerun of a
scheduled date writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import timedelta

import pystac

from cloudlulc import __version__
from cloudlulc.errors import DataError
from cloudlulc.ingest.scene_stacks import SceneStack
from cloudlulc.io.storage import join_uri, open_storage, staged_output
from cloudlulc.products.agreement import agreement
from cloudlulc.products.areas import product_areas
from cloudlulc.products.catalog import asset_uri, latest_before, publish_item
from cloudlulc.products.change import change_map
from cloudlulc.products.model import ClassArea, Lineage, RegionProduct, SceneUse
from cloudlulc.products.mosaic import MappedScene, MosaicStats, mosaic
from cloudlulc.products.options import ProductOptions
from cloudlulc.products.region import RegionGrid, region_grid
from cloudlulc.products.report import render_report, report_images
from cloudlulc.products.style import write_qgis_style


@dataclass(frozen=True)
class SceneMap:
    """One scene pair mapped for a product: its stack and its published class map and confidence."""

    stack: SceneStack
    map_uri: str
    confidence_uri: str


@dataclass(frozen=True)
class ProductOutcome:
    """Where the product's item is, and whether this run built it (False: it was already published)."""

    item_uri: str
    built: bool
    product: RegionProduct | None


def published_item(uri: str) -> pystac.Item:
    """A published product's STAC item, its relative asset hrefs resolvable (``catalog.asset_uri``)."""
    parent, _, name = uri.rpartition("/")
    item = pystac.Item.from_dict(json.loads(open_storage(parent).read_bytes(name)))
    item.set_self_href(uri)
    return item


def read_asset(item: pystac.Item, role: str) -> bytes:
    """The bytes of one of a published product's files (its report page, say)."""
    parent, _, name = asset_uri(item, role).rpartition("/")
    return open_storage(parent).read_bytes(name)


def item_uri(catalog_uri: str, options: ProductOptions) -> str:
    """Where the product's STAC item lives in the catalogue (``<catalog>/<region>/<item>/<item>.json``)."""
    return join_uri(catalog_uri, f"{options.region}/{options.item_id}/{options.item_id}.json")


def product_uris(catalog_uri: str, options: ProductOptions) -> dict[str, str]:
    """The product's files by role, beside its item."""
    folder = join_uri(catalog_uri, f"{options.region}/{options.item_id}")
    names = {
        "classes": "classes.tif",
        "confidence": "confidence.tif",
        "source": "source.tif",
        "areas": "areas.json",
        "style": "classes.qml",
        "quicklook": "quicklook.png",
        "change": "change.tif",
        "transitions": "transitions.json",
        "report": "report.html",
    }
    return {role: join_uri(folder, f"{options.item_id}_{name}") for role, name in names.items()}


def in_window(maps: Sequence[SceneMap], options: ProductOptions) -> list[SceneMap]:
    """The scene maps acquired in ``[target - window_days, target]``, oldest first (their source codes)."""
    first = options.target_date - timedelta(days=options.window_days)
    chosen = [m for m in maps if first <= m.stack.s2_datetime.date() <= options.target_date]
    return sorted(chosen, key=lambda m: (m.stack.s2_datetime, m.stack.pair_id))


def build_product(
    maps: Sequence[SceneMap],
    options: ProductOptions,
    catalog_uri: str,
    *,
    served_model: str,
    served_version: str,
    registered: tuple[str | None, str | None] = (None, None),
    echo: Callable[[str], None] = print,
) -> ProductOutcome:
    """Mosaic the scene maps of the window into the product of ``options`` and publish it (item last).

    Raises:
        DataError: no scene map in the date window, an AOI no scene overlaps, or a previous product on
            another grid.
    """
    where = item_uri(catalog_uri, options)
    parent, _, name = where.rpartition("/")
    if open_storage(parent).exists(name):
        echo(f"product {options.item_id}: already published at {where}; nothing to do")
        return ProductOutcome(where, False, None)
    chosen = in_window(maps, options)
    if not chosen:
        raise DataError(
            options.item_id,
            f"no mapped scene acquired between {options.target_date - timedelta(days=options.window_days)} and "
            f"{options.target_date} ({len(maps)} scene map(s) looked at)",
        )
    region = region_grid(options.aoi, options.crs)
    uris = product_uris(catalog_uri, options)
    stats = mosaic([_mapped(code, m) for code, m in enumerate(chosen, 1)], region, uris)
    echo(f"product {options.item_id}: mosaic of {len(chosen)} scene(s), {stats.mapped_pixels} px mapped")
    product = _describe(chosen, options, region, uris, stats, served_model, served_version, registered)
    product = _compare(product, catalog_uri, options, region, uris)
    _write_report(product, uris)
    published = publish_item(product, catalog_uri)
    echo(f"product {options.item_id}: published {published} (report {uris['report']})")
    return ProductOutcome(published, True, product)


def _mapped(code: int, scene_map: SceneMap) -> MappedScene:
    stack = scene_map.stack
    return MappedScene(code, scene_map.map_uri, scene_map.confidence_uri, stack.optical, stack.cloud_mask)


def _describe(
    chosen: Sequence[SceneMap],
    options: ProductOptions,
    region: RegionGrid,
    uris: dict[str, str],
    stats: MosaicStats,
    served_model: str,
    served_version: str,
    registered: tuple[str | None, str | None],
) -> RegionProduct:
    """The product's description: areas, style, scenes used and lineage (files written on the way)."""
    areas, feature_areas = product_areas(uris["classes"], region.grid, region.features)
    _write_json(uris["areas"], _areas_document(areas, feature_areas, stats))
    write_qgis_style(uris["style"])
    scenes = tuple(
        SceneUse(
            code=code,
            pair_id=m.stack.pair_id,
            s2_id=m.stack.s2_id or None,
            s2_datetime=m.stack.s2_datetime,
            s1_id=m.stack.s1_id,
            s1_datetime=m.stack.s1_datetime,
            cloud_cover=stats.cloud_cover.get(code),
            pixels=stats.decided_pixels.get(code, 0),
        )
        for code, m in enumerate(chosen, 1)
    )
    data_hash = hashlib.sha256("\n".join(f"{m.stack.pair_id}:{m.stack.checksums}" for m in chosen).encode())
    lineage = Lineage(served_model, served_version, *registered, data_hash.hexdigest(), __version__)
    roles = ("classes", "confidence", "source", "areas", "style", "quicklook", "report")
    return RegionProduct(
        region=options.region,
        target_date=options.target_date,
        item_id=options.item_id,
        epsg=region.epsg,
        transform=tuple(region.grid.transform)[:6],
        width=region.grid.width,
        height=region.grid.height,
        aoi=region.geojson(),
        assets={role: uris[role] for role in roles},
        scenes=scenes,
        lineage=lineage,
        areas=areas,
        feature_areas=feature_areas,
    )


def _compare(
    product: RegionProduct, catalog_uri: str, options: ProductOptions, region: RegionGrid, uris: dict[str, str]
) -> RegionProduct:
    """Add the change since the previous product and the agreement with a reference, when there are such."""
    changes: dict[str, object] = {}
    previous = latest_before(catalog_uri, options.region, options.target_date)
    if previous is not None:
        before = {role: previous.assets[role].get_absolute_href() or "" for role in ("classes", "confidence")}
        transitions = change_map(
            {"classes": uris["classes"], "confidence": uris["confidence"]},
            before,
            region.grid,
            uris["change"],
            min_confidence=options.min_change_confidence,
        )
        _write_json(uris["transitions"], {"previous": previous.id, "km2": transitions})
        changes = {
            "previous_item_id": previous.id,
            "transitions_km2": transitions,
            "assets": {**product.assets, "change": uris["change"], "transitions": uris["transitions"]},
        }
    if options.reference:
        changes["agreement"] = agreement(uris["classes"], options.reference, region.grid, table=options.reference_table)
    return replace(product, **changes)  # type: ignore[arg-type]


def _write_report(product: RegionProduct, uris: dict[str, str]) -> None:
    """The quicklook PNG and the report page (images embedded, so the page reads as a lone file)."""
    images = report_images(uris["classes"], uris["confidence"], product.assets.get("change"))
    with staged_output(uris["quicklook"]) as temp_path:
        temp_path.write_bytes(images.classes)
    with staged_output(uris["report"]) as temp_path:
        temp_path.write_text(render_report(product, images))


def _areas_document(
    areas: tuple[ClassArea, ...], feature_areas: tuple[tuple[ClassArea, ...], ...], stats: MosaicStats
) -> dict[str, object]:
    return {
        "method": "geodesic (pyproj Geod, WGS84) per 256 x 256-pixel cell",
        "classes_km2": {area.name: area.km2 for area in areas},
        "features_km2": [{area.name: area.km2 for area in feature} for feature in feature_areas],
        "mapped_pixels": stats.mapped_pixels,
        "classes": [asdict(area) for area in areas],
    }


def _write_json(uri: str, document: object) -> None:
    with staged_output(uri) as temp_path:
        temp_path.write_text(json.dumps(document, indent=2, default=str) + "\n")
