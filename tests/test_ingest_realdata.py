"""Ingest end to end on real Sentinel files: a static STAC catalog over BigEarthNet patches (12 bands at
10/20/60 m, VV/VH in dB), written in Earth Search's item schema, ingested into chips that validate."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pystac
import rasterio
import shapely
from rasterio.warp import transform_geom
from shapely.geometry import mapping, shape

from cloudlulc import schema
from cloudlulc.data.layout import DatasetLayout
from cloudlulc.ingest.assets import S2_ASSET_KEYS
from cloudlulc.ingest.outputs import ChipOptions
from cloudlulc.ingest.run import IngestOptions, ingest
from cloudlulc.ingest.stac import SearchQuery
from cloudlulc.validation import validate_dataset

PATCH = "87_48"


def _footprint(path: Path) -> shapely.Geometry:
    with rasterio.open(path) as dataset:
        return shape(transform_geom(dataset.crs, "EPSG:4326", mapping(shapely.box(*dataset.bounds))))


def _when(name: str) -> datetime:
    stamp = next(part for part in name.split("_") if "T" in part and part[:8].isdigit())
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def build_catalog(realdata: Path, root: Path) -> tuple[Path, shapely.Geometry]:
    """Copy one BigEarthNet S2/S1 pair under ``root`` and describe it as Earth Search-style STAC items."""
    s2_dir = next(p for p in (realdata / "bigearthnet" / "S2").iterdir() if p.is_dir() and p.name.endswith(PATCH))
    s1_dir = next(p for p in (realdata / "bigearthnet" / "S1").iterdir() if p.is_dir() and p.name.endswith(PATCH))
    catalog = pystac.Catalog("bigearthnet", "Real BigEarthNet patches (CDLA-Permissive-1.0)")
    footprint = _footprint(next(s2_dir.glob("*_B02.tif")))
    s2_item = pystac.Item(
        s2_dir.name,
        mapping(footprint),
        list(footprint.bounds),
        _when(s2_dir.name),
        {"eo:cloud_cover": 0.0, "s2:processing_baseline": "02.05"},
        collection="sentinel-2-l2a",
    )
    for band in schema.S2_BANDS:
        source = next(s2_dir.glob(f"*_{band}.tif"))
        target = root / "s2" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        extra = {"eo:bands": [{"name": band}], "gsd": schema.S2_BAND_RESOLUTION_M[band]}
        s2_item.add_asset(
            S2_ASSET_KEYS[band][0], pystac.Asset(str(target), media_type=pystac.MediaType.COG, extra_fields=extra)
        )
    s1_footprint = _footprint(next(s1_dir.glob("*_VV.tif")))
    s1_item = pystac.Item(
        s1_dir.name,
        mapping(s1_footprint),
        list(s1_footprint.bounds),
        _when(s1_dir.name),
        {"sar:polarizations": ["VV", "VH"], "sar:instrument_mode": "IW"},
        collection="sentinel-1-grd",
    )
    for polarisation in ("VV", "VH"):
        source = next(s1_dir.glob(f"*_{polarisation}.tif"))
        target = root / "s1" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        s1_item.add_asset(polarisation.lower(), pystac.Asset(str(target), media_type=pystac.MediaType.COG))
    catalog.add_items([s2_item, s1_item])
    catalog.normalize_and_save(str(root / "catalog"), pystac.CatalogType.ABSOLUTE_PUBLISHED)
    return root / "catalog" / "catalog.json", footprint


def test_real_bigearthnet_pair_is_ingested_into_chips_that_validate(realdata: Path, tmp_path: Path) -> None:
    catalog, footprint = build_catalog(realdata, tmp_path / "stac")
    when = _when(next(p.name for p in (realdata / "bigearthnet" / "S2").iterdir() if p.name.endswith(PATCH)))
    query = SearchQuery(footprint, when.date(), when.date(), catalog=str(catalog))
    out = tmp_path / "chips"

    report = ingest(query, IngestOptions(str(out), chips=ChipOptions(chip_size=64)), progress=False)

    assert not report.failed and not report.unpaired
    assert report.pairs[0].status == "ingested" and report.pairs[0].outputs >= 1
    records = DatasetLayout(str(out)).read_records()
    with rasterio.open(out / records[0].opt_cloudy) as optical, rasterio.open(out / records[0].sar_vv) as vv:
        assert optical.count == 12 and optical.dtypes[0] == "uint16" and optical.descriptions == schema.S2_BANDS
        assert optical.tags(1)["BOA_ADD_OFFSET"] == "0"  # baseline 02.05: no offset
        assert optical.read().min() > 0  # real data everywhere
        assert vv.crs == optical.crs and vv.transform == optical.transform and vv.read(1).max() < 5  # dB
    validation = validate_dataset(str(out), progress=False)
    assert validation.success, [f"{f.rule_id}: {f.sample}" for f in validation.failures]
