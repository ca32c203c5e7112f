from dataclasses import replace
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.data.layout import (
    SPLIT_IDS,
    DatasetLayout,
    SceneLayout,
    format_split_file,
    parse_split_file,
    read_split_file,
    standard_record,
)
from cloudlulc.errors import DataError

ROW = "SAR_S1/VH/p1.tif SAR_S1/VV/p1.tif Opt_S2_cloudy/p1.tif Opt_S2_clear/p1.tif Label/p1.tif"


@pytest.mark.parametrize("separator", [" ", "\t", ",", "  \t "])
def test_split_rows_accept_spaces_tabs_and_commas(separator: str):
    text = "split_id sar_vh sar_vv opt_cloudy opt_clear label\n" + separator.join(["3", *ROW.split()]) + "\n"
    (record,) = parse_split_file(text, "test.csv")
    assert record.name == "p1" and record.split == "test"
    assert (record.sar_vh, record.opt_clear, record.label) == (
        "SAR_S1/VH/p1.tif",
        "Opt_S2_clear/p1.tif",
        "Label/p1.tif",
    )


def test_split_file_without_header_and_without_clear_column():
    text = "1 SAR_S1/VH/a.tif SAR_S1/VV/a.tif Opt_S2_cloudy/a.tif Label/a.tif\n\n2 " + ROW + "\n"
    first, second = parse_split_file(text, "x.csv")
    assert first.opt_clear is None and first.label == "Label/a.tif" and first.split == "train"
    assert second.split == "val" and second.opt_clear == "Opt_S2_clear/p1.tif"


@pytest.mark.parametrize(
    ("text", "message"),
    [("7 " + ROW, r"train.csv:1: split_id must be 1, 2 or 3"), ("1 a.tif b.tif", r"train.csv:1: expected 6 columns")],
)
def test_bad_split_rows_name_file_and_line(text: str, message: str):
    with pytest.raises(DataError, match=message):
        parse_split_file(text, "train.csv")


def test_format_and_parse_round_trip():
    records = [standard_record("a", "train"), standard_record("b", "train", with_clear=False)]
    text = format_split_file(records)
    assert text.splitlines()[0] == "split_id sar_vh sar_vv opt_cloudy opt_clear label"
    parsed = parse_split_file(text, "t.csv")
    assert [(r.name, r.opt_clear) for r in parsed] == [("a", "Opt_S2_clear/a.tif"), ("b", None)]


def test_empty_dataset_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match=r"no samples found.*no split/\*.csv files"):
        DatasetLayout(str(tmp_path)).read_records()
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "train.csv").write_text("split_id sar_vh sar_vv opt_cloudy opt_clear label\n")
    with pytest.raises(DataError, match=r"split files present: split/train.csv"):
        DatasetLayout(str(tmp_path)).read_records()


def test_layout_reads_generated_set_with_cloud_masks(synthetic_master: Path):
    records = DatasetLayout(str(synthetic_master)).read_records()
    assert len(records) == 12
    assert {r.split for r in records} == {"train", "val", "test"}
    assert all(r.cloud_mask == f"CloudMask/{r.name}.tif" for r in records)


def _published_form(root: Path) -> None:
    """Rewrite a set's split files as the published README writes them: split id, folders, one file name."""
    for split_file in (root / "split").glob("*.csv"):
        records = parse_split_file(split_file.read_text(), str(split_file))
        rows = [f"{SPLIT_IDS[r.split]} SAR_S1/VH SAR_S1/VV Opt_S2_cloudy {r.name}.tif" for r in records]
        split_file.write_text("\n".join(rows) + "\n")


def test_folder_form_line_gives_the_same_record_as_the_path_form():
    folders = "1 SAR_S1/VH SAR_S1/VV Opt_S2_cloudy ROIs_01_p_0001.tif\n"
    parsed = read_split_file(folders, "train.csv")
    assert parsed.form == "folders"
    assert parsed.records == [replace(standard_record("ROIs_01_p_0001", "train"), cloud_mask=None)]
    paths = read_split_file(format_split_file(parsed.records), "train.csv")
    assert paths.form == "paths" and paths.records == parsed.records


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 SAR_S1/VH SAR_S1/VV Opt_S2_cloudy a.tif\n1 " + ROW, r"train.csv:2: line is in the paths form"),
        ("1 " + ROW + "\n1 SAR_S1/VH SAR_S1/VV Opt_S2_cloudy a.tif", r"train.csv:2: line is in the folders form"),
        ("1 SAR_S1/VH SAR_S1/HH Opt_S2_cloudy a.tif", r"train.csv:1: unknown folder 'SAR_S1/HH'"),
        ("1 SAR_S1/VH SAR_S1/VV a.tif", r"train.csv:1: folders Opt_S2_cloudy are required"),
        ("1 SAR_S1/VH SAR_S1/VH SAR_S1/VV Opt_S2_cloudy a.tif", r"train.csv:1: folder 'SAR_S1/VH' is listed twice"),
        ("1 SAR_S1/VH SAR_S1/VV Opt_S2_cloudy", r"train.csv:1: expected 6 columns .* found 4"),
    ],
)
def test_mixed_or_malformed_split_lines_name_file_and_line(text: str, message: str):
    with pytest.raises(DataError, match=message):
        parse_split_file(text, "train.csv")


def test_dataset_in_the_published_folder_form_reads_and_loads(dataset_copy: Path):
    path_records = DatasetLayout(str(dataset_copy)).read_records()
    _published_form(dataset_copy)
    (dataset_copy / "Label" / f"{path_records[0].name}.tif").unlink()
    layout = DatasetLayout(str(dataset_copy))
    records = layout.read_records()
    assert layout.split_forms == {"train": "folders", "val": "folders", "test": "folders"}
    assert records[1:] == path_records[1:]
    assert records[0] == replace(path_records[0], label=None)
    dataset = CloudLULCDataset(str(dataset_copy), ("train", "val", "test"), return_clear=True)
    batch = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["optical"].shape == (2, 12, 64, 64) and batch["clear"].shape == (2, 12, 64, 64)
    assert batch["sar"].shape == (2, 2, 64, 64) and batch["name"] == [r.name for r in records[:2]]
    assert (batch["label"][0] == 255).all() and (batch["label"][1] != 255).any()


def test_scene_layout_owns_stack_paths(tmp_path: Path):
    layout = SceneLayout(str(tmp_path))
    assert SceneLayout.role_key("S2A_x", "optical") == "scenes/S2A_x/optical.tif"
    assert SceneLayout.pair_key("S2A_x") == "scenes/S2A_x"
    assert layout.role_uri("S2A_x", "sar") == str(tmp_path / "scenes" / "S2A_x" / "sar.tif")
    assert layout.manifest_uri() == str(tmp_path / "manifest.csv")
    assert SceneLayout.of(layout.storage).root == layout.root
