"""Sentinel-2 and Sentinel-1 pixel values as model inputs: the one scaling training and mapping share.

The training dataset and the regional mapping both call these functions, so a model never sees inputs
scaled one way in training and another way in production. Kept free of torch so that a mapping run
with another runtime (ONNX Runtime, a Triton client) does not import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import read_window


def boa_add_offset(dataset: DatasetReader) -> float:
    """The L2A offset of an optical file: band tag, then dataset tag ``BOA_ADD_OFFSET``, else 0."""
    value = dataset.tags(1).get("BOA_ADD_OFFSET", dataset.tags().get("BOA_ADD_OFFSET", "0"))
    try:
        return float(value)
    except ValueError:
        raise DataError(dataset.name, f"BOA_ADD_OFFSET tag is not a number: {value!r}") from None


def dn_to_reflectance(dataset: DatasetReader, dn: np.ndarray) -> np.ndarray:
    """Digital numbers read from ``dataset`` (float32, scaled in place) to model-input reflectance.

    Args:
        dataset: the optical file the values come from; its ``BOA_ADD_OFFSET`` decides the offset.
        dn: float32 digital numbers [bands, rows, cols]; the buffer is reused for the result.
    """
    return schema.s2_dn_to_reflectance(dn, boa_add_offset(dataset), in_place=True)


def read_reflectance(dataset: DatasetReader, window: Window | None = None) -> np.ndarray:
    """An optical window as model-input reflectance; GDAL converts to float32 during the read."""
    return dn_to_reflectance(dataset, read_window(dataset, window, out_dtype="float32"))


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


def infer_sar_units(labels: Iterable[object], sample: Callable[[], np.ndarray], source: str) -> SarUnitsFound:
    """How a SAR file stores sigma0: the first label that names a unit, else dB when values are mostly negative.

    ``sample`` returns a decimated read with NaN and nodata already removed (called only when no label
    decides); an empty sample is a DataError naming ``source``.
    """
    for label in labels:
        if (found := unit_of_label(label)) is not None:
            return found
    values = sample()
    if values.size == 0:
        raise DataError(source, "holds no valid SAR value (all NaN, infinite or nodata)")
    return "db" if float(np.mean(values < 0)) >= 0.5 else "linear"
