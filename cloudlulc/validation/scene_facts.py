"""Measurements of the scene-stack layout: one row per stack, with memory bounded whatever the scene size.

A stack can be 10980 x 10980 px, so nothing reads a band at full resolution. Per file:

* the storage streams the bytes through SHA-256 (``Storage.sha256``), checked against the manifest;
* the pixel statistics (``measure.py``, shared with the chips) come from one decimated read whose
  longest side is :attr:`SceneThresholds.stats_max_side` pixels, which GDAL serves from the COG's
  overviews, so at most ``bands x 1024 x 1024`` float32 values (48 MiB for 12 bands) are held; and
* the last full-resolution block is read as an integrity probe: a COG stores its overviews before the
  full-resolution tiles, so a truncated file still serves the decimated read but fails this one.

Statistics from overviews are approximate near nodata edges, well within the rules' tolerances.
GDAL's block cache is capped at ``gdal_env.STREAMING_CACHE_MB`` while reading.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from rasterio.io import DatasetReader

from cloudlulc import schema
from cloudlulc.data.layout import SceneLayout
from cloudlulc.errors import DataError, MissingObjectError
from cloudlulc.io.gdal_env import bounded_block_cache
from cloudlulc.io.rasters import RasterInfo, grid_mismatch, info_of, open_raster
from cloudlulc.io.storage import Storage
from cloudlulc.validation.measure import (
    class_shares,
    code_stats,
    optical_stats,
    prefixed,
    probe_last_block,
    read_decimated,
    sar_stats,
)
from cloudlulc.validation.scene_manifest import ManifestScene
from cloudlulc.validation.thresholds import SceneThresholds

EXPECTED_BANDS: dict[str, int] = {"optical": len(schema.S2_BANDS), "sar": len(schema.S1_POLARISATIONS)}


def _file_stats(role: str, dataset: DatasetReader, pixels: np.ndarray) -> tuple[dict[str, Any], np.ndarray | None]:
    """The statistics of one stack file, prefixed by its role, and its valid-pixel mask (optical and SAR)."""
    if role == "optical":
        stats, valid = optical_stats(dataset, pixels)
        return prefixed(role, stats), valid
    if role == "sar":
        file_stats, band_stats, valid = sar_stats(dataset, pixels, schema.S1_POLARISATIONS)
        return {**prefixed(role, file_stats), **prefixed(role, band_stats)}, valid
    if role == "cloud_mask":
        stats, _ = code_stats(dataset, pixels, frozenset(schema.CLOUD_MASK_NAMES))
        return prefixed(role, stats), None
    stats, histogram = code_stats(dataset, pixels, schema.VALID_LABEL_VALUES)
    return {**prefixed(role, stats), **class_shares(histogram)}, None


def _checksum_problem(storage: Storage, key: str, expected: str) -> str:
    """Why ``key`` is not the file the manifest recorded ("" when its SHA-256 matches)."""
    actual = storage.sha256(key)
    if actual == expected:
        return ""
    return (
        f"{storage.join(key)}: SHA-256 {actual[:16]}... differs from the manifest's {expected[:16]}... "
        "(replaced or half-written since ingest)"
    )


def scene_facts(storage: Storage, scene: ManifestScene, existing: set[str], limits: SceneThresholds) -> dict[str, Any]:
    """Measure one stack into a row of the ``scenes`` table; unreadable files are recorded, not raised."""
    row: dict[str, Any] = {"name": scene.pair_id, "manifest_problem": scene.problem}
    problems: dict[str, list[str]] = {"missing_files": [], "read_error": [], "grid_problem": [], "checksum_problem": []}
    reference: RasterInfo | None = None
    valid: dict[str, np.ndarray] = {}
    for role, key in scene.files.items():
        uri = row[f"{role}_path"] = storage.join(key)
        if key not in existing:
            problems["missing_files"].append(uri)
            continue
        expected = scene.checksums.get(key)
        try:
            if limits.verify_checksums and expected and (changed := _checksum_problem(storage, key, expected)):
                problems["checksum_problem"].append(changed)
            with bounded_block_cache(), open_raster(uri) as dataset:
                info = info_of(dataset)
                row[f"{role}_bands"], row[f"{role}_dtype"] = info.count, info.dtype
                if reference is None:
                    reference = info
                elif problem := grid_mismatch(reference, info):
                    problems["grid_problem"].append(f"{uri}: {problem}")
                probe_last_block(dataset)
                pixels = read_decimated(dataset, EXPECTED_BANDS.get(role, 1), limits.stats_max_side)
                row[f"{role}_stats_shape"] = f"{pixels.shape[1]}x{pixels.shape[2]} of {info.height}x{info.width}"
                stats, mask = _file_stats(role, dataset, pixels)
                row.update(stats)
                if mask is not None:
                    valid[role] = mask
        except MissingObjectError as error:
            problems["read_error"].append(f"{uri}: cannot read ({error})")
        except DataError as error:
            problems["read_error"].append(str(error))
    row["missing_files"] = ", ".join(problems.pop("missing_files"))
    row.update({column: " | ".join(texts) for column, texts in problems.items()})
    if {"optical", "sar"} <= set(valid) and valid["optical"].shape == valid["sar"].shape:
        row["scene_nodata_fraction"] = float(1.0 - (valid["optical"] & valid["sar"]).mean())
    return row


def iter_scene_facts(
    storage: Storage, scenes: list[ManifestScene], limits: SceneThresholds, workers: int = 1
) -> Iterator[dict[str, Any]]:
    """Rows of :func:`scene_facts` in manifest order; ``workers > 1`` measures stacks in threads."""
    existing = set(storage.list(SceneLayout.scenes_key))
    if workers <= 1:
        yield from (scene_facts(storage, scene, existing, limits) for scene in scenes)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(lambda scene: scene_facts(storage, scene, existing, limits), scenes)
