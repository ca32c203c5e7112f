import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rasterio.crs import CRS

from cloudlulc import schema
from cloudlulc.data.layout import DatasetLayout, SampleRecord
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import RasterProfile, raster_info, read_raster, write_raster
from cloudlulc.validation import validate_dataset, write_report


def _tree(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _rewrite(path: str, array: np.ndarray, crs: CRS | None = None) -> None:
    info = raster_info(path)
    write_raster(
        path,
        array,
        RasterProfile(
            crs or info.crs,
            info.transform,
            nodata=info.nodata,
            descriptions=info.descriptions if len(info.descriptions) == len(array) and all(info.descriptions) else None,
        ),
    )


def _corrupt(uri: str, record: SampleRecord, root: Path) -> None:
    Path(uri(record.opt_clear)).write_bytes(b"\x00garbage, not a GeoTIFF" * 50)


def _truncate(uri, record, root) -> None:
    path = Path(uri(record.sar_vh))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _wrong_band_count(uri, record, root) -> None:
    _rewrite(uri(record.opt_cloudy), read_raster(uri(record.opt_cloudy))[:10])


def _sar_linear(uri, record, root) -> None:
    _rewrite(uri(record.sar_vv), schema.db_to_linear(read_raster(uri(record.sar_vv))))


def _crs_mismatch(uri, record, root) -> None:
    _rewrite(uri(record.sar_vh), read_raster(uri(record.sar_vh)), crs=CRS.from_epsg(32601))


def _all_nodata(uri, record, root) -> None:
    _rewrite(uri(record.opt_cloudy), np.zeros_like(read_raster(uri(record.opt_cloudy))))


def _nan_sar(uri, record, root) -> None:
    values = read_raster(uri(record.sar_vv))
    values[:, :20, :] = np.nan
    _rewrite(uri(record.sar_vv), values)


def _bad_labels(uri, record, root) -> None:
    values = read_raster(uri(record.label))
    values[0, 5, 5] = 7
    values[0, 6, 6] = 200
    _rewrite(uri(record.label), values)


def _missing_file(uri, record, root) -> None:
    Path(uri(record.label)).unlink()


CASES: dict[str, tuple[Callable, str, str]] = {
    "corrupt GeoTIFF": (_corrupt, "files.readable", "Opt_S2_clear"),
    "truncated GeoTIFF": (_truncate, "files.readable", "SAR_S1/VH"),
    "wrong band count": (_wrong_band_count, "optical.band_count", "10"),
    "SAR in linear power": (_sar_linear, "sar.units_db", "0"),
    "CRS mismatch": (_crs_mismatch, "grid.agree", "EPSG:32601"),
    "all-nodata patch": (_all_nodata, "sample.nodata", "1"),
    "NaN in SAR": (_nan_sar, "sar.nodata", "0.3125"),
    "label values outside the class set": (_bad_labels, "label.values", "7,200"),
    "split row pointing at a missing file": (_missing_file, "split.files_exist", "Label/"),
}


def test_clean_synthetic_set_passes(synthetic_master: Path, tmp_path: Path):
    before = _tree(synthetic_master)
    report = validate_dataset(str(synthetic_master), progress=False)
    assert report.success and report.failures == [] and report.sample_count == 12
    assert {r.rule for r in report.rules} >= {"optical.band_count", "sar.units_db", "split.disjoint", "label.values"}
    written = write_report(report, str(tmp_path / "report"))
    document = json.loads(Path(written["json"]).read_text())
    assert document["success"] is True and document["sample_count"] == 12
    assert "PASSED" in Path(written["html"]).read_text()
    assert _tree(synthetic_master) == before, "validation writes nothing into the dataset"


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_input_is_reported_by_sample_and_rule(case: str, dataset_copy: Path, tmp_path: Path):
    plant, rule, evidence = CASES[case]
    layout = DatasetLayout(str(dataset_copy))
    victim = layout.read_records()[4]
    plant(layout.uri, victim, dataset_copy)
    before = _tree(dataset_copy)
    report = validate_dataset(str(dataset_copy), progress=False)
    assert not report.success
    failures = [f for f in report.failures if f.rule == rule]
    assert failures, f"{case}: expected rule {rule}, got {[(f.sample, f.rule) for f in report.failures]}"
    assert {f.sample for f in report.failures} == {victim.name}, "only the planted sample fails"
    assert any(evidence in f.observed + f.detail for f in failures), failures
    written = write_report(report, str(tmp_path / "report"))
    html = Path(written["html"]).read_text()
    assert "FAILED" in html and victim.name in html and rule in html
    assert _tree(dataset_copy) == before, "nothing in the dataset is changed or deleted"


def test_sample_in_two_splits(dataset_copy: Path):
    train = (dataset_copy / "split" / "train.csv").read_text().splitlines()
    moved = train[1]
    with (dataset_copy / "split" / "test.csv").open("a") as handle:
        handle.write("3 " + moved.split(" ", 1)[1] + "\n")
    name = moved.split()[3].rsplit("/", 1)[1].removesuffix(".tif")
    report = validate_dataset(str(dataset_copy), progress=False)
    disjoint = [f for f in report.failures if f.rule == "split.disjoint"]
    assert {f.sample for f in disjoint} == {name} and {f.observed for f in disjoint} == {"test", "train"}
    assert any(f.rule == "split.unique" for f in report.failures)


def test_empty_dataset_folder_is_an_error_naming_it(tmp_path: Path):
    with pytest.raises(DataError, match=rf"{tmp_path}.*no samples found"):
        validate_dataset(str(tmp_path), progress=False)


def test_quarantine_lists_failing_samples_and_passes(dataset_copy: Path, tmp_path: Path):
    layout = DatasetLayout(str(dataset_copy))
    records = layout.read_records()
    _bad_labels(layout.uri, records[0], dataset_copy)
    _sar_linear(layout.uri, records[1], dataset_copy)
    before = _tree(dataset_copy)
    report = validate_dataset(str(dataset_copy), quarantine=True, progress=False)
    assert report.success
    assert report.quarantined == sorted([records[0].name, records[1].name])
    written = write_report(report, str(tmp_path / "out"))
    assert Path(written["quarantine"]).read_text().split() == report.quarantined
    assert _tree(dataset_copy) == before


def test_dataset_level_failure_is_not_quarantined(tmp_path: Path):
    from cloudlulc.data.synthetic import SynthConfig, generate_dataset

    generate_dataset(str(tmp_path), SynthConfig(n=10, size=40, seed=0), progress=False)
    metadata = tmp_path / "metadata.csv"
    import pandas as pd

    frame = pd.read_csv(metadata)
    frame["cloud_cover"] = 0.5  # no distribution
    frame.to_csv(metadata, index=False)
    report = validate_dataset(str(tmp_path), quarantine=True, progress=False)
    assert not report.success
    assert [(f.sample, f.rule) for f in report.failures] == [("(dataset)", "metadata.cloud_distribution")]


def test_dataset_without_metadata_table_gets_it_computed(dataset_copy: Path):
    (dataset_copy / "metadata.csv").unlink()
    report = validate_dataset(str(dataset_copy), progress=False)
    assert report.success and len(report.cloud_cover) == 12


def test_validate_dataset_on_s3(s3_bucket: str, synthetic_master: Path):
    from cloudlulc.io.storage import open_storage

    storage = open_storage(f"s3://{s3_bucket}/set")
    for path in synthetic_master.rglob("*"):
        if path.is_file():
            storage.upload_file(path, path.relative_to(synthetic_master).as_posix())
    report = validate_dataset(f"s3://{s3_bucket}/set", progress=False)
    assert report.success and report.sample_count == 12
    write_report(report, f"s3://{s3_bucket}/reports/run1")
    assert storage.list() and open_storage(f"s3://{s3_bucket}/reports/run1").list() == ["report.html", "report.json"]


def test_a_rule_id_means_one_check_in_both_layouts():
    """Chips and scene stacks draw every rule from one vocabulary; different checks carry different ids."""
    from cloudlulc.validation.rules import SAR_BANDS, VOCABULARY, WHOLE
    from cloudlulc.validation.suites import sample_rules, scene_rules
    from cloudlulc.validation.thresholds import SceneThresholds, Thresholds

    definitions = [d for table in (*VOCABULARY.values(), SAR_BANDS, WHOLE) for d in table]
    stats_by_id: dict[str, set[tuple[str, str]]] = {}
    for definition in definitions:
        stats_by_id.setdefault(definition.id, set()).add((definition.stat, definition.check))
    chips = {r.id for r in sample_rules(Thresholds())}
    scenes = {r.id for r in scene_rules(SceneThresholds())}
    for rule in [*sample_rules(Thresholds()), *scene_rules(SceneThresholds())]:
        assert any(rule.kwargs["column"].endswith(stat) for stat, _ in stats_by_id[rule.id]), rule
        assert rule.expectation in {check for _, check in stats_by_id[rule.id]}, rule
    assert {"sar.median_db_range", "optical.p99_range"} <= chips - scenes
    assert {"sar.percentile_range", "optical.percentile_range"} <= scenes - chips
    assert "sar.value_range" not in chips | scenes and "optical.value_range" not in chips | scenes


def test_storage_digest_streams_the_object(tmp_path: Path):
    import hashlib

    from cloudlulc.errors import MissingObjectError
    from cloudlulc.io.storage import open_storage

    storage = open_storage(tmp_path)
    data = bytes(range(256)) * 9000  # more than one hashing block
    storage.write_bytes("a/b.bin", data)
    assert storage.sha256("a/b.bin") == hashlib.sha256(data).hexdigest()
    with pytest.raises(MissingObjectError, match="no such file"):
        storage.sha256("a/missing.bin")
