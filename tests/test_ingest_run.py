"""Ingest end to end against real servers on loopback: a static STAC catalog on an S3 server (moto),
assets over a plain HTTP file server, kill-and-rerun, concurrent runs, and every bad input named."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import shapely.affinity
from http_files import FileServer
from rasterio.warp import transform as transform_points

from cloudlulc.data.layout import DatasetLayout
from cloudlulc.errors import DataError
from cloudlulc.ingest.assets import RetryPolicy
from cloudlulc.ingest.manifest import read_manifest
from cloudlulc.ingest.outputs import ChipOptions
from cloudlulc.ingest.run import IngestOptions, ingest
from cloudlulc.ingest.stac import SearchQuery
from cloudlulc.ingest.synthetic import S1Spec, S2Spec, SyntheticCatalog, SyntheticCatalogConfig, write_synthetic_catalog
from cloudlulc.io.rasters import open_raster
from cloudlulc.io.storage import Storage, open_storage
from cloudlulc.mapping.options import MapOptions
from cloudlulc.validation import validate_dataset

CHIP = 128
FAST_RETRY = RetryPolicy(attempts=3, first_delay_s=0.05, timeout_s=2.0)
CONFIG = SyntheticCatalogConfig(
    size=512,
    scene_tile=256,
    s2=(S2Spec("2026-06-10", cloud_cover=0.4), S2Spec("2026-07-20", cloud_cover=0.1, processing_baseline="03.01")),
    s1=(S1Spec("2026-06-08", epsg=32632, shift_m=(3.7, -2.2)), S1Spec("2026-06-14", extent=(0.0, 0.0, 0.6, 1.0))),
)


def bbox_text(catalog: SyntheticCatalog) -> str:
    return ",".join(f"{v:.6f}" for v in catalog.bbox_wgs84)


def query_for(catalog: SyntheticCatalog, href: str | None = None) -> SearchQuery:
    return SearchQuery(
        shapely.box(*catalog.bbox_wgs84), date(2026, 6, 1), date(2026, 7, 31), catalog=href or catalog.catalog_href
    )


def checksums(storage: Storage) -> dict[str, str]:
    return {key: hashlib.sha256(storage.read_bytes(key)).hexdigest() for key in storage.list()}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cloudlulc", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def local_catalog(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCatalog:
    return write_synthetic_catalog(str(tmp_path_factory.mktemp("stac")), CONFIG)


@pytest.fixture
def s3_catalog(s3_bucket: str, local_catalog: SyntheticCatalog) -> SyntheticCatalog:
    """The same catalog copied to the loopback S3 server (relative hrefs, so assets resolve to s3://)."""
    root_uri = f"s3://{s3_bucket}/stac"
    storage = open_storage(root_uri)
    root = Path(local_catalog.root)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        storage.upload_file(path, path.relative_to(root).as_posix())
    return replace(
        local_catalog,
        root=root_uri,
        catalog_href=f"{root_uri}/catalog.json",
        landcover_uri=f"{root_uri}/reference/worldcover.tif",
        truth_labels_uri=f"{root_uri}/truth/labels.tif",
    )


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[FileServer, SyntheticCatalog]]:
    """A catalog whose assets are served by a loopback HTTP file server (https-style asset URLs)."""
    server = FileServer(tmp_path / "www").start()
    try:
        catalog = write_synthetic_catalog(str(tmp_path / "www"), replace(CONFIG, asset_base_url=server.url))
        yield server, catalog
    finally:
        server.stop()


# --- the whole stage against S3 ------------------------------------------------------------------


def test_search_reports_pairs_and_the_unpaired_acquisition(s3_catalog: SyntheticCatalog, tmp_path: Path) -> None:
    out = tmp_path / "pairs.json"
    process = cli(
        "ingest",
        "search",
        "--catalog",
        s3_catalog.catalog_href,
        "--bbox",
        bbox_text(s3_catalog),
        "--start",
        "2026-06-01",
        "--end",
        "2026-07-31",
        "--json",
        str(out),
    )
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    s2_june, s2_july = s3_catalog.s2_ids
    assert (
        f"pair      {s2_june}" in stdout and s3_catalog.s1_ids[0] in stdout
    )  # full cover beats the closer partial one
    assert f"unpaired  {s2_july}: no Sentinel-1 acquisition over the area of interest within +/- 6 days" in stdout


