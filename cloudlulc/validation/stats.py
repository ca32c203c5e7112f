"""Per-sample raster statistics and split-file facts: the tables the expectation suites check.

Reading is separated from judging: this module only measures (band counts, dtypes, grids, value
ranges, NaN/nodata shares, label values, missing files); ``suites.py`` holds the rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from cloudlulc import schema
from cloudlulc.data.layout import DatasetLayout, SampleRecord
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import RasterInfo, expect_patch_size, grid_mismatch, info_of, open_raster, read_window
from cloudlulc.io.sentinel import boa_add_offset

PERCENTILE_STRIDE = 4
"""Percentiles use every 4th pixel per axis: exact enough for range rules, 16x cheaper."""

CANONICAL_BAND_NAMES = ",".join(schema.S2_BANDS)


def _subsample(values: np.ndarray) -> np.ndarray:
    return values[..., ::PERCENTILE_STRIDE, ::PERCENTILE_STRIDE]


def _optical_stats(prefix: str, dataset: Any, pixels: np.ndarray) -> dict[str, Any]:
    descriptions = [d for d in dataset.descriptions if d]
    valid = np.any(pixels != schema.S2_NODATA_DN, axis=0)
    reflectance = (_subsample(pixels).astype(np.float32) + boa_add_offset(dataset)) / schema.S2_DN_SCALE
    sampled_valid = _subsample(valid)
    values = reflectance[:, sampled_valid]
    return {
        f"{prefix}_band_names": ",".join(descriptions) if len(descriptions) == dataset.count else "",
        f"{prefix}_nodata_fraction": float(1.0 - valid.mean()),
        f"{prefix}_reflectance_p50": float(np.median(values)) if values.size else np.nan,
        f"{prefix}_reflectance_p99": float(np.percentile(values, 99)) if values.size else np.nan,
    }


def _sar_stats(prefix: str, pixels: np.ndarray) -> dict[str, Any]:
    band = pixels[0].astype(np.float32, copy=False)
    finite = np.isfinite(band)
    values = _subsample(band)[_subsample(finite)]
    return {
        f"{prefix}_nan_fraction": float(1.0 - finite.mean()),
        f"{prefix}_negative_fraction": float(np.mean(values < 0)) if values.size else np.nan,
        f"{prefix}_p50_db": float(np.median(values)) if values.size else np.nan,
        f"{prefix}_p99_db": float(np.percentile(values, 99)) if values.size else np.nan,
    }


def _label_stats(pixels: np.ndarray) -> dict[str, Any]:
    counts = np.bincount(pixels.ravel().astype(np.int64), minlength=256)
    invalid = sorted(set(np.flatnonzero(counts).tolist()) - schema.VALID_LABEL_VALUES)
    return {
        "label_invalid_fraction": float(counts[invalid].sum() / max(pixels.size, 1)),
        "label_invalid_values": ",".join(map(str, invalid)),
    }


def sample_stats(layout: DatasetLayout, record: SampleRecord, missing: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Measure every file of one sample; unreadable files are recorded, not raised.

    Files in ``missing`` (already reported by the split check) are skipped rather than reported twice.
    """
    row: dict[str, Any] = {"name": record.name, "split": record.split}
    errors: list[str] = []
    grid_problems: list[str] = []
    reference: RasterInfo | None = None
    sar_valid: list[np.ndarray] = []
    optical_valid: np.ndarray | None = None
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
                if role in {"opt_cloudy", "opt_clear"}:
                    row.update(_optical_stats(role, dataset, pixels))
                    if role == "opt_cloudy":
                        optical_valid = np.any(pixels != schema.S2_NODATA_DN, axis=0)
                elif role in {"sar_vv", "sar_vh"}:
                    row.update(_sar_stats(role, pixels))
                    sar_valid.append(np.isfinite(pixels[0]))
                elif role == "label":
                    row.update(_label_stats(pixels))
        except DataError as error:
            errors.append(str(error))
    row["read_error"] = " | ".join(errors)
    row["grid_problem"] = " | ".join(grid_problems)
    shapes_agree = optical_valid is not None and all(v.shape == optical_valid.shape for v in sar_valid)
    if shapes_agree and len(sar_valid) == 2:
        valid = optical_valid & sar_valid[0] & sar_valid[1]
        row["nodata_fraction"] = float(1.0 - valid.mean())
    return row


def _sample_stats_job(job: tuple[str, SampleRecord, frozenset[str]]) -> dict[str, Any]:
    root, record, missing = job
    return sample_stats(DatasetLayout(root), record, missing)


def iter_sample_stats(
    layout: DatasetLayout,
    records: list[SampleRecord],
    missing: frozenset[str] = frozenset(),
    workers: int = 1,
) -> Iterator[dict[str, Any]]:
    """Stats rows in record order; ``workers > 1`` reads samples in parallel processes."""
    jobs = [(layout.root, record, missing) for record in records]
    if workers <= 1:
        yield from map(_sample_stats_job, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
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
