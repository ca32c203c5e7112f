"""Per-raster statistics for both layouts (chips and scene stacks), so a column means one thing everywhere.

Only measures, never judges: band names, nodata and NaN shares, reflectance and dB percentiles,
values outside a code set. The layouts differ only in how they read pixels (chips: every pixel, with
percentiles on every ``stride``-th pixel per axis; scene stacks: one decimated read, see ``scene_facts``),
and both hand the pixels to the same functions here. Keys are returned without a file prefix; the
caller adds the role (``opt_cloudy``, ``optical``, ``sar``...).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.errors import DataError

PERCENTILE_STRIDE = 4
"""Chip percentiles use every 4th pixel per axis: exact enough for range rules, 16x cheaper."""
CANONICAL_BAND_NAMES = ",".join(schema.S2_BANDS)
SAR_BAND_NAMES = ",".join(schema.S1_POLARISATIONS)


def prefixed(prefix: str, stats: dict[str, Any]) -> dict[str, Any]:
    """``stats`` with keys named after the file or band they describe (``opt_cloudy_nodata_fraction``)."""
    return {f"{prefix}_{key}": value for key, value in stats.items()}


# --- reading ------------------------------------------------------------------------------------


def read_pixels(dataset: DatasetReader, **kwargs: Any) -> np.ndarray:
    """``dataset.read`` whose failure is a DataError naming the file with GDAL's own reason."""
    try:
        return dataset.read(**kwargs)
    except RasterioError as error:
        cause = error.__cause__ if "previous exception" in str(error) and error.__cause__ else error
        reason = (str(cause).strip() or type(cause).__name__).splitlines()[0][:300]
        raise DataError(dataset.name, f"cannot read pixels, file truncated or corrupt ({reason})") from error


