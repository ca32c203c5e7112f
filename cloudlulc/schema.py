"""The data contract in code: bands, classes and value conventions of DATA.md.

Everything that reads or writes Sentinel values goes through these constants and functions, so a
convention (band order, the L2A offset, dB clipping) is decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

# --- Sentinel-2 L2A -----------------------------------------------------------------------------

S2_BANDS: Final[tuple[str, ...]] = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
"""The 12 optical bands of CloudLULC-Set, in file order (no B10)."""

S2_BAND_RESOLUTION_M: Final[dict[str, int]] = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B11": 20,
    "B12": 20,
}
"""Native ground sampling distance of each band; ingest resamples all of them to 10 m."""

S2_WAVELENGTH_NM: Final[dict[str, int]] = {
    "B01": 443,
    "B02": 490,
    "B03": 560,
    "B04": 665,
    "B05": 705,
    "B06": 740,
    "B07": 783,
    "B08": 842,
    "B8A": 865,
    "B09": 945,
    "B11": 1610,
    "B12": 2190,
}

TRUE_COLOUR: Final[tuple[int, int, int]] = (3, 2, 1)
"""Indices of B04, B03, B02 in :data:`S2_BANDS` (red, green, blue)."""

S2_DN_SCALE: Final[float] = 10_000.0
S2_NODATA_DN: Final[int] = 0
S2_BASELINE_OFFSET_DN: Final[int] = -1000
"""BOA_ADD_OFFSET of processing baseline >= 04.00: BOA = (DN - 1000) / 10000."""

# --- Sentinel-1 GRD -----------------------------------------------------------------------------

S1_POLARISATIONS: Final[tuple[str, ...]] = ("VV", "VH")
"""SAR channel order of the model input."""

S1_DB_RANGE: Final[dict[str, tuple[float, float]]] = {"VV": (-25.0, 0.0), "VH": (-32.5, 0.0)}
"""Clip ranges in dB before rescaling to [0, 1]."""

# --- Classes ------------------------------------------------------------------------------------

IGNORE_INDEX: Final[int] = 255
"""Label value for "no label"; ignored by losses and metrics."""


@dataclass(frozen=True)
class LulcClass:
    """One land-cover class: its fixed id, name and display colour."""

    id: int
    name: str
    colour: tuple[int, int, int]


CLASSES: Final[tuple[LulcClass, ...]] = (
    LulcClass(0, "Water", (25, 95, 205)),
    LulcClass(1, "Forest", (20, 110, 40)),
    LulcClass(2, "Grassland", (150, 210, 90)),
    LulcClass(3, "Barren land", (200, 175, 130)),
    LulcClass(4, "Built-up land", (215, 40, 40)),
    LulcClass(5, "Cropland", (240, 200, 40)),
)
"""The 6 classes; ids are fixed forever once released (DATA.md)."""

NUM_CLASSES: Final[int] = len(CLASSES)
CLASS_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in CLASSES)
VALID_LABEL_VALUES: Final[frozenset[int]] = frozenset([c.id for c in CLASSES] + [IGNORE_INDEX])

SIZE_MULTIPLE: Final[int] = 32
"""Height and width a network takes must be multiples of this: the encoder halves the size five times.
Training crops, map tiles, export shapes and evaluation padding all follow it."""

# Cloud mask written beside each sample (our choice of codes).
CLOUD_CLEAR: Final[int] = 0
CLOUD_THIN: Final[int] = 1
CLOUD_OPAQUE: Final[int] = 2
CLOUD_SHADOW: Final[int] = 3
CLOUD_MASK_NAMES: Final[dict[int, str]] = {0: "clear", 1: "thin cloud", 2: "opaque cloud", 3: "shadow"}

MAX_PATCH_SIDE: Final[int] = 4096
"""Largest side of a sample read whole (our choice: ingest's largest chip); larger ones are refused from the header."""

CLOUD_BINS: Final[tuple[tuple[float, float], ...]] = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 0.9), (0.9, 1.0))
"""Cloud-cover bins of the evaluation protocol, as fractions (0-10, 10-30, 30-60, 60-90, 90-100 %)."""


def colour_table() -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table for label rasters: class colours, 255 transparent black."""
    table = {c.id: (*c.colour, 255) for c in CLASSES}
    table[IGNORE_INDEX] = (0, 0, 0, 0)
    return table


def cloud_bin_label(cover: float) -> str:
    """Name of the cloud-cover bin holding ``cover`` (a fraction in [0, 1]), e.g. ``"30-60%"``."""
    for low, high in CLOUD_BINS:
        if cover < high or high == 1.0:
            return f"{round(low * 100)}-{round(high * 100)}%"
    raise AssertionError("unreachable: the last bin is closed")


# --- Value conventions --------------------------------------------------------------------------


def s2_dn_to_reflectance(dn: np.ndarray, boa_add_offset: float = 0.0, *, in_place: bool = False) -> np.ndarray:
    """Convert L2A digital numbers to model input: reflectance clipped to [0, 1], float32.

    Args:
        dn: digital numbers (uint16, or float32 read as such), any shape; 0 is nodata and maps to 0.
        boa_add_offset: the product's ``BOA_ADD_OFFSET`` (0 before baseline 04.00, -1000 after).
        in_place: scale a float32 ``dn`` in its own buffer (readers use it to skip a copy).
    """
    reflectance = dn if in_place and dn.dtype == np.float32 else dn.astype(np.float32)
    reflectance += np.float32(boa_add_offset)
    reflectance *= np.float32(1.0 / S2_DN_SCALE)
    np.clip(reflectance, 0.0, 1.0, out=reflectance)
    if boa_add_offset > 0:  # otherwise DN 0 already lands on 0 through the clip
        reflectance[dn == S2_NODATA_DN] = 0.0
    return reflectance


def reflectance_to_s2_dn(reflectance: np.ndarray, boa_add_offset: float = 0.0) -> np.ndarray:
    """Inverse of :func:`s2_dn_to_reflectance` for writers; valid pixels never become nodata (0)."""
    dn = np.rint(reflectance * S2_DN_SCALE - boa_add_offset)
    return np.clip(dn, 1, np.iinfo(np.uint16).max).astype(np.uint16)


def linear_to_db(power: np.ndarray) -> np.ndarray:
    """Backscatter power (linear) to dB; zero or negative power becomes NaN (nodata)."""
    power = np.asarray(power, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(power)
    db[~(power > 0)] = np.nan
    return db.astype(np.float32)


def db_to_linear(db: np.ndarray) -> np.ndarray:
    """Backscatter dB to linear power (for resampling, which must happen in linear power)."""
    return np.power(np.float32(10.0), np.asarray(db, dtype=np.float32) / np.float32(10.0))


def scale_sar_db(db: np.ndarray, polarisation: str) -> np.ndarray:
    """Clip sigma0 dB to the polarisation's range and rescale to [0, 1]; NaN/inf (nodata) become 0."""
    low, high = S1_DB_RANGE[polarisation]
    scaled = np.array(db, dtype=np.float32)  # a copy: the caller's array stays untouched
    scaled -= np.float32(low)
    scaled *= np.float32(1.0 / (high - low))
    np.nan_to_num(scaled, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    return scaled
