"""The STAC catalogue of regional products: real COGs, a real folder and a real S3 server, offline validation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pystac
import pystac.stac_io
import pytest
from affine import Affine
from PIL import Image
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from pystac.validation import JsonSchemaSTACValidator
from pystac.validation.stac_validator import GetSchemaError
from rasterio.crs import CRS
from rasterio.warp import transform_geom

from cloudlulc import schema
from cloudlulc.errors import DataError, StorageError
from cloudlulc.io.rasters import RasterProfile, write_raster
from cloudlulc.io.storage import LocalStorage, open_storage
from cloudlulc.products import catalog, stac_validation
from cloudlulc.products.model import ClassArea, Lineage, RegionProduct, SceneUse

REGION = "occitanie-test"
EPSG = 32631
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_800_000.0)
SIZE = 64


class RefusingStacIO(pystac.stac_io.DefaultStacIO):
    """pystac's reader with the network cut: every http(s) read is recorded and refused."""

    attempts: ClassVar[list[str]] = []

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(source)
        if href.startswith(("http://", "https://")):
            RefusingStacIO.attempts.append(href)
            raise ConnectionRefusedError(f"network use in a test: {href}")
        return super().read_text(source, *args, **kwargs)


@pytest.fixture
def no_network() -> Iterator[list[str]]:
    """Make pystac's default reader refuse http(s) for the test; yields the refused URLs."""
    previous = pystac.StacIO._default_io
    RefusingStacIO.attempts = []
    pystac.StacIO.set_default(RefusingStacIO)
    try:
        yield RefusingStacIO.attempts
    finally:
        pystac.StacIO._default_io = previous


