"""Scene-stack validation on stacks the product's own ingest writes from its synthetic catalog.

Every bad input is planted into a copy of one committed stack of two; the report must name the rule,
the pair and the file, and only the planted pair may fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from rasterio.crs import CRS

from cloudlulc import schema
from cloudlulc.cli import cli
from cloudlulc.ingest.manifest import read_manifest
from cloudlulc.ingest.run import IngestOptions, ingest
from cloudlulc.ingest.stac import SearchQuery
from cloudlulc.ingest.synthetic import S1Spec, S2Spec, SyntheticCatalog, SyntheticCatalogConfig, write_synthetic_catalog
from cloudlulc.io.rasters import RasterProfile, open_raster, write_raster
from cloudlulc.io.storage import open_storage
from cloudlulc.validation import write_report
from cloudlulc.validation.scene_stacks import (
    SceneThresholds,
    is_scene_layout,
    read_scene_manifest,
    scene_facts,
    validate_scenes,
)

CONFIG = SyntheticCatalogConfig(
    size=512,
    s2=(S2Spec("2026-06-10", cloud_cover=0.3), S2Spec("2026-06-20", cloud_cover=0.6)),
    s1=(S1Spec("2026-06-08"), S1Spec("2026-06-19")),
)
CLI = [str(Path(sys.executable).with_name("cloudlulc"))]


def _query(catalog: SyntheticCatalog, start: date = date(2026, 6, 1), end: date = date(2026, 6, 30)) -> SearchQuery:
    return SearchQuery(shapely.box(*catalog.bbox_wgs84), start, end, catalog=catalog.catalog_href)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCatalog:
    return write_synthetic_catalog(str(tmp_path_factory.mktemp("stac")), CONFIG)


@pytest.fixture(scope="module")
def master(catalog: SyntheticCatalog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two committed scene stacks (optical, SAR, cloud mask, label) written by `ingest --mode scenes`."""
    out = tmp_path_factory.mktemp("ingest") / "region"
    options = IngestOptions(out=str(out), mode="scenes", label_source=catalog.landcover_uri)
    report = ingest(_query(catalog), options, progress=False)
    assert [p.status for p in report.pairs] == ["ingested", "ingested"], report.summary()
    return out


@pytest.fixture
def region(master: Path, tmp_path: Path) -> Path:
    """A private copy of the ingest output that a test may break."""
    return Path(shutil.copytree(master, tmp_path / "region"))


def _stack(root: Path, index: int = 1) -> Path:
    return sorted((root / "scenes").iterdir())[index]


def _tree(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _rewrite(path: Path, array: np.ndarray, crs: CRS | None = None, nodata: float | None = None) -> None:
    """Write ``array`` over ``path`` on its grid, keeping band descriptions and tags that still fit."""
    with open_raster(str(path)) as dataset:
        count = array.shape[0]
        band_tags = [dataset.tags(i) for i in range(1, min(count, dataset.count) + 1)]
        profile = RasterProfile(
            crs or dataset.crs,
            dataset.transform,
            nodata=dataset.nodata if nodata is None else nodata,
            descriptions=tuple(dataset.descriptions[:count]) if all(dataset.descriptions[:count]) else None,
            tags=dataset.tags(),
            band_tags=band_tags if len(band_tags) == count else None,
        )
    write_raster(str(path), array, profile)


def _read(path: Path) -> np.ndarray:
    with open_raster(str(path)) as dataset:
        return dataset.read()


# --- bad inputs, planted into the second stack -----------------------------------------------------


def _truncate_optical(stack: Path) -> None:
    path = stack / "optical.tif"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage_label(stack: Path) -> None:
    (stack / "label.tif").write_bytes(b"\x00garbage, not a GeoTIFF" * 50)


def _sar_one_band(stack: Path) -> None:
    _rewrite(stack / "sar.tif", _read(stack / "sar.tif")[:1])


def _sar_other_crs(stack: Path) -> None:
    _rewrite(stack / "sar.tif", _read(stack / "sar.tif"), crs=CRS.from_epsg(32632))


def _optical_nan(stack: Path) -> None:
    values = _read(stack / "optical.tif").astype(np.float32)
    values[:, 100:140, 100:140] = np.nan
    _rewrite(stack / "optical.tif", values)


def _optical_all_nodata(stack: Path) -> None:
    _rewrite(stack / "optical.tif", np.zeros_like(_read(stack / "optical.tif")))


def _optical_offset_twice(stack: Path) -> None:
    values = _read(stack / "optical.tif")
    shifted = np.where(values > 0, np.clip(values.astype(np.int32) - 1000, 1, None), 0).astype(np.uint16)
    _rewrite(stack / "optical.tif", shifted)  # still tagged BOA_ADD_OFFSET=-1000: the offset counts twice


def _sar_linear(stack: Path) -> None:
    _rewrite(stack / "sar.tif", schema.db_to_linear(_read(stack / "sar.tif")))


def _sar_inf(stack: Path) -> None:
    values = _read(stack / "sar.tif")
    values[1, :8, :] = np.inf
    _rewrite(stack / "sar.tif", values)


def _bad_label_values(stack: Path) -> None:
    values = _read(stack / "label.tif")
    values[0, :16, :16] = 7
    _rewrite(stack / "label.tif", values)


def _cloud_mask_deleted(stack: Path) -> None:
    (stack / "cloud_mask.tif").unlink()


def _sar_replaced(stack: Path) -> None:
    _rewrite(stack / "sar.tif", _read(stack / "sar.tif"))  # same pixels, other bytes: not what ingest wrote


CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "truncated optical": (_truncate_optical, "files.readable", "optical.tif: cannot read pixels"),
    "label not a GeoTIFF": (_garbage_label, "files.readable", "label.tif: cannot open"),
    "SAR with one band": (_sar_one_band, "sar.band_count", "sar.tif"),
    "SAR in another CRS": (_sar_other_crs, "grid.agree", "sar.tif: CRS EPSG:32632 differs from EPSG:32631"),
    "NaN in optical": (_optical_nan, "optical.nan", "optical.tif"),
    "all-nodata optical": (_optical_all_nodata, "optical.empty", "optical.tif"),
    "L2A offset applied twice": (_optical_offset_twice, "optical.percentile_range", "optical.tif"),
    "SAR in linear power": (_sar_linear, "sar.units_db", "sar.tif"),
    "infinite SAR values": (_sar_inf, "sar.nan", "sar.tif"),
    "label values outside the class set": (_bad_label_values, "label.values", "values 7 in"),
    "cloud mask listed but missing": (_cloud_mask_deleted, "files.present", "cloud_mask.tif"),
    "SAR replaced after ingest": (_sar_replaced, "files.checksum", "sar.tif: SHA-256"),
}


