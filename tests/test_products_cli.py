"""`cloudlulc product` end to end: ingested scene stacks mapped through the real local Triton into a product."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import rasterio
import shapely
from test_serving import cpu_repository

from cloudlulc.ingest.run import IngestOptions, ingest
from cloudlulc.ingest.stac import SearchQuery
from cloudlulc.ingest.synthetic import S1Spec, S2Spec, SyntheticCatalogConfig, write_synthetic_catalog
from cloudlulc.products.catalog import read_items
from cloudlulc.products.stac_validation import validate_item
from cloudlulc.serving import CPU_MODEL, LocalTriton

CLI = str(Path(sys.executable).with_name("cloudlulc"))
CONFIG = SyntheticCatalogConfig(
    size=384,
    s2=(S2Spec("2026-06-10", cloud_cover=0.3), S2Spec("2026-06-20", cloud_cover=0.6)),
    s1=(S1Spec("2026-06-08"), S1Spec("2026-06-19")),
)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two committed scene stacks of one place (June 10 and June 20) and the place's bbox."""
    folder = tmp_path_factory.mktemp("product-stacks")
    catalog = write_synthetic_catalog(str(folder / "stac"), CONFIG)
    query = SearchQuery(
        shapely.box(*catalog.bbox_wgs84), date(2026, 6, 1), date(2026, 6, 30), catalog=catalog.catalog_href
    )
    report = ingest(query, IngestOptions(out=str(folder / "scenes"), mode="scenes"), progress=False)
    assert [p.status for p in report.pairs] == ["ingested", "ingested"], report.summary()
    west, south, east, north = catalog.bbox_wgs84
    inset = 0.1 * (east - west)
    return folder / "scenes", f"{west + inset},{south + inset},{east - inset},{north - inset}"


def _product(scenes: Path, maps: Path, aoi: str, *extra: str, local_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [CLI, "product", "--scenes", str(scenes), "--maps", str(maps), "--region", "demo", "--aoi", aoi]
    command += ["--date", "2026-06-30", "--window-days", "29", "--tile", "128", "--overlap", "32"]
    command += ["--local-dir", str(local_dir), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def test_product_through_the_local_triton_then_a_rerun_that_writes_nothing(
    stacks: tuple[Path, str], onnx_export: Path, tmp_path: Path
):
    scenes, aoi = stacks
    maps = tmp_path / "maps"
    repository = cpu_repository(tmp_path / "repository", onnx_export)
    repository.mark_served(CPU_MODEL, 1, {"registered_model": "cloudlulc", "registered_version": "3"})
    with LocalTriton(tmp_path / "triton") as server:
        server.start(repository.uri)
        made = _product(scenes, maps, aoi, local_dir=tmp_path / "triton")
        assert made.returncode == 0, made.stderr[-2000:]
        files = {path: path.stat().st_mtime_ns for path in maps.rglob("*")}
        again = _product(scenes, maps, aoi, local_dir=tmp_path / "triton")
    assert again.returncode == 0 and "already published" in again.stdout, again.stdout + again.stderr
    assert {path: path.stat().st_mtime_ns for path in maps.rglob("*")} == files
    (item,) = read_items(str(maps), "demo")
    validate_item(item.to_dict())
    assert item.properties["cloudlulc:served_model"] == CPU_MODEL and item.properties["cloudlulc:served_version"] == "1"
    assert item.properties["cloudlulc:registered_version"] == "3"
    assert len(item.properties["cloudlulc:s2_item_ids"]) == 2
    assert f"STAC item: {maps / 'demo' / item.id / (item.id + '.json')}" in made.stdout
    with rasterio.open(maps / "demo" / item.id / f"{item.id}_source.tif") as source:
        codes = set(source.read(1).ravel().tolist()) - {0}
    assert codes <= {1, 2} and codes, "every pixel is decided by one of the two scenes"
    decided = {scene["code"]: scene["pixels"] for scene in item.properties["cloudlulc:scenes"]}
    assert sum(decided.values()) > 0
    areas = json.loads((maps / "demo" / item.id / f"{item.id}_areas.json").read_text())
    assert sum(areas["classes_km2"].values()) == pytest.approx(sum(item.properties["cloudlulc:areas_km2"].values()))


@pytest.mark.parametrize(
    ("extra", "code", "says"),
    [
        (["--window-days", "-1"], 2, "--window-days"),
        (["--region", "a b"], 2, "--region a b"),
        (["--date", "2026-06-31"], 2, "--date"),
        (["--crs", "EPSG:4326"], 2, "projected CRS"),
    ],
)
def test_misuse_is_exit_2_naming_the_option(
    stacks: tuple[Path, str], tmp_path: Path, extra: list[str], code: int, says: str
):
    scenes, aoi = stacks
    result = _product(scenes, tmp_path / "maps", aoi, *extra, local_dir=tmp_path / "none")
    assert result.returncode == code, result.stderr
    assert says in result.stderr and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "maps" / "demo").exists()


def test_an_aoi_beside_every_stack_is_exit_3_before_any_server_is_needed(stacks: tuple[Path, str], tmp_path: Path):
    scenes, _ = stacks
    result = _product(scenes, tmp_path / "maps", "20.0,10.0,20.1,10.1", local_dir=tmp_path / "none")
    assert result.returncode == 3 and "meets none of the 2 scene stack(s)" in result.stderr, result.stderr
    assert not list((tmp_path / "maps").rglob("*.json"))


def test_no_stack_in_the_window_is_exit_3_before_any_server_is_needed(stacks: tuple[Path, str], tmp_path: Path):
    scenes, aoi = stacks
    result = _product(scenes, tmp_path / "maps", aoi, "--date", "2026-05-15", local_dir=tmp_path / "none")
    assert result.returncode == 3, result.stderr
    assert "no scene stack acquired between 2026-04-16 and 2026-05-15" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")
    assert not list((tmp_path / "maps").rglob("*.json"))
