"""Measurements of the chip layout: one row per sample (its files' statistics) and per split record.

Reading is separated from judging: this module only measures, with the per-raster statistics of
``measure.py`` that the scene stacks use too; ``suites.py`` holds the rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from rasterio.io import DatasetReader

from cloudlulc import schema
from cloudlulc.data.layout import DatasetLayout, SampleRecord
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import RasterInfo, expect_patch_size, grid_mismatch, info_of, open_raster, read_window
from cloudlulc.validation.measure import PERCENTILE_STRIDE, code_stats, optical_stats, prefixed, sar_stats
from cloudlulc.workers import worker_pool

OPTICAL_ROLES = frozenset({"opt_cloudy", "opt_clear"})
SAR_ROLES: dict[str, str] = {"sar_vv": "VV", "sar_vh": "VH"}


def _file_stats(role: str, dataset: DatasetReader, pixels: np.ndarray) -> tuple[dict[str, Any], np.ndarray | None]:
    """The statistics of one chip file, prefixed by its role, and its valid-pixel mask (optical and SAR)."""
    if role in OPTICAL_ROLES:
        stats, valid = optical_stats(dataset, pixels, PERCENTILE_STRIDE)
        return prefixed(role, stats), valid
    if role in SAR_ROLES:
        file_stats, band_stats, valid = sar_stats(dataset, pixels, (SAR_ROLES[role],), PERCENTILE_STRIDE)
        return {**prefixed(role, file_stats), **prefixed("sar", band_stats)}, valid
    if role == "label":
        stats, _ = code_stats(dataset, pixels, schema.VALID_LABEL_VALUES)
        return prefixed(role, stats), None
    return {}, None


def sample_stats(layout: DatasetLayout, record: SampleRecord, missing: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Measure every file of one sample; unreadable files are recorded, not raised.

    Files in ``missing`` (already reported by the split check) are skipped rather than reported twice.
    """
    row: dict[str, Any] = {"name": record.name, "split": record.split}
    errors: list[str] = []
    grid_problems: list[str] = []
    reference: RasterInfo | None = None
    valid: dict[str, np.ndarray] = {}
    for role, path in record.files().items():
        if path in missing:
            continue
        try:
            with open_raster(layout.uri(path)) as dataset:
                info = info_of(dataset)
                expect_patch_size(info, schema.MAX_PATCH_SIDE)
                pixels = read_window(dataset)
                row[f"{role}_bands"] = info.count
                row[f"{role}_dtype"] = info.dtype
                if reference is None:
                    reference = info
                elif problem := grid_mismatch(reference, info):
                    grid_problems.append(f"{path}: {problem}")
                stats, mask = _file_stats(role, dataset, pixels)
                row.update(stats)
                if mask is not None:
                    valid[role] = mask
        except DataError as error:
            errors.append(str(error))
    row["read_error"] = " | ".join(errors)
    row["grid_problem"] = " | ".join(grid_problems)
    masks = [valid[role] for role in ("opt_cloudy", *SAR_ROLES) if role in valid]
    if len(masks) == 1 + len(SAR_ROLES) and all(m.shape == masks[0].shape for m in masks):
        row["nodata_fraction"] = float(1.0 - np.logical_and.reduce(masks).mean())
    return row


def _sample_stats_job(job: tuple[str, SampleRecord, frozenset[str]]) -> dict[str, Any]:
    root, record, missing = job
    return sample_stats(DatasetLayout(root), record, missing)


def iter_sample_stats(
    layout: DatasetLayout, records: list[SampleRecord], missing: frozenset[str] = frozenset(), workers: int = 1
) -> Iterator[dict[str, Any]]:
    """Stats rows in record order; ``workers > 1`` reads samples in parallel processes."""
    jobs = [(layout.root, record, missing) for record in records]
    if workers <= 1:
        yield from map(_sample_stats_job, jobs)
        return
    with worker_pool(workers) as pool:
        yield from pool.map(_sample_stats_job, jobs, chunksize=4)


def split_facts(layout: DatasetLayout, records: list[SampleRecord]) -> pd.DataFrame:
    """One row per split record: which files are missing and which other splits list the sample."""
    existing = set(layout.storage.list())
    splits_by_file: dict[str, set[str]] = defaultdict(set)
    for record in records:
        splits_by_file[record.opt_cloudy].add(record.split)
    rows = []
    for record in records:
        required = {k: v for k, v in record.files().items() if k != "cloud_mask"}
        missing = [path for path in required.values() if path not in existing]
        others = sorted(splits_by_file[record.opt_cloudy] - {record.split})
        rows.append(
            {
                "name": record.name,
                "split": record.split,
                "opt_cloudy": record.opt_cloudy,
                "missing_files": ", ".join(missing),
                "also_in_splits": ", ".join(others),
            }
        )
    return pd.DataFrame(rows)
