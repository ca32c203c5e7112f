"""The CloudLULC-Set folder layout and its split files, read and written exactly as DATA.md fixes them.

```
<root>/SAR_S1/VH/<name>.tif  SAR_S1/VV/<name>.tif  Opt_S2_cloudy/<name>.tif  Opt_S2_clear/<name>.tif
<root>/Label/<name>.tif      split/train.csv  split/val.csv  split/test.csv
```

Our additions live beside it and are optional for readers: ``CloudMask/<name>.tif`` (cloud codes of
the cloudy image) and ``metadata.csv`` (one row per sample, see ``metadata.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final, Literal

from cloudlulc.errors import DataError
from cloudlulc.io.storage import Storage, open_storage

SAR_VH_DIR: Final = "SAR_S1/VH"
SAR_VV_DIR: Final = "SAR_S1/VV"
OPT_CLOUDY_DIR: Final = "Opt_S2_cloudy"
OPT_CLEAR_DIR: Final = "Opt_S2_clear"
LABEL_DIR: Final = "Label"
CLOUD_MASK_DIR: Final = "CloudMask"
SPLIT_DIR: Final = "split"
METADATA_FILE: Final = "metadata.csv"

Split = Literal["train", "val", "test"]
SPLITS: Final[tuple[Split, ...]] = ("train", "val", "test")
SPLIT_IDS: Final[dict[Split, int]] = {"train": 1, "val": 2, "test": 3}
SPLIT_COLUMNS: Final = ("split_id", "sar_vh", "sar_vv", "opt_cloudy", "opt_clear", "label")
MISSING_MARKERS: Final = frozenset({"-", "na", "none", "null", ""})


@dataclass(frozen=True)
class SampleRecord:
    """One triplet of the dataset: relative paths of its files and the split it belongs to."""

    name: str
    split: Split
    sar_vh: str
    sar_vv: str
    opt_cloudy: str
    opt_clear: str | None
    label: str | None
    cloud_mask: str | None = None

    def files(self) -> dict[str, str]:
        """Role -> relative path for every file the record names."""
        roles = {
            "sar_vh": self.sar_vh,
            "sar_vv": self.sar_vv,
            "opt_cloudy": self.opt_cloudy,
            "opt_clear": self.opt_clear,
            "label": self.label,
            "cloud_mask": self.cloud_mask,
        }
        return {role: path for role, path in roles.items() if path}


def standard_record(name: str, split: Split, *, with_clear: bool = True, with_label: bool = True) -> SampleRecord:
    """The record of sample ``name`` at the standard paths of the layout."""
    return SampleRecord(
        name=name,
        split=split,
        sar_vh=f"{SAR_VH_DIR}/{name}.tif",
        sar_vv=f"{SAR_VV_DIR}/{name}.tif",
        opt_cloudy=f"{OPT_CLOUDY_DIR}/{name}.tif",
        opt_clear=f"{OPT_CLEAR_DIR}/{name}.tif" if with_clear else None,
        label=f"{LABEL_DIR}/{name}.tif" if with_label else None,
        cloud_mask=f"{CLOUD_MASK_DIR}/{name}.tif",
    )


def parse_split_file(text: str, source: str) -> list[SampleRecord]:
    """Parse split records separated by whitespace, tabs or commas; a header line is optional.

    Six fields are the full record; with five, ``opt_clear`` is missing (inference-only data). A
    missing path may also be written as ``-`` or ``NA``. Errors name the file and the line.
    """
    records: list[SampleRecord] = []
    split_by_id = {number: split for split, number in SPLIT_IDS.items()}
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = [f for f in re.split(r"[\s,]+", line.strip()) if f != ""] if line.strip() else []
        if not fields or fields[0].startswith("#") or fields[0].lower() == "split_id":
            continue
        where = f"{source}:{line_number}"
        if len(fields) == 5:
            fields.insert(4, "-")
        if len(fields) != 6:
            raise DataError(where, f"expected 6 columns ({' '.join(SPLIT_COLUMNS)}), found {len(fields)}")
        try:
            split = split_by_id[int(fields[0])]
        except (ValueError, KeyError):
            raise DataError(where, f"split_id must be 1, 2 or 3, found {fields[0]!r}") from None
        sar_vh, sar_vv, opt_cloudy, opt_clear, label = (
            None if f.lower() in MISSING_MARKERS else f.lstrip("./") for f in fields[1:]
        )
        if not (sar_vh and sar_vv and opt_cloudy):
            raise DataError(where, "sar_vh, sar_vv and opt_cloudy are required")
        name = opt_cloudy.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        records.append(SampleRecord(name, split, sar_vh, sar_vv, opt_cloudy, opt_clear, label))
    return records


def format_split_file(records: list[SampleRecord]) -> str:
    """Split records as the published files write them: a header, then space-separated rows."""
    lines = [" ".join(SPLIT_COLUMNS)]
    for record in records:
        fields = [
            record.sar_vh,
            record.sar_vv,
            record.opt_cloudy,
            record.opt_clear or "-",
            record.label or "-",
        ]
        lines.append(" ".join([str(SPLIT_IDS[record.split]), *fields]))
    return "\n".join(lines) + "\n"


class DatasetLayout:
    """A CloudLULC-Set rooted at a local folder or an ``s3://`` prefix."""

    def __init__(self, root: str, storage: Storage | None = None) -> None:
        self.root = str(root).rstrip("/") or "/"
        self.storage = storage or open_storage(self.root)

    def uri(self, relative_path: str) -> str:
        """Full path or URI of a file of the dataset."""
        return self.storage.join(relative_path)

    def split_key(self, split: Split) -> str:
        """Relative path of a split file."""
        return f"{SPLIT_DIR}/{split}.csv"

    def read_split(self, split: Split) -> list[SampleRecord]:
        """Records of one split (empty when its file is absent), with cloud masks where present."""
        return self._read_split(split, set(self.storage.list(CLOUD_MASK_DIR)))

    def _read_split(self, split: Split, mask_keys: set[str]) -> list[SampleRecord]:
        key = self.split_key(split)
        if not self.storage.exists(key):
            return []
        text = self.storage.read_bytes(key).decode("utf-8", errors="replace")
        records = parse_split_file(text, self.uri(key))
        return [
            replace(r, cloud_mask=f"{CLOUD_MASK_DIR}/{r.name}.tif")
            if f"{CLOUD_MASK_DIR}/{r.name}.tif" in mask_keys
            else r
            for r in records
        ]

    def read_records(self, splits: tuple[Split, ...] = SPLITS) -> list[SampleRecord]:
        """Records of the given splits; an empty or split-less dataset is an error naming the root."""
        mask_keys = set(self.storage.list(CLOUD_MASK_DIR))  # one listing for all splits
        records = [record for split in splits for record in self._read_split(split, mask_keys)]
        if not records:
            present = self.storage.list(SPLIT_DIR)
            detail = f"split files present: {', '.join(present)}" if present else "no split/*.csv files"
            raise DataError(
                self.root,
                f"no samples found for split(s) {', '.join(splits)} ({detail}); expected the CloudLULC-Set "
                "layout with split/train.csv, split/val.csv and split/test.csv",
            )
        return records

    def write_splits(self, records: list[SampleRecord]) -> None:
        """Write all three split files atomically (call last: they are the dataset's index)."""
        for split in SPLITS:
            rows = [r for r in records if r.split == split]
            self.storage.write_bytes(self.split_key(split), format_split_file(rows).encode())
