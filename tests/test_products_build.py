"""A region's product end to end in the library: two target dates, the second with its change, STAC last."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest
from test_products_mosaic import _aoi, _scene

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.ingest.scene_stacks import SceneStack
from cloudlulc.products.build import SceneMap, build_product, item_uri, published_item, read_asset
from cloudlulc.products.catalog import read_items
from cloudlulc.products.options import ProductOptions
from cloudlulc.products.stac_validation import validate_item


def _maps(folder: Path, day: date, klass: int, code: int) -> SceneMap:
    """One mapped scene pair of one class acquired on ``day`` (the mosaic test's rasters)."""
    scene = _scene(folder, code, 0, 200, klass, 230)
    stack = SceneStack(
        pair_id=f"pair{code}",
        s2_datetime=datetime(day.year, day.month, day.day, 10, 30),
        optical=str(scene.optical_uri),
        sar=None,
        cloud_mask=str(scene.cloud_mask_uri),
        label=None,
        s2_id=f"S2B_{day:%Y%m%d}",
        s1_id=f"S1A_{day:%Y%m%d}",
        s1_datetime=datetime(day.year, day.month, day.day - 2, 6, 0),
        checksums=f"{code:064x}",
    )
    return SceneMap(stack, scene.map_uri, scene.confidence_uri)


def _options(aoi: str, day: date) -> ProductOptions:
    return ProductOptions(region="demo", aoi=aoi, target_date=day, window_days=20)


def _publish(maps: list[SceneMap], aoi: str, day: date, catalog: Path) -> object:
    return build_product(
        maps,
        _options(aoi, day),
        str(catalog),
        served_model="cloudlulc_cpu",
        served_version="2",
        registered=("cloudlulc", "7"),
        echo=lambda line: None,
    )


def test_two_dates_make_two_products_the_second_with_its_change(tmp_path: Path):
    aoi = _aoi(tmp_path, (20, 180))
    catalog = tmp_path / "catalog"
    june = _maps(tmp_path, date(2026, 6, 10), 1, 1)
    july = _maps(tmp_path, date(2026, 7, 15), 5, 2)
    first = _publish([june, july], aoi, date(2026, 6, 30), catalog)
    second = _publish([june, july], aoi, date(2026, 7, 31), catalog)
    items = read_items(str(catalog), "demo")
    assert [item.id for item in items] == ["demo-20260630", "demo-20260731"]
    for item in items:
        validate_item(item.to_dict())
        assert set(item.assets) >= {"classes", "confidence", "source", "areas", "style", "quicklook", "report"}
    june_item, july_item = items
    assert "change" not in june_item.assets and july_item.properties["cloudlulc:previous_item_id"] == june_item.id
    forest, cropland = schema.CLASSES[1].name, schema.CLASSES[5].name
    transitions = july_item.properties["cloudlulc:transitions_km2"]
    assert transitions[forest][cropland] > 0
    assert july_item.properties["cloudlulc:areas_km2"][cropland] == pytest.approx(transitions[forest][cropland])
    assert june_item.properties["cloudlulc:s2_item_ids"] == ["S2B_20260610"]  # only the June scene is in its window
    assert july_item.properties["cloudlulc:registered_version"] == "7"
    page = read_asset(published_item(second.item_uri), "report").decode()
    assert "demo" in page and "2026-07-31" in page and cropland in page
    assert first.built and second.built


def test_a_rerun_for_a_published_date_writes_nothing(tmp_path: Path):
    aoi = _aoi(tmp_path, (20, 180))
    catalog = tmp_path / "catalog"
    maps = [_maps(tmp_path, date(2026, 6, 10), 1, 1)]
    _publish(maps, aoi, date(2026, 6, 30), catalog)
    before = {path: path.stat().st_mtime_ns for path in catalog.rglob("*")}
    again = _publish(maps, aoi, date(2026, 6, 30), catalog)
    assert not again.built and again.item_uri == item_uri(str(catalog), _options(aoi, date(2026, 6, 30)))
    assert {path: path.stat().st_mtime_ns for path in catalog.rglob("*")} == before


def test_no_scene_in_the_date_window_is_refused_and_nothing_is_published(tmp_path: Path):
    aoi = _aoi(tmp_path, (20, 180))
    catalog = tmp_path / "catalog"
    with pytest.raises(DataError, match="no mapped scene acquired between 2026-05-11 and 2026-05-31"):
        _publish([_maps(tmp_path, date(2026, 6, 10), 1, 1)], aoi, date(2026, 5, 31), catalog)
    assert not catalog.exists() or not any(catalog.rglob("*.json"))


def test_the_item_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A failure while the files are written leaves no item, so the catalogue never lists a half product."""
    from cloudlulc.products import build

    aoi = _aoi(tmp_path, (20, 180))
    catalog = tmp_path / "catalog"

    def broken_report(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(build, "_write_report", broken_report)
    with pytest.raises(OSError, match="disk full"):
        _publish([_maps(tmp_path, date(2026, 6, 10), 1, 1)], aoi, date(2026, 6, 30), catalog)
    assert not (catalog / "demo" / "demo-20260630" / "demo-20260630.json").exists()
    assert not (catalog / "catalog.json").exists()
    document = json.loads((catalog / "demo" / "demo-20260630" / "demo-20260630_areas.json").read_text())
    assert document["mapped_pixels"] > 0  # the files before the failure are whole (and replaced on the rerun)
