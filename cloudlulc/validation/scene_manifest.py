"""Which scene stacks ``manifest.csv`` commits, read with the ingest's own manifest reader.

Problems of the manifest as a whole become the reason there are no scenes; problems of one row stay
with that row (``ManifestScene.problem``) and are reported as failures of that pair.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from cloudlulc.data.layout import SceneLayout
from cloudlulc.ingest.manifest import PARAMS_KEY, is_s2_only, read_manifest_text
from cloudlulc.io.storage import Storage, open_storage

ROLES: tuple[str, ...] = ("optical", "sar", "cloud_mask", "label")
"""Files of a stack, in reading order; the first one read is the grid the others must match."""
REQUIRED_ROLES: tuple[str, ...] = ("optical", "sar")
"""Files every stack has; ``cloud_mask`` and ``label`` are checked when the manifest lists them."""
UNREADABLE = (ValueError, pd.errors.ParserError, UnicodeDecodeError)
"""What reading a manifest that is not a CSV raises."""


@dataclass(frozen=True)
class ManifestScene:
    """One committed stack as the manifest lists it."""

    pair_id: str
    files: dict[str, str]
    """Role (``optical``...) to storage key (``scenes/<pair id>/optical.tif``)."""
    checksums: dict[str, str] = field(default_factory=dict)
    """Storage key to the SHA-256 the manifest recorded."""
    problem: str = ""
    """What is wrong with the manifest row itself ("" when nothing)."""
    cloud_cover: float | None = None
    """Scene cloud cover from the manifest, as a fraction."""


def _params_mode(storage: Storage) -> str | None:
    if not storage.exists(PARAMS_KEY):
        return None
    try:
        return str(json.loads(storage.read_bytes(PARAMS_KEY)).get("mode"))
    except (ValueError, AttributeError):
        return None


def is_scene_layout(root: str) -> bool:
    """Whether ``root`` is the output of ``ingest run --mode scenes`` (what ``cloudlulc validate`` detects).

    True when a ``manifest.csv`` is present and its rows, or the ingest parameters recorded beside it
    (``ingest/params.json``), say ``mode=scenes``; so a region that yielded no pair is still validated as
    scenes, and fails with "no scenes under <root>".
    """
    storage = open_storage(root)
    if not storage.exists(SceneLayout.manifest_key):
        return False
    if _params_mode(storage) == "scenes":
        return True
    try:
        frame = read_manifest_text(storage)
    except UNREADABLE:
        return False
    return "mode" in frame.columns and bool((frame["mode"] == "scenes").any())


def _no_scenes(storage: Storage, reason: str) -> str:
    return f"no scenes under {storage.uri}: {reason}"


def read_scene_manifest(storage: Storage) -> tuple[list[ManifestScene], str]:
    """The stacks ``manifest.csv`` lists, and why there are none ("" when there are some).

    Problems of single rows (paths without checksums, a required file not listed) are kept in the
    row's ``problem`` and reported as failures of that pair.
    """
    manifest_uri = SceneLayout.of(storage).manifest_uri()
    if not storage.exists(SceneLayout.manifest_key):
        return [], _no_scenes(
            storage,
            f"{manifest_uri} does not exist (run `cloudlulc ingest run --mode scenes` "
            "first; the manifest is written last, so an interrupted run has none)",
        )
    try:
        frame = read_manifest_text(storage)
    except UNREADABLE as error:
        return [], _no_scenes(storage, f"{manifest_uri} is not a readable CSV ({error})")
    absent = sorted({"pair_id", "paths", "sha256"} - set(frame.columns))
    if absent:
        return [], _no_scenes(storage, f"{manifest_uri} lacks the column(s) {', '.join(absent)}")
    chips = 0
    if "mode" in frame.columns:
        chips = int((frame["mode"] != "scenes").sum())
        frame = frame[frame["mode"] == "scenes"]
    if frame.empty:
        why = (
            f"{chips} pair(s) were ingested as chips (validate them without --scenes)"
            if chips
            else "the region and dates gave no Sentinel-1/2 pair"
        )
        return [], _no_scenes(storage, f"{manifest_uri} lists no scene stack; {why}")
    return [_manifest_scene(row) for row in frame.to_dict("records")], ""


def _cloud_cover(row: dict[str, str]) -> float | None:
    try:
        cover = float(row.get("s2_cloud_cover", "")) / 100.0
    except ValueError:
        return None
    return cover if math.isfinite(cover) else None


def _manifest_scene(row: dict[str, str]) -> ManifestScene:
    pair_id = row["pair_id"]
    paths, digests = row["paths"].split(), row["sha256"].split()
    problems = []
    if len(paths) != len(digests):
        problems.append(f"{len(paths)} path(s) but {len(digests)} SHA-256 value(s)")
        digests = []
    checksums = dict(zip(paths, digests, strict=False))
    s2_only = "s1_id" in row and is_s2_only(row["s1_id"])
    files: dict[str, str] = {}
    for role in ROLES:
        key = SceneLayout.role_key(pair_id, role)
        if key in paths:
            files[role] = key
        elif role in REQUIRED_ROLES and not (role == "sar" and s2_only):
            files[role] = key
            problems.append(f"{key} is not listed")
    return ManifestScene(pair_id, files, checksums, "; ".join(problems), _cloud_cover(row))