def decimated_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(rows, cols) of a read whose longest side is at most ``max_side``, keeping the aspect ratio."""
    scale = max(height, width) / max_side
    if scale <= 1.0:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


def read_decimated(dataset: DatasetReader, bands: int, max_side: int) -> np.ndarray:
    """The first ``bands`` bands as float32 [bands, rows, cols], longest side at most ``max_side``.

    GDAL serves the read from a COG's overviews, so memory does not grow with the file.
    """
    rows, cols = decimated_shape(dataset.height, dataset.width, max_side)
    indexes = list(range(1, min(dataset.count, bands) + 1))
    return read_pixels(
        dataset,
        indexes=indexes,
        out_shape=(len(indexes), rows, cols),
        out_dtype="float32",
        resampling=Resampling.nearest,
    )


def probe_last_block(dataset: DatasetReader) -> None:
    """Read the last full-resolution block (the end of a COG): a truncated file fails here, naming it."""
    block_rows, block_cols = dataset.block_shapes[0]
    row = ((dataset.height - 1) // block_rows) * block_rows
    col = ((dataset.width - 1) // block_cols) * block_cols
    height, width = min(block_rows, dataset.height - row), min(block_cols, dataset.width - col)
    read_pixels(dataset, window=Window(col, row, width, height))


# --- header facts -------------------------------------------------------------------------------


def band_names(dataset: DatasetReader) -> str:
    """Band descriptions joined by commas, or "" unless every band has one (absent names are allowed)."""
    descriptions = [d for d in dataset.descriptions if d]
    return ",".join(descriptions) if len(descriptions) == dataset.count else ""


def band_offsets(dataset: DatasetReader, bands: int) -> list[float]:
    """The L2A ``BOA_ADD_OFFSET`` of each band: band tag, else dataset tag, else 0."""
    default = dataset.tags().get("BOA_ADD_OFFSET", "0")
    offsets = []
    for index in range(1, bands + 1):
        value = dataset.tags(index).get("BOA_ADD_OFFSET", default)
        try:
            offsets.append(float(value))
        except ValueError:
            raise DataError(dataset.name, f"BOA_ADD_OFFSET tag of band {index} is not a number: {value!r}") from None
    return offsets


# --- statistics ---------------------------------------------------------------------------------


def _matches(values: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None:
        return np.zeros(values.shape, bool)
    return np.isnan(values) if math.isnan(nodata) else values == nodata


def _percentiles(values: np.ndarray) -> tuple[float, float, float]:
    if not values.size:
        return math.nan, math.nan, math.nan
    low, middle, high = np.percentile(values, [1, 50, 99])
    return float(low), float(middle), float(high)


def _sampled(values: np.ndarray, stride: int) -> np.ndarray:
    return values[..., ::stride, ::stride]


def optical_stats(dataset: DatasetReader, pixels: np.ndarray, stride: int = 1) -> tuple[dict[str, Any], np.ndarray]:
    """Nodata share (all bands nodata), NaN share outside nodata, reflectance percentiles of valid pixels.

    Percentiles are per band, then the lowest 1st, the median of the medians and the highest 99th are
    kept, so one bad band is not averaged away. Returns the stats and the valid-pixel mask.
    """
    nodata = dataset.nodata if dataset.nodata is not None else float(schema.S2_NODATA_DN)
    is_nodata = np.all(_matches(pixels, nodata), axis=0)
    non_finite = ~np.all(np.isfinite(pixels), axis=0)
    valid = ~is_nodata & ~non_finite
    sampled_valid = _sampled(valid, stride)
    percentiles = []
    for band, offset in zip(_sampled(pixels, stride), band_offsets(dataset, len(pixels)), strict=True):
        values = band[sampled_valid].astype(np.float32, copy=False)
        values += np.float32(offset)
        values *= np.float32(1.0 / schema.S2_DN_SCALE)
        percentiles.append(_percentiles(values))
    lows, middles, highs = zip(*percentiles, strict=True) if sampled_valid.any() else ((math.nan,),) * 3
    return {
        "band_names": band_names(dataset),
        "nodata_fraction": float(is_nodata.mean()),
        "nan_fraction": float((non_finite & ~is_nodata).mean()),
        "reflectance_p01": min(lows),
        "reflectance_p50": float(np.median(middles)),
        "reflectance_p99": max(highs),
    }, valid


def sar_stats(
    dataset: DatasetReader, pixels: np.ndarray, polarisations: Sequence[str], stride: int = 1
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """File stats (nodata share, stray non-finite share), per-polarisation dB stats, and the valid mask.

    Nodata is the declared value (NaN when none is declared) in any band; infinities, and NaN when NaN
    is not the nodata, are stray. Band stats are keyed ``<polarisation>_<stat>`` (``vv_p50_db``).
    """
    nodata = dataset.nodata if dataset.nodata is not None else math.nan
    is_nodata = np.any(_matches(pixels, nodata), axis=0)
    stray = np.any(~np.isfinite(pixels), axis=0) & ~is_nodata
    valid = ~is_nodata & ~stray
    file_stats: dict[str, Any] = {
        "band_names": band_names(dataset),
        "nodata_fraction": float(is_nodata.mean()),
        "nan_fraction": float(stray.mean()),
    }
    band_stats: dict[str, Any] = {}
    sampled_valid = _sampled(valid, stride)
    for band, polarisation in zip(_sampled(pixels, stride), polarisations, strict=False):
        values = band[sampled_valid]
        low, middle, high = _percentiles(values)
        band_stats[f"{polarisation.lower()}_negative_fraction"] = (
            float(np.mean(values < 0)) if values.size else math.nan
        )
        band_stats.update(prefixed(polarisation.lower(), {"p01_db": low, "p50_db": middle, "p99_db": high}))
    return file_stats, band_stats, valid


def code_stats(
    dataset: DatasetReader, pixels: np.ndarray, allowed: frozenset[int]
) -> tuple[dict[str, Any], dict[int, int]]:
    """Share of first-band values outside ``allowed`` (listed, with the file), and the count of each allowed one."""
    values, counts = np.unique(pixels[0], return_counts=True)
    bad = np.array([not (math.isfinite(v) and v.is_integer() and int(v) in allowed) for v in map(float, values)], bool)
    histogram = {
        int(v): int(c) for v, c, b in zip(values.tolist(), counts.tolist(), bad.tolist(), strict=True) if not b
    }
    shown = ",".join(f"{v:g}" for v in values[bad][:20].tolist()) + (" ..." if bad.sum() > 20 else "")
    return {
        "invalid_fraction": float(counts[bad].sum() / max(pixels[0].size, 1)),
        "invalid_values": f"values {shown} in {dataset.name}" if bad.any() else "",
    }, histogram


def class_shares(histogram: dict[int, int]) -> dict[str, float]:
    """Share of each class among the labelled pixels, as ``class_<id>`` columns."""
    labelled = sum(histogram.get(c.id, 0) for c in schema.CLASSES) or 1
    return {f"class_{c.id}": histogram.get(c.id, 0) / labelled for c in schema.CLASSES}