def test_clean_stacks_pass_and_nothing_is_written(master: Path, tmp_path: Path) -> None:
    before = _tree(master)
    report = validate_scenes(str(master))
    assert report.success, report.failures
    assert report.sample_count == 2 and report.kind == "Scene-stack"
    assert {r.rule for r in report.rules} >= {
        "files.checksum",
        "grid.agree",
        "optical.band_count",
        "optical.percentile_range",
        "sar.units_db",
        "cloud_mask.values",
        "label.values",
        "scene.nodata",
    }
    assert report.cloud_cover and set(report.class_fractions) == set(schema.CLASS_NAMES)
    written = write_report(report, str(tmp_path / "report"))
    document = json.loads(Path(written["json"]).read_text())
    assert document["success"] is True and document["sample_count"] == 2
    html = Path(written["html"]).read_text()
    assert "PASSED" in html and "Scene-stack validation" in html
    assert _tree(master) == before, "validation writes nothing into the ingest output"


NAMES = list(CASES)
PAIRS = list(zip(NAMES[0::2], NAMES[1::2], strict=True))
"""Two cases per validation run, one in each stack (halves the run time; each stack's report is checked)."""


@pytest.mark.parametrize("cases", PAIRS, ids=[f"{a} | {b}" for a, b in PAIRS])
def test_each_bad_input_fails_naming_rule_pair_and_file(cases: tuple[str, str], region: Path) -> None:
    stacks = [_stack(region, 0), _stack(region, 1)]
    for case, stack in zip(cases, stacks, strict=True):
        CASES[case][0](stack)
    report = validate_scenes(str(region))
    assert not report.success
    assert {f.sample for f in report.failures} == {s.name for s in stacks}, "each planted stack fails, nothing else"
    for case, stack in zip(cases, stacks, strict=True):
        _, rule, evidence = CASES[case]
        failures = [f for f in report.failures if f.sample == stack.name and f.rule == rule]
        assert failures, f"{case}: expected {rule}, got {[(f.rule, f.observed) for f in report.failures]}"
        assert any(evidence in f.observed + " " + f.detail for f in failures), failures
        assert all(str(stack) in f.observed + f.detail for f in failures), "the failure names the file"


def test_checksum_rule_alone_catches_a_replaced_file(region: Path) -> None:
    _sar_replaced(_stack(region, 0))
    assert {f.rule for f in validate_scenes(str(region)).failures} == {"files.checksum"}
    assert validate_scenes(str(region), SceneThresholds(verify_checksums=False)).success


def test_truncation_is_caught_even_when_statistics_come_from_overviews(region: Path) -> None:
    """The decimated read is served by the overviews at the start of the COG; the last-block probe is not."""
    _truncate_optical(_stack(region))
    limits = SceneThresholds(stats_max_side=128, verify_checksums=False)
    report = validate_scenes(str(region), limits)
    assert [(f.rule, f.sample) for f in report.failures] == [("files.readable", _stack(region).name)]
    assert "optical.tif" in report.failures[0].observed