def test_chips_on_s3_validate_carry_labels_and_a_manifest_whose_checksums_hold(s3_catalog: SyntheticCatalog) -> None:
    out = s3_catalog.root.replace("/stac", "/chips")
    command = (
        "ingest",
        "run",
        "--catalog",
        s3_catalog.catalog_href,
        "--bbox",
        bbox_text(s3_catalog),
        "--start",
        "2026-06-01",
        "--end",
        "2026-07-31",
        "--out",
        out,
        "--chip-size",
        str(CHIP),
        "--labels",
        str(s3_catalog.landcover_uri),
        "--no-progress",
    )
    process = cli(*command)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "1 ingested" in stdout and "unpaired" in stdout and "EPSG:32631" in stdout

    storage = open_storage(out)
    manifest = read_manifest(storage)
    assert len(manifest) == 1 and manifest.loc[0, "s1_id"] == s3_catalog.s1_ids[0]
    assert manifest.loc[0, "gap_days"] == pytest.approx(2.2, abs=0.1)
    paths, sums = manifest.loc[0, "paths"].split(), manifest.loc[0, "sha256"].split()
    assert {p: hashlib.sha256(storage.read_bytes(p)).hexdigest() for p in paths} == dict(zip(paths, sums, strict=True))

    records = DatasetLayout(out).read_records()
    assert len(records) >= 9 and {r.split for r in records} >= {"train"}
    validation = validate_dataset(out, progress=False)
    assert validation.success, [f"{f.rule}: {f.sample}" for f in validation.failures]
    agreement = []
    with open_raster(s3_catalog.truth_labels_uri) as truth_file:
        for record in records[:4]:
            with open_raster(f"{out}/{record.label}") as label_file:
                window = truth_file.window(*label_file.bounds)
                truth = truth_file.read(1, window=window)
                agreement.append(np.mean(label_file.read(1) == truth))
    assert min(agreement) > 0.8  # WorldCover in EPSG:4326 remapped and resampled back onto the 10 m grid

    rerun = cli(*command)
    before = {o["Key"]: o["LastModified"] for o in _objects(out)}
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert "1 already ingested" in stdout and "unchanged" in stdout
    assert {o["Key"]: o["LastModified"] for o in _objects(out)} == before  # nothing written


def _objects(uri: str) -> list[dict[str, object]]:
    storage = open_storage(uri)
    client = storage.client  # type: ignore[attr-defined]
    bucket, prefix = storage.bucket, storage.prefix  # type: ignore[attr-defined]
    return client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])


# --- kill and rerun, concurrent runs -------------------------------------------------------------


def _run_args(catalog: SyntheticCatalog, out: str) -> list[str]:
    return [
        "ingest",
        "run",
        "--catalog",
        catalog.catalog_href,
        "--bbox",
        bbox_text(catalog),
        "--start",
        "2026-06-01",
        "--end",
        "2026-07-31",
        "--out",
        out,
        "--chip-size",
        str(CHIP),
        "--no-progress",
    ]


