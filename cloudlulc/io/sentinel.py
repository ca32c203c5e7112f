"""Sentinel-2 and Sentinel-1 pixel values as model inputs: the one scaling training and mapping share.

The training dataset and the regional mapping both call these functions, so a model never sees inputs
scaled one way in training and another way in production. Kept free of torch so that a mapping run
with another runtime (ONNX Runtime, a Triton client) does not import it.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import read_window

log = logging.getLogger(__name__)


def boa_add_offset(dataset: DatasetReader) -> float:
    """The L2A offset of an optical file: band tag, then dataset tag ``BOA_ADD_OFFSET``, else 0."""
    value = dataset.tags(1).get("BOA_ADD_OFFSET", dataset.tags().get("BOA_ADD_OFFSET", "0"))
    try:
        return float(value)
    except ValueError:
        raise DataError(dataset.name, f"BOA_ADD_OFFSET tag is not a number: {value!r}") from None


OpticalUnits = Literal["dn", "reflectance"]
REFLECTANCE_MAX = 2.0
"""Largest value a float optical file may hold to read as reflectance (bright clouds and snow exceed 1)."""
S2_DN_OFFSET_LIMIT = 1000
"""Largest magnitude of an L2A offset (baseline 04.00 adds -1000), bounding negative float DN."""
_STATISTICS_STEP = 4
"""Every 4th pixel per axis is enough to tell units apart (the decimation ``validate`` uses)."""


def optical_units(dataset: DatasetReader, values: np.ndarray) -> OpticalUnits:
    """What a Sentinel-2 file's values are: L2A digital numbers, or (float files only) reflectance in [0, 1].

    Integer files are digital numbers by contract. A float file is reflectance when its valid values
    lie within [-0.5, 2], digital numbers when they reach beyond 100 and stay within uint16; anything
    else (e.g. percent reflectance) is refused rather than guessed.

    Raises:
        DataError: naming the file, when the values fit neither convention.
    """
    if not np.issubdtype(np.dtype(dataset.dtypes[0]), np.floating):
        return "dn"
    sample = values[..., ::_STATISTICS_STEP, ::_STATISTICS_STEP]
    sample = sample[np.isfinite(sample) & (sample != 0)]
    if sample.size == 0:
        return "dn"  # nodata only: nothing to convert either way
    low, high = float(sample.min()), float(sample.max())
    if high <= REFLECTANCE_MAX and low >= -0.5:
        return "reflectance"
    if high > 100 and low >= -2 * S2_DN_OFFSET_LIMIT and high <= np.iinfo(np.uint16).max:
        return "dn"
    raise DataError(
        dataset.name,
        f"optical values span {low:.4g} to {high:.4g}: neither L2A digital numbers (reflectance x 10000, "
        "up to 65535) nor reflectance in [0, 1]; convert the file to one of them",
    )


def dn_to_reflectance(dataset: DatasetReader, dn: np.ndarray, units: OpticalUnits | None = None) -> np.ndarray:
    """Values read from ``dataset`` (float32, scaled in place) to model-input reflectance.

    Args:
        dataset: the optical file the values come from; its ``BOA_ADD_OFFSET`` decides the offset.
        dn: float32 values [bands, rows, cols] as read; the buffer is reused for the result.
        units: what the values are; None decides from the values (:func:`optical_units`).
    """
    units = units or optical_units(dataset, dn)
    if units == "reflectance":
        note_once(dataset.name, "float values in [0, 1] read as surface reflectance, not digital numbers")
        np.nan_to_num(dn, copy=False, nan=0.0)
        return np.clip(dn, 0.0, 1.0, out=dn)
    return schema.s2_dn_to_reflectance(dn, boa_add_offset(dataset), in_place=True)


def read_reflectance(dataset: DatasetReader, window: Window | None = None) -> np.ndarray:
    """An optical window as model-input reflectance; GDAL converts to float32 during the read."""
    return dn_to_reflectance(dataset, read_window(dataset, window, out_dtype="float32"))


_NOTED: set[tuple[str, str]] = set()


def note_once(source: str, message: str) -> None:
    """Log a conversion the reader made on its own, once per file and message (not once per window)."""
    if (source, message) not in _NOTED:
        _NOTED.add((source, message))
        log.warning("%s: %s", source, message)


def scale_sar(db: np.ndarray) -> np.ndarray:
    """Sigma0 in dB [2, ...] (VV, VH) to model input in [0, 1]; NaN or inf (nodata) becomes 0."""
    if db.shape[0] != len(schema.S1_POLARISATIONS):
        raise ValueError(f"SAR input must hold {schema.S1_POLARISATIONS} on its first axis, got shape {db.shape}")
    scaled = np.empty(db.shape, np.float32)
    for index, polarisation in enumerate(schema.S1_POLARISATIONS):
        scaled[index] = schema.scale_sar_db(db[index], polarisation)
    return scaled


SarUnitsFound = Literal["db", "linear"]
DB_UNITS = frozenset({"db", "decibel", "decibels"})
LINEAR_UNITS = frozenset({"linear", "power", "linear power", "intensity"})


def unit_of_label(label: object) -> SarUnitsFound | None:
    """What a unit label (STAC ``unit``, a band's unit) says: dB, linear power, or nothing known."""
    text = str(label or "").strip().lower()
    return "db" if text in DB_UNITS else "linear" if text in LINEAR_UNITS else None


LINEAR_MEDIAN_MAX = 2.0
"""Median sigma0 above which positive values are neither linear power (typically 0.001-0.5) nor dB."""


def sar_units_from_values(values: np.ndarray) -> SarUnitsFound | None:
    """What sigma0 values look like: dB (negative values present), linear power (positive, small), or None.

    Linear power cannot be negative, so more than 1 % negative values means dB; all positive with a
    median under 2 is linear power (dB that high everywhere is not backscatter of land). None when
    nothing is valid or the values fit neither (e.g. uncalibrated amplitude counts).
    """
    sample = values[..., ::_STATISTICS_STEP, ::_STATISTICS_STEP] if values.ndim >= 2 else values
    valid = sample[np.isfinite(sample) & (sample != 0)]
    if valid.size == 0:
        return None
    if float(np.mean(valid < 0)) > 0.01:
        return "db"
    return "linear" if float(np.median(valid)) <= LINEAR_MEDIAN_MAX else None


def check_sar_units(declared: SarUnitsFound | None, values: np.ndarray, source: str) -> SarUnitsFound:
    """The units to read a SAR file in: the declared ones, verified against the values, or the values' own.

    Raises:
        DataError: naming ``source`` when the declaration contradicts the values, or when neither
            decides (values that are not calibrated backscatter).
    """
    found = sar_units_from_values(values)
    names = {"db": "dB", "linear": "linear power"}
    if declared is not None and found is not None and declared != found:
        sample = values[np.isfinite(values)]
        raise DataError(
            source,
            f"declares sigma0 in {names[declared]} but its values (median "
            f"{float(np.median(sample)):.4g}) are {names[found]}; fix the unit tag, or convert "
            "(dB = 10 * log10(power))",
        )
    if declared is not None:
        return declared
    if found is None:
        raise DataError(
            source, "SAR values are neither sigma0 in dB nor linear power: calibrate the backscatter (sigma0) first"
        )
    return found


def sar_units_declared(dataset: DatasetReader) -> SarUnitsFound | None:
    """The unit a SAR file declares: its bands' units when they agree, else a ``UNITS`` tag, else None."""
    found = {unit_of_label(unit) for unit in dataset.units} - {None}
    if len(found) == 1:
        return found.pop()
    return unit_of_label(dataset.tags().get("UNITS"))
