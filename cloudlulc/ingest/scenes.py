"""The scene stacks an ingest run committed (``--mode scenes``): what mapping and validation read.

Only pairs listed in ``manifest.csv`` count: it is written last, so a stack being written by a
running or killed ingest is never picked up half-done.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from cloudlulc.errors import DataError
from cloudlulc.ingest.manifest import MANIFEST_KEY, read_manifest
from cloudlulc.ingest.outputs import SCENE_DIR
from cloudlulc.io.storage import open_storage


@dataclass(frozen=True)
class SceneStack:
    """One pair's aligned rasters, as URIs (local paths or ``s3://``)."""

    pair_id: str
    s2_datetime: datetime
    optical: str
    sar: str
    cloud_mask: str
    label: str | None


def scene_stacks(root: str) -> list[SceneStack]:
    """Every committed scene stack under ``root``, oldest acquisition first; none is a DataError."""
    storage = open_storage(root)
    manifest = read_manifest(storage)
    if "mode" in manifest:
        manifest = manifest[manifest["mode"] == "scenes"]
    if manifest.empty:
        raise DataError(storage.join(MANIFEST_KEY), "lists no scene stacks; run `cloudlulc ingest run --mode "
                                                    "scenes` for this region and dates first")  # fmt: skip
    stacks = []
    for row in manifest.itertuples(index=False):
        folder = f"{SCENE_DIR}/{row.pair_id}"
        paths = set(str(row.paths).split())
        stacks.append(SceneStack(
            pair_id=str(row.pair_id),
            s2_datetime=pd.Timestamp(row.s2_datetime).to_pydatetime(),
            optical=storage.join(f"{folder}/optical.tif"),
            sar=storage.join(f"{folder}/sar.tif"),
            cloud_mask=storage.join(f"{folder}/cloud_mask.tif"),
            label=storage.join(f"{folder}/label.tif") if f"{folder}/label.tif" in paths else None,
        ))  # fmt: skip
    return sorted(stacks, key=lambda stack: (stack.s2_datetime, stack.pair_id))