def _aoi() -> dict[str, Any]:
    west, north = TRANSFORM @ (0, 0)
    east, south = TRANSFORM @ (SIZE, SIZE)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return dict(transform_geom(CRS.from_epsg(EPSG), "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}))


def _write_files(folder: Path, seed: int) -> dict[str, str]:
    """The product's files: three real COGs (EPSG:32631) and the side files, in ``folder``."""
    rng = np.random.default_rng(seed)
    crs = CRS.from_epsg(EPSG)
    classes = rng.integers(0, 6, (SIZE, SIZE), dtype=np.uint8)
    classes[:4, :4] = schema.IGNORE_INDEX
    confidence = rng.integers(1, 256, (SIZE, SIZE), dtype=np.uint8)
    confidence[classes == schema.IGNORE_INDEX] = 0
    source = np.stack([np.full((SIZE, SIZE), 1, np.uint16), rng.integers(1, 4, (SIZE, SIZE), dtype=np.uint16)])
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.tif" for name in ("classes", "confidence", "source")}
    colours = schema.colour_table()
    write_raster(str(paths["classes"]), classes, RasterProfile(crs, TRANSFORM, 255, colormap=colours), cog=True)
    write_raster(str(paths["confidence"]), confidence, RasterProfile(crs, TRANSFORM, 0), cog=True)
    write_raster(str(paths["source"]), source, RasterProfile(crs, TRANSFORM, 0), cog=True)
    (folder / "areas.json").write_text(json.dumps({"Water": 0.1}))
    (folder / "style.qml").write_text("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'><qgis/>")
    Image.fromarray(np.full((16, 16, 3), seed % 256, np.uint8)).save(folder / "quicklook.png")
    files = {name: str(path) for name, path in paths.items()}
    files.update(areas=str(folder / "areas.json"), style=str(folder / "style.qml"))
    files["quicklook"] = str(folder / "quicklook.png")
    return files


def _product(assets: dict[str, str], day: date, previous: str | None = None) -> RegionProduct:
    scenes = (
        SceneUse(1, "pair-a", "S2A_31TEJ_a", datetime(2026, 5, 28, 10, 30, tzinfo=UTC), "S1A_IW_a", None, 12.5, 3000),
        SceneUse(2, "pair-b", None, None, "S1A_IW_b", datetime(2026, 5, 25, 17, 45, tzinfo=UTC), None, 1096),
    )
    return RegionProduct(
        region=REGION,
        target_date=day,
        item_id=f"{REGION}-{day.isoformat()}",
        epsg=EPSG,
        transform=tuple(TRANSFORM)[:6],
        width=SIZE,
        height=SIZE,
        aoi=_aoi(),
        assets=assets,
        scenes=scenes,
        lineage=Lineage("cloudlulc-net", "7", "cloudlulc", "3", "ab" * 32, "0.1.0"),
        areas=tuple(ClassArea(c.id, c.name, 0.01 * (c.id + 1)) for c in schema.CLASSES),
        previous_item_id=previous,
        agreement={"overall_agreement": np.float64(0.8)} if previous is None else None,
    )


def _local_product(root: Path, day: date, seed: int, previous: str | None = None) -> RegionProduct:
    """Maps under the catalogue root (relative hrefs), the report elsewhere (an absolute href)."""
    item_id = f"{REGION}-{day.isoformat()}"
    assets = _write_files(root / REGION / item_id, seed)
    report = root.parent / "reports" / f"{item_id}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(f"<html><body>{item_id}</body></html>")
    return _product({**assets, "report": str(report)}, day, previous)


def _all_json(storage: Any) -> dict[str, bytes]:
    return {key: storage.read_bytes(key) for key in storage.list() if key.endswith(".json") and "/areas" not in key}


def _validate_tree(storage: Any) -> dict[str, dict[str, Any]]:
    """Validate every STAC document under the root; check each link from a collection names a written item."""
    documents = {key: json.loads(data) for key, data in _all_json(storage).items()}
    for document in documents.values():
        stac_validation.validate_stac(document)
    for key, document in documents.items():
        if document["type"] == "Collection":
            region = key.rsplit("/", 1)[0]
            for link in (link for link in document["links"] if link["rel"] == "item"):
                assert f"{region}/{link['href'].removeprefix('./')}" in documents, link
    return documents


def test_publish_writes_a_valid_self_contained_catalogue(tmp_path: Path, no_network: list[str]):
    root = tmp_path / "catalog"
    product = _local_product(root, date(2026, 6, 1), seed=1)
    uri = catalog.publish_item(product, str(root))

    assert uri == str(root / REGION / product.item_id / f"{product.item_id}.json")
    documents = _validate_tree(LocalStorage(root))
    assert set(documents) == {
        "catalog.json",
        f"{REGION}/collection.json",
        f"{REGION}/{product.item_id}/{product.item_id}.json",
    }
    assert no_network == []

    walked = pystac.Catalog.from_file(str(root / "catalog.json"))
    assert walked.catalog_type == pystac.CatalogType.SELF_CONTAINED
    items = list(walked.get_items(recursive=True))
    assert [i.id for i in items] == [product.item_id]
    item = items[0]
    assert item.collection_id == REGION
    for role, path in product.assets.items():
        asset = item.assets[role]
        href = asset.get_absolute_href()
        assert href is not None and Path(href).resolve() == Path(path).resolve()
        data = Path(path).read_bytes()
        assert FileExtension.ext(asset).checksum == "1220" + hashlib.sha256(data).hexdigest()
        assert FileExtension.ext(asset).size == len(data)
        assert asset.href.startswith("/") == (role == "report")  # outside the root: absolute


def test_item_describes_grid_bands_legend_and_lineage(tmp_path: Path):
    root = tmp_path / "catalog"
    product = _local_product(root, date(2026, 6, 1), seed=2)
    catalog.publish_item(product, str(root))
    item = catalog.read_items(str(root), REGION)[0]

    assert item.datetime == datetime(2026, 6, 1, tzinfo=UTC)
    assert item.common_metadata.start_datetime == datetime(2026, 5, 25, 17, 45, tzinfo=UTC)
    assert item.common_metadata.end_datetime == datetime(2026, 5, 28, 10, 30, tzinfo=UTC)
    projection = ProjectionExtension.ext(item)
    assert (projection.epsg, projection.shape) == (EPSG, [SIZE, SIZE])
    assert projection.transform is not None and projection.transform[:6] == list(TRANSFORM)[:6]
    confidence = RasterExtension.ext(item.assets["confidence"]).bands
    assert confidence is not None and confidence[0].nodata == 0
    assert (confidence[0].scale, confidence[0].offset) == (product.confidence_scale, product.confidence_offset)
    classes_band = RasterExtension.ext(item.assets["classes"]).bands
    assert (
        classes_band is not None
        and classes_band[0].nodata == 255
        and isinstance(classes_band[0].nodata, int)
        and classes_band[0].data_type == "uint8"
    )
    legend = ClassificationExtension.ext(item.assets["classes"]).classes or []
    assert [(c.value, c.title) for c in legend[:6]] == [(c.id, c.name) for c in schema.CLASSES]
    assert legend[1].color_hint == "146E28" and (legend[-1].value, legend[-1].nodata) == (255, True)
    assert item.assets["style"].media_type == "application/xml"
    assert item.assets["quicklook"].roles == ["overview", "thumbnail"]
    properties = item.properties
    assert properties["cloudlulc:registered_model"] == "cloudlulc"
    assert properties["cloudlulc:served_version"] == "7"
    assert properties["cloudlulc:s2_item_ids"] == ["S2A_31TEJ_a"]
    assert properties["cloudlulc:s1_item_ids"] == ["S1A_IW_a", "S1A_IW_b"]
    assert properties["cloudlulc:s1_datetimes"] == ["2026-05-25T17:45:00Z"]
    assert properties["cloudlulc:areas_km2"]["Cropland"] == pytest.approx(0.06)
    assert properties["cloudlulc:agreement"] == {"overall_agreement": 0.8}
    assert "cloudlulc:previous_item_id" not in properties


def test_republishing_is_byte_identical_and_a_second_date_joins_the_collection(tmp_path: Path):
    root = tmp_path / "catalog"
    storage = LocalStorage(root)
    first = _local_product(root, date(2026, 6, 1), seed=3)
    catalog.publish_item(first, str(root))
    before = _all_json(storage)
    catalog.publish_item(first, str(root))
    assert _all_json(storage) == before
    rebuilt = replace(first, lineage=replace(first.lineage, software_version="0.2.0"))
    catalog.publish_item(rebuilt, str(root))  # the same id replaces the item
    assert catalog.read_items(str(root), REGION)[0].properties["cloudlulc:software_version"] == "0.2.0"
    catalog.publish_item(first, str(root))
    assert _all_json(storage) == before

    second = _local_product(root, date(2026, 6, 11), seed=4, previous=first.item_id)
    catalog.publish_item(second, str(root))
    catalog.publish_item(first, str(root))  # republishing an older item keeps the newer one
    documents = _validate_tree(storage)
    collection = documents[f"{REGION}/collection.json"]
    assert [link["href"] for link in collection["links"] if link["rel"] == "item"] == [
        f"./{first.item_id}/{first.item_id}.json",
        f"./{second.item_id}/{second.item_id}.json",
    ]
    interval = collection["extent"]["temporal"]["interval"][0]
    assert interval == ["2026-05-25T17:45:00Z", "2026-06-11T00:00:00Z"]

    elsewhere = replace(first, region="another-region", item_id="another-region-2026-06-01")
    catalog.publish_item(elsewhere, str(root))
    root_catalog = storage.read_bytes("catalog.json")
    catalog.publish_item(first, str(root))  # the catalogue does not depend on which region published last
    assert storage.read_bytes("catalog.json") == root_catalog
    children = [link["href"] for link in json.loads(root_catalog)["links"] if link["rel"] == "child"]
    assert children == ["./another-region/collection.json", f"./{REGION}/collection.json"]
    _validate_tree(storage)

    items = catalog.read_items(str(root), REGION)
    assert [i.id for i in items] == [first.item_id, second.item_id]
    assert items[1].properties["cloudlulc:previous_item_id"] == first.item_id
    assert catalog.latest_before(str(root), REGION, date(2026, 6, 11)).id == first.item_id  # type: ignore[union-attr]
    assert catalog.latest_before(str(root), REGION, date(2026, 6, 1)) is None
    assert catalog.latest_before(str(root), "elsewhere", date(2027, 1, 1)) is None
    assert Path(catalog.asset_uri(items[0], "classes")).resolve() == Path(first.assets["classes"]).resolve()


def test_the_catalogue_can_be_moved(tmp_path: Path):
    import shutil

    root = tmp_path / "catalog"
    product = _local_product(root, date(2026, 6, 1), seed=5)
    catalog.publish_item(product, str(root))
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    shutil.rmtree(root)
    item = next(pystac.Catalog.from_file(str(moved / "catalog.json")).get_items(recursive=True))
    classes = item.assets["classes"].get_absolute_href()
    assert classes is not None and Path(classes).read_bytes()


class CollectionWriteFails(LocalStorage):
    """A real folder whose collection write dies, as a killed publish would."""

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        if key.endswith("/collection.json"):
            raise StorageError(f"{self.join(key)}: killed")
        return super().write_bytes(key, data, if_absent=if_absent)


def test_a_killed_publish_leaves_the_previous_catalogue_valid(tmp_path: Path):
    root = tmp_path / "catalog"
    first = _local_product(root, date(2026, 6, 1), seed=6)
    catalog.publish_item(first, str(root))
    before = _all_json(LocalStorage(root))
    second = _local_product(root, date(2026, 6, 11), seed=7, previous=first.item_id)

    with pytest.raises(StorageError, match="killed"):
        catalog.publish_item(second, str(root), storage=CollectionWriteFails(root))

    after = _all_json(LocalStorage(root))
    assert {k: v for k, v in after.items() if second.item_id not in k} == before
    documents = _validate_tree(LocalStorage(root))  # every collection link names a written item
    assert [i.id for i in catalog.read_items(str(root), REGION)] == [first.item_id]
    assert f"{REGION}/collection.json" in documents

    catalog.publish_item(second, str(root))  # the rerun completes the publish
    assert [i.id for i in catalog.read_items(str(root), REGION)] == [first.item_id, second.item_id]


def test_publish_to_s3_matches_the_local_catalogue(s3_bucket: str, tmp_path: Path, no_network: list[str]):
    local_root = tmp_path / "catalog"
    product = _local_product(local_root, date(2026, 6, 1), seed=8)
    s3_root = f"s3://{s3_bucket}/stac"
    storage = open_storage(s3_root)
    s3_assets = {}
    for role, path in product.assets.items():
        if role == "report":
            s3_assets[role] = path
            continue
        key = Path(path).relative_to(local_root).as_posix()
        storage.upload_file(Path(path), key)
        s3_assets[role] = f"{s3_root}/{key}"
    s3_product = replace(product, assets=s3_assets)

    uri = catalog.publish_item(s3_product, s3_root)
    catalog.publish_item(product, str(local_root))

    assert uri == f"{s3_root}/{REGION}/{product.item_id}/{product.item_id}.json"
    documents = _validate_tree(storage)
    assert _all_json(storage) == _all_json(LocalStorage(local_root))  # relative hrefs: the same bytes anywhere
    assert no_network == []
    item = catalog.read_items(s3_root, REGION)[0]
    assert catalog.asset_uri(item, "classes") == s3_assets["classes"]
    key = s3_assets["confidence"].removeprefix(f"{s3_root}/")
    checksum = FileExtension.ext(item.assets["confidence"]).checksum
    assert checksum == "1220" + hashlib.sha256(storage.read_bytes(key)).hexdigest()
    assert catalog.latest_before(s3_root, REGION, date(2026, 6, 2)).id == product.item_id  # type: ignore[union-attr]
    child = {"rel": "child", "href": f"./{REGION}/collection.json", "type": "application/json"}
    assert documents["catalog.json"]["links"][1] == {**child, "title": f"CloudLULC land cover: {REGION}"}


def test_validation_is_offline_and_names_the_item_and_error(tmp_path: Path, no_network: list[str]):
    root = tmp_path / "catalog"
    product = _local_product(root, date(2026, 6, 1), seed=9)
    item = catalog.build_item(product, str(root)).to_dict(include_self_link=False)

    # pystac's own validator would have to download the extension schemas: the guard is real.
    with pytest.raises(GetSchemaError, match="network use in a test"):
        pystac.validation.validate_dict(item, validator=JsonSchemaSTACValidator())
    assert no_network and all(url.startswith("https://stac-extensions.github.io/") for url in no_network)
    no_network.clear()

    stac_validation.validate_item(item)
    assert no_network == []

    unknown = {
        **item,
        "stac_extensions": [*item["stac_extensions"], "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
    }
    with pytest.raises(DataError, match=rf"{product.item_id}.*eo/v1.1.0.*not shipped"):
        stac_validation.validate_item(unknown)
    broken = json.loads(json.dumps(item))
    broken["assets"]["classes"]["classification:classes"][0]["name"] = "Open water"
    with pytest.raises(DataError, match=rf"STAC item {product.item_id}: fails .*classification/v2.0.0.*Open water"):
        stac_validation.validate_item(broken)
    assert no_network == []


def test_shipped_schemas_are_the_versions_pystac_writes():
    from pystac.extensions.classification import ClassificationExtension as Classes
    from pystac.extensions.raster import RasterExtension as Raster

    shipped = stac_validation.shipped_schemas()
    wanted = {
        ProjectionExtension.get_schema_uri(),
        Raster.get_schema_uri(),
        FileExtension.get_schema_uri(),
        Classes.get_schema_uri(),
    }
    assert wanted <= set(shipped)
    assert stac_validation._unresolved_refs(stac_validation.offline_validator().schema_cache) == []


def test_a_class_map_off_the_product_grid_is_refused(tmp_path: Path):
    root = tmp_path / "catalog"
    product = replace(_local_product(root, date(2026, 6, 1), seed=10), epsg=32632)
    with pytest.raises(DataError, match="differs from the product"):
        catalog.publish_item(product, str(root))
    assert not (root / "catalog.json").exists()