def test_statistics_are_read_decimated_to_a_bounded_size(master: Path) -> None:
    storage = open_storage(str(master))
    scenes, problem = read_scene_manifest(storage)
    assert problem == "" and len(scenes) == 2
    existing = set(storage.list("scenes"))
    full = scene_facts(storage, scenes[0], existing, SceneThresholds())
    small = scene_facts(storage, scenes[0], existing, SceneThresholds(stats_max_side=128))
    height = _read(master / scenes[0].files["optical"]).shape[1]
    assert full["optical_stats_shape"] == f"{height}x{height} of {height}x{height}"
    assert small["optical_stats_shape"].startswith("128x128 of") and small["sar_stats_shape"].startswith("128x128")
    assert small["optical_reflectance_p50"] == pytest.approx(full["optical_reflectance_p50"], abs=0.02)
    assert small["sar_vv_p50_db"] == pytest.approx(full["sar_vv_p50_db"], abs=1.0)
    assert full["optical_nodata_fraction"] < 0.05 and full["read_error"] == full["checksum_problem"] == ""


def test_an_empty_root_and_a_region_without_pairs_fail_clearly(catalog: SyntheticCatalog, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    report = validate_scenes(str(empty))
    assert not report.success and report.sample_count == 0
    (failure,) = report.failures
    assert failure.rule == "manifest.scenes" and failure.sample == "(dataset)"
    assert (
        failure.observed.startswith(f"no scenes under {empty}: ") and "manifest.csv does not exist" in failure.observed
    )

    nothing = tmp_path / "no-pairs"  # an ingest whose dates hold no acquisition: a manifest without rows
    result = ingest(
        _query(catalog, date(2025, 1, 1), date(2025, 1, 31)), IngestOptions(str(nothing), mode="scenes"), progress=False
    )
    assert result.pairs == () and read_manifest(open_storage(str(nothing))).empty
    assert is_scene_layout(str(nothing)), "ingest/params.json says mode=scenes"
    (failure,) = validate_scenes(str(nothing)).failures
    assert failure.rule == "manifest.scenes" and f"no scenes under {nothing}: " in failure.observed
    assert "lists no scene stack" in failure.observed


def test_a_manifest_row_without_checksums_is_reported(region: Path) -> None:
    manifest = region / "manifest.csv"
    lines = manifest.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[2].split(",")
    row[header.index("sha256")] = ""
    manifest.write_text("\n".join([lines[0], lines[1], ",".join(row)]) + "\n")
    report = validate_scenes(str(region))
    assert [(f.rule, f.sample) for f in report.failures] == [("manifest.row", _stack(region).name)]
    assert "4 path(s) but 0 SHA-256" in report.failures[0].observed


def test_console_script_detects_scenes_and_exits_1_with_the_report(region: Path, tmp_path: Path) -> None:
    _sar_one_band(_stack(region))
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    broken = subprocess.run(
        [*CLI, "validate", str(region), "--report-dir", str(tmp_path / "bad")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"FAIL {_stack(region).name}: sar.band_count observed=1" in broken.stdout
    assert "validation FAILED: 2 scene stacks" in broken.stdout
    document = json.loads((tmp_path / "bad" / "report.json").read_text())
    assert document["success"] is False and "sar.band_count" in {f["rule"] for f in document["failures"]}
    assert "FAILED" in (tmp_path / "bad" / "report.html").read_text()


def test_cli_exits_0_on_clean_stacks_1_on_an_empty_root_2_on_quarantine(master: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    clean = runner.invoke(cli, ["validate", str(master), "--report-dir", str(tmp_path / "ok")])
    assert clean.exit_code == 0, clean.output
    assert "validation passed: 2 scene stacks, 0 failure(s)" in clean.output
    assert json.loads((tmp_path / "ok" / "report.json").read_text())["success"] is True
    empty = runner.invoke(cli, ["validate", str(tmp_path / "ok"), "--scenes", "--report-dir", str(tmp_path / "r")])
    assert empty.exit_code == 1, empty.output
    assert f"no scenes under {tmp_path / 'ok'}" in empty.output
    assert json.loads((tmp_path / "r" / "report.json").read_text())["success"] is False
    refused = runner.invoke(cli, ["validate", str(master), "--scenes", "--quarantine"])
    assert refused.exit_code == 2 and "--quarantine" in refused.output


def test_stacks_on_s3_are_read_through_gdal_and_hashed_as_streams(master: Path, s3_bucket: str) -> None:
    root = f"s3://{s3_bucket}/region"
    storage = open_storage(root)
    for path in master.rglob("*"):
        if path.is_file():
            storage.upload_file(path, path.relative_to(master).as_posix())
    victim, other = sorted(k for k in storage.list("scenes") if k.endswith("cloud_mask.tif"))
    storage.write_bytes(victim, storage.read_bytes(other))  # a valid mask on the same grid, of another date
    assert is_scene_layout(root)
    report = validate_scenes(root, workers=2)
    assert report.sample_count == 2
    assert [(f.rule, f.sample) for f in report.failures] == [("files.checksum", victim.split("/")[1])]
    assert report.failures[0].observed.startswith(f"{root}/{victim}: SHA-256")
