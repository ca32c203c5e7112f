"""The CloudLULC-Set folder layout and its split files, read and written exactly as DATA.md fixes them.

```
<root>/SAR_S1/VH/<name>.tif  SAR_S1/VV/<name>.tif  Opt_S2_cloudy/<name>.tif  Opt_S2_clear/<name>.tif
<root>/Label/<name>.tif      split/train.csv  split/val.csv  split/test.csv
```

Our additions live beside it and are optional for readers: ``CloudMask/<name>.tif`` (cloud codes of
the cloudy image) and ``metadata.csv`` (one row per sample, see ``metadata.py``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from typing import Final, Literal

from cloudlulc.errors import DataError
from cloudlulc.io.storage import Storage, open_storage

log = logging.getLogger(__name__)

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


SplitForm = Literal["paths", "folders"]
"""How a split file names a sample's files.

``paths``: ``split_id sar_vh sar_vv opt_cloudy [opt_clear] label``, one relative path per file (what we write).
``folders``: ``split_id <folder>... <file name>``, the published README's form, e.g.
``1 SAR_S1/VH SAR_S1/VV Opt_S2_cloudy ROIs_01_p_0001.tif``: the file has that name in every folder, and
``Opt_S2_clear/`` and ``Label/`` hold it beside them.
"""
FOLDER_ROLES: Final[dict[str, str]] = {
    SAR_VH_DIR: "sar_vh",
    SAR_VV_DIR: "sar_vv",
    OPT_CLOUDY_DIR: "opt_cloudy",
    OPT_CLEAR_DIR: "opt_clear",
    LABEL_DIR: "label",
}
RASTER_SUFFIXES: Final = (".tif", ".tiff")


@dataclass(frozen=True)
class SplitFile:
    """A parsed split file: its records and the form its lines use (None for a file without rows)."""

    form: SplitForm | None
    records: list[SampleRecord]


def parse_split_file(text: str, source: str) -> list[SampleRecord]:
    """Records of a split file in either form (see ``SplitForm``); errors name the file and the line."""
    return read_split_file(text, source).records


def read_split_file(text: str, source: str) -> SplitFile:
    """Parse split rows separated by whitespace, tabs or commas; a header line is optional.

    In the ``paths`` form six fields are the full record; with five, ``opt_clear`` is missing
    (inference-only data), and a missing path may also be written as ``-`` or ``NA``. In the ``folders``
    form the clear image and label are taken from ``Opt_S2_clear/`` and ``Label/``. A file mixing the two
    forms, or a line that fits neither, is a DataError naming the file and the line.
    """
    records: list[SampleRecord] = []
    form: SplitForm | None = None
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = [f for f in re.split(r"[\s,]+", line.strip()) if f != ""] if line.strip() else []
        if not fields or fields[0].startswith("#") or fields[0].lower() == "split_id":
            continue
        where = f"{source}:{line_number}"
        line_form = split_form_of(fields)
        if form is not None and line_form != form:
            raise DataError(
                where,
                f"line is in the {line_form} form but earlier lines are in the {form} form; "
                "a split file must use one form",
            )
        form = line_form
        split = _split_of(fields[0], where)
        if line_form == "folders":
            records.append(_folder_record(fields[1:], split, where))
        else:
            records.append(_path_record(fields[1:], split, where))
    return SplitFile(form, records)


def split_form_of(fields: list[str]) -> SplitForm:
    """``folders`` when the fields after the split id are folders then one bare raster file name."""
    *folders, last = fields[1:] or [""]
    bare_file = "/" not in last and last.lower().endswith(RASTER_SUFFIXES)
    if folders and bare_file and not any(f.lower().endswith(RASTER_SUFFIXES) for f in folders):
        return "folders"
    return "paths"


def _split_of(field: str, where: str) -> Split:
    split_by_id = {number: split for split, number in SPLIT_IDS.items()}
    try:
        return split_by_id[int(field)]
    except (ValueError, KeyError):
        raise DataError(where, f"split_id must be 1, 2 or 3, found {field!r}") from None


def _path_record(fields: list[str], split: Split, where: str) -> SampleRecord:
    if len(fields) == 4:
        fields = [*fields[:3], "-", fields[3]]
    if len(fields) != 5:
        raise DataError(
            where,
            f"expected 6 columns ({' '.join(SPLIT_COLUMNS)}) or a split id, folders and one file name, "
            f"found {len(fields) + 1}",
        )
    sar_vh, sar_vv, opt_cloudy, opt_clear, label = (
        None if f.lower() in MISSING_MARKERS else f.lstrip("./") for f in fields
    )
    if not (sar_vh and sar_vv and opt_cloudy):
        raise DataError(where, "sar_vh, sar_vv and opt_cloudy are required")
    name = opt_cloudy.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return SampleRecord(name, split, sar_vh, sar_vv, opt_cloudy, opt_clear, label)


def _folder_record(fields: list[str], split: Split, where: str) -> SampleRecord:
    *folders, file_name = fields
    roles: dict[str, str] = {}
    for folder in (f.strip("/").removeprefix("./") for f in folders):
        role = FOLDER_ROLES.get(folder)
        if role is None:
            raise DataError(where, f"unknown folder {folder!r}; expected folders among {', '.join(FOLDER_ROLES)}")
        if role in roles:
            raise DataError(where, f"folder {folder!r} is listed twice")
        roles[role] = f"{folder}/{file_name}"
    required = {SAR_VH_DIR: "sar_vh", SAR_VV_DIR: "sar_vv", OPT_CLOUDY_DIR: "opt_cloudy"}
    missing = [folder for folder, role in required.items() if role not in roles]
    if missing:
        raise DataError(where, f"folders {', '.join(missing)} are required before the file name")
    return SampleRecord(
        name=file_name.rsplit(".", 1)[0],
        split=split,
        sar_vh=roles["sar_vh"],
        sar_vv=roles["sar_vv"],
        opt_cloudy=roles["opt_cloudy"],
        opt_clear=roles.get("opt_clear", f"{OPT_CLEAR_DIR}/{file_name}"),
        label=roles.get("label", f"{LABEL_DIR}/{file_name}"),
    )


def format_split_file(records: list[SampleRecord]) -> str:
    """Split records as the published files write them: a header, then space-separated rows."""
    lines = [" ".join(SPLIT_COLUMNS)]
    for record in records:
        fields = [record.sar_vh, record.sar_vv, record.opt_cloudy, record.opt_clear or "-", record.label or "-"]
        lines.append(" ".join([str(SPLIT_IDS[record.split]), *fields]))
    return "\n".join(lines) + "\n"


class DatasetLayout:
    """A CloudLULC-Set rooted at a local folder or an ``s3://`` prefix."""

    def __init__(self, root: str, storage: Storage | None = None) -> None:
        self.root = str(root).rstrip("/") or "/"
        self.storage = storage or open_storage(self.root)
        self.split_forms: dict[Split, SplitForm] = {}
        """The form each split file read so far was written in, for callers to report."""

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
        parsed = read_split_file(text, self.uri(key))
        records = parsed.records
        if parsed.form is not None:
            self.split_forms[split] = parsed.form
            log.debug("%s: split file in the %s form, %d samples", self.uri(key), parsed.form, len(records))
        if parsed.form == "folders":
            records = self._present_beside(records)
        return [
            replace(r, cloud_mask=f"{CLOUD_MASK_DIR}/{r.name}.tif")
            if f"{CLOUD_MASK_DIR}/{r.name}.tif" in mask_keys
            else r
            for r in records
        ]

    def _present_beside(self, records: list[SampleRecord]) -> list[SampleRecord]:
        """Folder-form records without the clear image or label their folders lack (inference-only data)."""
        clear_keys = set(self.storage.list(OPT_CLEAR_DIR))
        label_keys = set(self.storage.list(LABEL_DIR))
        return [
            replace(
                r,
                opt_clear=r.opt_clear if r.opt_clear in clear_keys else None,
                label=r.label if r.label in label_keys else None,
            )
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


SCENE_DIR: Final = "scenes"
MANIFEST_FILE: Final = "manifest.csv"
SceneRole = Literal["optical", "sar", "cloud_mask", "label"]
SCENE_ROLES: Final[tuple[SceneRole, ...]] = ("optical", "sar", "cloud_mask", "label")


class SceneLayout:
    """Scene stacks (``ingest run --mode scenes``): the one place that knows where their files live.

    ```
    <root>/scenes/<pair id>/optical.tif  sar.tif  cloud_mask.tif  label.tif
    <root>/manifest.csv   (written last: it lists the committed stacks)
    ```

    Keys are relative to the root; ``uri`` turns them into paths or ``s3://`` URIs for GDAL and messages.
    """

    scenes_key: Final = SCENE_DIR
    manifest_key: Final = MANIFEST_FILE

    def __init__(self, root: str, storage: Storage | None = None) -> None:
        self.root = str(root).rstrip("/") or "/"
        self.storage = storage or open_storage(self.root)

    @classmethod
    def of(cls, storage: Storage) -> SceneLayout:
        """The layout of an already opened storage (writers and validators hold one)."""
        return cls(storage.uri, storage)

    @staticmethod
    def pair_key(pair_id: str) -> str:
        """Relative folder of one pair's stack."""
        return f"{SCENE_DIR}/{pair_id}"

    @staticmethod
    def role_key(pair_id: str, role: SceneRole | str) -> str:
        """Relative path of one raster of a stack."""
        return f"{SCENE_DIR}/{pair_id}/{role}.tif"

    def uri(self, key: str) -> str:
        """Full path or URI of a key of the layout."""
        return self.storage.join(key)

    def role_uri(self, pair_id: str, role: SceneRole | str) -> str:
        """Full path or URI of one raster of a stack."""
        return self.uri(self.role_key(pair_id, role))

    def manifest_uri(self) -> str:
        """Full path or URI of the manifest."""
        return self.uri(MANIFEST_FILE)
