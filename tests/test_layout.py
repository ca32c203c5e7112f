from pathlib import Path

import pytest

from cloudlulc.data.layout import DatasetLayout, format_split_file, parse_split_file, standard_record
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
    [
        ("7 " + ROW, r"train.csv:1: split_id must be 1, 2 or 3"),
        ("1 a.tif b.tif", r"train.csv:1: expected 6 columns"),
    ],
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