def _wait_for_objects(storage: Storage, count: int, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if len(storage.list()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before writing {count} objects")


@pytest.mark.parametrize("kill_after_objects", [3, 20])
def test_a_run_killed_at_any_point_then_rerun_ends_as_an_uninterrupted_run(
    s3_catalog: SyntheticCatalog, kill_after_objects: int
) -> None:
    reference = s3_catalog.root.replace("/stac", f"/reference-{kill_after_objects}")
    assert cli(*_run_args(s3_catalog, reference)).wait(timeout=300) == 0
    expected = checksums(open_storage(reference))

    out = s3_catalog.root.replace("/stac", f"/killed-{kill_after_objects}")
    storage = open_storage(out)
    victim = cli(*_run_args(s3_catalog, out))
    _wait_for_objects(storage, kill_after_objects, victim)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL  # killed mid-run, not finished
    assert "manifest.csv" not in storage.list()  # the index had not been published
    assert cli(*_run_args(s3_catalog, out)).wait(timeout=300) == 0
    assert checksums(storage) == expected


def test_concurrent_runs_on_one_prefix_end_as_one_run(s3_catalog: SyntheticCatalog) -> None:
    reference = s3_catalog.root.replace("/stac", "/reference")
    assert cli(*_run_args(s3_catalog, reference)).wait(timeout=300) == 0
    out = s3_catalog.root.replace("/stac", "/concurrent")
    runs = [cli(*_run_args(s3_catalog, out)) for _ in range(3)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], [stderr for _, stderr in results]
    assert checksums(open_storage(out)) == checksums(open_storage(reference))


# --- assets over HTTP: retries, timeouts, 404s ---------------------------------------------------


def _asset_path(catalog: SyntheticCatalog, name: str) -> str:
    return f"/sentinel-2-l2a/{catalog.s2_ids[0]}/{name}"


def test_http_assets_survive_transient_404s_and_a_slow_answer(
    file_server: tuple[FileServer, SyntheticCatalog], tmp_path: Path
) -> None:
    server, catalog = file_server
    server.fail(_asset_path(catalog, "B04.tif"), status=404, times=2)
    server.delay(_asset_path(catalog, "B11.tif"), seconds=4.0, times=1)
    report = ingest(
        query_for(catalog),
        IngestOptions(str(tmp_path / "out"), chips=ChipOptions(chip_size=CHIP), retry=FAST_RETRY),
        progress=False,
    )
    assert [p.status for p in report.pairs] == ["ingested"], report.summary()
    assert server.requests_for(_asset_path(catalog, "B04.tif")) >= 3
    assert validate_dataset(str(tmp_path / "out"), progress=False).success


def test_an_asset_that_stays_404_fails_its_pair_naming_item_and_asset(
    file_server: tuple[FileServer, SyntheticCatalog], tmp_path: Path
) -> None:
    server, catalog = file_server
    server.fail(_asset_path(catalog, "B04.tif"), status=404, times=100)
    out = tmp_path / "out"
    report = ingest(
        query_for(catalog), IngestOptions(str(out), chips=ChipOptions(chip_size=CHIP), retry=FAST_RETRY), progress=False
    )
    (failure,) = report.failed
    assert catalog.s2_ids[0] in str(failure.error) and "'red'" in str(failure.error)
    assert "unreachable after 3 attempts" in str(failure.error) and "HTTP 404" in str(failure.error)
    assert not (out / "ingest" / "pairs").exists()  # not committed: the next run retries it
    server.fail(_asset_path(catalog, "B04.tif"), status=404, times=0)
    rerun = ingest(
        query_for(catalog), IngestOptions(str(out), chips=ChipOptions(chip_size=CHIP), retry=FAST_RETRY), progress=False
    )
    assert [p.status for p in rerun.pairs] == ["ingested"]


# --- bad inputs ----------------------------------------------------------------------------------


def _item_path(catalog: SyntheticCatalog, index: int = 0) -> Path:
    item_id = catalog.s2_ids[index]
    return Path(catalog.root) / "sentinel-2-l2a" / item_id / f"{item_id}.json"


@pytest.fixture
def own_catalog(tmp_path: Path) -> SyntheticCatalog:
    return write_synthetic_catalog(str(tmp_path / "stac"), replace(CONFIG, size=256, scene_tile=256))


def test_missing_band_asset_and_corrupt_cog_are_named(own_catalog: SyntheticCatalog, tmp_path: Path) -> None:
    item = _item_path(own_catalog)
    item.write_text(item.read_text().replace('"nir08"', '"nir08-removed"'))
    report = ingest(
        query_for(own_catalog), IngestOptions(str(tmp_path / "a"), chips=ChipOptions(chip_size=CHIP)), progress=False
    )
    assert "no GeoTIFF asset for band(s) B8A" in str(report.failed[0].error)

    item.write_text(item.read_text().replace('"nir08-removed"', '"nir08"'))
    band = item.parent / "B11.tif"
    band.write_bytes(band.read_bytes()[:3000])
    report = ingest(
        query_for(own_catalog), IngestOptions(str(tmp_path / "b"), chips=ChipOptions(chip_size=CHIP)), progress=False
    )
    error = str(report.failed[0].error)
    assert own_catalog.s2_ids[0] in error and "'swir16'" in error and "B11.tif" in error


def test_a_scene_entirely_nodata_fails_with_a_clear_reason(tmp_path: Path) -> None:
    config = replace(CONFIG, size=256, scene_tile=256, s2=(S2Spec("2026-06-10", all_nodata=True),))
    catalog = write_synthetic_catalog(str(tmp_path / "stac"), config)
    report = ingest(
        query_for(catalog), IngestOptions(str(tmp_path / "out"), chips=ChipOptions(chip_size=CHIP)), progress=False
    )
    assert "lack data" in str(report.failed[0].error) and catalog.s2_ids[0] in str(report.failed[0].error)


def test_sar_without_overlap_leaves_the_scene_unpaired_with_the_reason(tmp_path: Path) -> None:
    config = replace(CONFIG, size=256, scene_tile=256, s2=(S2Spec("2026-06-10"),), s1=(S1Spec("2026-06-08"),))
    catalog = write_synthetic_catalog(str(tmp_path / "stac"), config)
    item_id = catalog.s1_ids[0]
    item = Path(catalog.root) / "sentinel-1-grd" / item_id / f"{item_id}.json"
    document = json.loads(item.read_text())
    moved = shapely.affinity.translate(shapely.geometry.shape(document["geometry"]), xoff=0.3)  # east of the scene
    document["geometry"], document["bbox"] = shapely.geometry.mapping(moved), list(moved.bounds)
    item.write_text(json.dumps(document))
    west, south, east, north = catalog.bbox_wgs84
    query = SearchQuery(
        shapely.box(west, south, east + 0.5, north), date(2026, 6, 1), date(2026, 6, 30), catalog=catalog.catalog_href
    )
    report = ingest(query, IngestOptions(str(tmp_path / "out"), chips=ChipOptions(chip_size=CHIP)), progress=False)
    assert not report.pairs and "overlaps it" in report.unpaired[0].reason and item_id in report.unpaired[0].reason


def test_missing_s3_credentials_name_the_variables(s3_catalog: SyntheticCatalog, tmp_path: Path) -> None:
    env = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    process = cli(*_run_args(s3_catalog, s3_catalog.root.replace("/stac", "/nocreds")), env=env)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (3, 4), stderr
    assert "AWS_ACCESS_KEY_ID" in stderr and "AWS_SECRET_ACCESS_KEY" in stderr
    assert "Traceback" not in stderr


def test_an_aoi_across_a_utm_zone_boundary_is_ingested_on_the_zone_of_its_centroid(tmp_path: Path) -> None:
    x, y = transform_points("EPSG:4326", "EPSG:32631", [5.97], [45.0])
    origin = (round(x[0] / 60) * 60.0, round(y[0] / 60) * 60.0)
    config = replace(
        CONFIG, size=512, scene_tile=256, origin=origin, s2=(S2Spec("2026-06-10"),), s1=(S1Spec("2026-06-08"),)
    )
    catalog = write_synthetic_catalog(str(tmp_path / "stac"), config)
    west, south, east, north = catalog.bbox_wgs84
    aoi = shapely.box((west + east) / 2, south, 6.25, north)  # centroid east of 6 degrees: zone 32
    query = SearchQuery(aoi, date(2026, 6, 1), date(2026, 6, 30), catalog=catalog.catalog_href)
    out = tmp_path / "out"
    report = ingest(query, IngestOptions(str(out), chips=ChipOptions(chip_size=CHIP)), progress=False)
    assert report.crs == "EPSG:32632" and report.pairs[0].status == "ingested", report.summary()
    record = DatasetLayout(str(out)).read_records()[0]
    with rasterio.open(out / record.opt_cloudy) as optical:
        assert optical.crs.to_epsg() == 32632
    assert validate_dataset(str(out), progress=False).success


# --- scene stacks for mapping --------------------------------------------------------------------


def test_scene_mode_writes_an_aligned_stack_that_the_mapper_reads(
    own_catalog: SyntheticCatalog, tmp_path: Path
) -> None:
    from cloudlulc.io.rasters import validate_cog
    from cloudlulc.mapping.scene_pair import SceneReader

    out = tmp_path / "scenes"
    report = ingest(query_for(own_catalog), IngestOptions(str(out), mode="scenes"), progress=False)
    assert [p.status for p in report.pairs] == ["ingested"]
    (stack,) = [p for p in (out / "scenes").iterdir()]
    for name in ("optical", "sar", "cloud_mask"):
        assert validate_cog(str(stack / f"{name}.tif")) == []
    with SceneReader(str(stack / "optical.tif"), str(stack / "sar.tif")) as scene:
        assert scene.same_grid and scene.sar_units == "db"
        window = scene.read(rasterio.windows.Window(0, 0, 64, 64))
        assert window.valid.mean() > 0.9 and 0 < window.optical.mean() < 1


def test_s2_only_stacks_the_unpaired_scene_which_validates_and_maps_without_sar(
    own_catalog: SyntheticCatalog, tmp_path: Path
) -> None:
    import torch

    from cloudlulc.ingest.scene_stacks import scene_stacks
    from cloudlulc.mapping import map_scene
    from cloudlulc.models.config import model_config
    from cloudlulc.models.networks import build_model
    from cloudlulc.validation.scene_stacks import validate_scenes

    out = tmp_path / "scenes"
    options = IngestOptions(str(out), mode="scenes", s2_only=True)
    report = ingest(query_for(own_catalog), options, progress=False)
    s2_june, s2_july = own_catalog.s2_ids
    assert [(p.pair_id.split("__")[0], p.status) for p in report.pairs] == [
        (s2_june, "ingested"),
        (s2_july, "ingested"),
    ]
    assert f"unpaired {s2_july}: no Sentinel-1 acquisition" in report.summary()
    assert "stacked Sentinel-2 only" in report.summary()

    paired, alone = scene_stacks(str(out))
    assert paired.sar is not None and alone.pair_id == f"{s2_july}__S2-only" and alone.sar is None
    assert sorted(p.name for p in (out / "scenes" / alone.pair_id).iterdir()) == ["cloud_mask.tif", "optical.tif"]
    row = read_manifest(open_storage(str(out))).set_index("pair_id").loc[alone.pair_id]
    assert all(not isinstance(row[c], str) or not row[c] for c in ("s1_id", "s1_datetime", "gap_days"))
    validation = validate_scenes(str(out))
    assert validation.success, [f"{f.rule}: {f.sample}" for f in validation.failures]

    torch.manual_seed(0)
    network = build_model(model_config("cloudlulc_net", "tiny")).eval()

    def predict(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        assert not sar.any(), "the absent SAR is fed as zeros"
        with torch.no_grad():
            return torch.softmax(network(torch.from_numpy(optical), torch.from_numpy(sar)), dim=1).numpy()

    result = map_scene(
        alone.optical,
        alone.sar,
        str(tmp_path / "map.tif"),
        predict,
        options=MapOptions(tile=128, overlap=16),
        progress=False,
    )
    with rasterio.open(result.map_uri) as mapped:
        assert mapped.tags()["CLOUDLULC_MODALITIES"] == "S2 only"
        assert (mapped.read(1) != 255).mean() > 0.9

    again = ingest(query_for(own_catalog), options, progress=False)
    assert [p.status for p in again.pairs] == ["already ingested", "already ingested"]
    without = ingest(query_for(own_catalog), IngestOptions(str(tmp_path / "pairs"), mode="scenes"), progress=False)
    assert len(without.pairs) == 1 and "stacked Sentinel-2 only" not in without.summary()
    with pytest.raises(DataError, match=r"s2-only: .*--mode scenes"):
        IngestOptions(str(tmp_path / "chips"), s2_only=True)
