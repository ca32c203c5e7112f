"""The scene stacks an ingest run committed (``--mode scenes``): what mapping and validation read.

Only pairs listed in ``manifest.csv`` count: it is written last, so a stack being written by a
running or killed ingest is never picked up half-done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from cloudlulc.data.layout import SceneLayout
from cloudlulc.errors import DataError
from cloudlulc.ingest.manifest import is_s2_only, read_manifest


@dataclass(frozen=True)
class SceneStack:
    """One pair's aligned rasters, as URIs (local paths or ``s3://``)."""

    pair_id: str
    s2_datetime: datetime
    optical: str
    sar: str | None
    """None for a Sentinel-2-only stack (``ingest run --s2-only``): map it with the SAR input absent."""
    cloud_mask: str
    label: str | None
    s2_id: str = ""
    s1_id: str | None = None
    s1_datetime: datetime | None = None
    s2_cloud_cover: float | None = None
    """The Sentinel-2 item's cloud cover (percent of the whole scene, from its catalogue)."""
    checksums: str = ""
    """The manifest's SHA-256 of the stack's files: what a product's data hash is made of."""


def scene_stacks(root: str) -> list[SceneStack]:
    """Every committed scene stack under ``root``, oldest acquisition first; none is a DataError."""
    layout = SceneLayout(root)
    manifest = read_manifest(layout.storage)
    if "mode" in manifest:
        manifest = manifest[manifest["mode"] == "scenes"]
    if manifest.empty:
        raise DataError(
            layout.manifest_uri(),
            "lists no scene stacks; run `cloudlulc ingest run --mode scenes` for this region and dates first",
        )
    return sorted(
        (_stack(layout, row) for row in manifest.itertuples(index=False)),
        key=lambda stack: (stack.s2_datetime, stack.pair_id),
    )


def _stack(layout: SceneLayout, row: Any) -> SceneStack:
    """One manifest row as URIs; SAR and label only where the stack has them."""
    pair_id = str(row.pair_id)
    paths = set(str(row.paths).split())
    has_sar = layout.role_key(pair_id, "sar") in paths or not is_s2_only(row.s1_id)
    has_label = layout.role_key(pair_id, "label") in paths
    return SceneStack(
        pair_id=pair_id,
        s2_datetime=pd.Timestamp(row.s2_datetime).to_pydatetime(),
        optical=layout.role_uri(pair_id, "optical"),
        sar=layout.role_uri(pair_id, "sar") if has_sar else None,
        cloud_mask=layout.role_uri(pair_id, "cloud_mask"),
        label=layout.role_uri(pair_id, "label") if has_label else None,
        s2_id=str(row.s2_id),
        s1_id=str(row.s1_id) if has_sar else None,
        s1_datetime=pd.Timestamp(row.s1_datetime).to_pydatetime() if has_sar and _given(row.s1_datetime) else None,
        s2_cloud_cover=float(row.s2_cloud_cover) if _given(row.s2_cloud_cover) else None,
        checksums=str(row.sha256) if _given(row.sha256) else "",
    )


def _given(value: Any) -> bool:
    """Whether a manifest cell holds a value (pandas reads empty cells as NaN)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value) != ""
