"""What an ingest prefix holds, and the order in which it becomes visible.

Commit protocol (kill-safe and safe for concurrent runs on one prefix):

1. every output file of a pair is written atomically (temporary name + rename, or a completed S3 upload);
2. the pair's entry ``ingest/pairs/<pair id>.json`` (its files and their SHA-256) is created only if
   absent (``If-None-Match: *`` on S3, a hard link locally): the pair's commit point;
3. the index files are rebuilt from all entries and written only where their bytes change: the split
   files and ``metadata.csv`` (chips), then ``manifest.csv`` last. A writer re-lists the entries
   after writing and rebuilds if another run committed meanwhile, so the last writer always leaves an
   index that holds every committed pair.

A run killed before step 2 leaves files no index names; the rerun redoes the pair and writes the same
bytes. Nothing in an entry or index depends on when or where a run happened.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from cloudlulc.data.layout import MANIFEST_FILE, METADATA_FILE, SPLIT_DIR, SPLITS, SampleRecord, format_split_file
from cloudlulc.errors import DataError
from cloudlulc.io.storage import TEMP_MARKER, LocalStorage, Storage

ENTRY_DIR = "ingest/pairs"
PARAMS_KEY = "ingest/params.json"
MANIFEST_KEY = MANIFEST_FILE
MAX_INDEX_ROUNDS = 20
MANIFEST_COLUMNS = (
    "pair_id",
    "s2_id",
    "s1_id",
    "s2_datetime",
    "s1_datetime",
    "gap_days",
    "s2_cloud_cover",
    "s1_coverage",
    "crs",
    "mode",
    "outputs",
    "paths",
    "sha256",
    "entry",
)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_key(pair_id: str) -> str:
    """Where the entry of a pair lives."""
    return f"{ENTRY_DIR}/{pair_id}.json"


def to_json_bytes(document: dict[str, Any]) -> bytes:
    """Stable JSON (sorted keys), so equal content gives equal bytes."""
    return (json.dumps(document, sort_keys=True, indent=1) + "\n").encode()


def committed_pairs(storage: Storage) -> set[str]:
    """Ids of the pairs whose entry exists (one listing)."""
    return {key.rsplit("/", 1)[-1].removesuffix(".json") for key in storage.list(ENTRY_DIR) if key.endswith(".json")}


def commit_entry(storage: Storage, entry: dict[str, Any]) -> bool:
    """Create the pair's entry; False when another run committed the same pair first (its files are equal)."""
    return storage.write_bytes(entry_key(entry["pair_id"]), to_json_bytes(entry), if_absent=True)


def check_params(storage: Storage, params: dict[str, Any]) -> None:
    """Record the run's processing parameters on first use of a prefix; refuse different ones later."""
    if not storage.exists(PARAMS_KEY) and storage.write_bytes(PARAMS_KEY, to_json_bytes(params), if_absent=True):
        return
    stored = json.loads(storage.read_bytes(PARAMS_KEY))
    params = json.loads(to_json_bytes(params))  # tuples become lists, as stored
    keys = sorted(set(stored) | set(params))
    differences = [
        f"{k}: {stored.get(k)!r} here, {params.get(k)!r} now" for k in keys if stored.get(k) != params.get(k)
    ]
    if differences:
        raise DataError(
            storage.join(PARAMS_KEY),
            "this prefix was ingested with other parameters (" + "; ".join(differences) + "); use a new output prefix",
        )


def _index_files(entries: list[dict[str, Any]]) -> dict[str, bytes]:
    """The index files of all entries, in write order (the manifest last)."""
    files: dict[str, bytes] = {}
    chips = [output for entry in entries if entry["mode"] == "chips" for output in entry["outputs"]]
    if chips:
        records = sorted((SampleRecord(**o["record"]) for o in chips), key=lambda r: r.name)
        for split in SPLITS:
            files[f"{SPLIT_DIR}/{split}.csv"] = format_split_file([r for r in records if r.split == split]).encode()
        frame = pd.DataFrame([o["metadata"] for o in chips]).sort_values("name", kind="stable")
        files[METADATA_FILE] = frame.to_csv(index=False, float_format="%.6g").encode()
    rows = []
    for entry in sorted(entries, key=lambda e: e["pair_id"]):
        keys = sorted(entry["checksums"])
        row = {column: entry.get(column) for column in MANIFEST_COLUMNS}
        row.update(
            outputs=len(entry["outputs"]),
            paths=" ".join(keys),
            sha256=" ".join(entry["checksums"][k] for k in keys),
            entry=entry_key(entry["pair_id"]),
        )
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    files[MANIFEST_KEY] = frame.to_csv(index=False, float_format="%.6g").encode()
    return files


def publish_index(storage: Storage, *, on_write: Callable[[str], None] | None = None) -> list[str]:
    """Rebuild the index files from every committed entry; write only those that change. Returns keys written."""
    cache: dict[str, dict[str, Any]] = {}
    written: list[str] = []
    for _ in range(MAX_INDEX_ROUNDS):
        keys = sorted(k for k in storage.list(ENTRY_DIR) if k.endswith(".json"))
        for key in keys:
            if key not in cache:  # entries are immutable once created
                cache[key] = json.loads(storage.read_bytes(key))
        for key, data in _index_files([cache[k] for k in keys]).items():
            if not storage.exists(key) or storage.read_bytes(key) != data:
                storage.write_bytes(key, data)
                written.append(key)
                if on_write:
                    on_write(key)
        if sorted(k for k in storage.list(ENTRY_DIR) if k.endswith(".json")) == keys:
            return written
    raise DataError(storage.uri, f"the index did not settle after {MAX_INDEX_ROUNDS} rounds of concurrent commits")


def is_s2_only(s1_id: object) -> bool:
    """Whether a manifest row with this ``s1_id`` is a Sentinel-2-only stack (empty or missing: no partner)."""
    return not isinstance(s1_id, str) or not s1_id.strip()


def read_manifest(storage: Storage) -> pd.DataFrame:
    """The manifest table (empty when the prefix holds none)."""
    if not storage.exists(MANIFEST_KEY):
        return pd.DataFrame(columns=list(MANIFEST_COLUMNS))
    return pd.read_csv(io.BytesIO(storage.read_bytes(MANIFEST_KEY)))


def read_manifest_text(storage: Storage) -> pd.DataFrame:
    """The manifest with every cell as the text ingest wrote, for checkers that must not guess types.

    Raises MissingObjectError when there is no manifest, ValueError (or pandas' parser errors) when it
    is empty or not a CSV.
    """
    data = storage.read_bytes(MANIFEST_KEY)
    if not data.strip():
        raise ValueError("the file is empty")
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def sweep_temporaries(storage: Storage, older_than_s: float) -> int:
    """Delete temporary files a killed run left in a local output folder; S3 never shows unfinished uploads."""
    if not isinstance(storage, LocalStorage) or not storage.root.exists():
        return 0
    removed = 0
    deadline = time.time() - older_than_s
    for path in storage.root.rglob(f"*{TEMP_MARKER}*"):
        try:
            if path.is_file() and path.stat().st_mtime <= deadline:
                os.unlink(path)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
