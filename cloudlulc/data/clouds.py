"""Cloud cover of a sample from whatever the dataset has: a cloud mask, a clear twin, or the cloudy image alone.

The evaluation protocol scores per cloud-cover bin, so every dataset needs a cover per sample, not only
the sets whose ``metadata.csv`` our generator or ingest wrote. Sources, best first:

1. ``CloudMask/<name>.tif``: the share of thin and opaque cloud codes (codes are checked);
2. ``Opt_S2_clear``: the share of pixels whose mean |cloudy - clear| reflectance exceeds 0.05;
3. a spectral test on the cloudy image alone (bright, spectrally flat blue, not snow).
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np

from cloudlulc import schema
from cloudlulc.data.layout import DatasetLayout, SampleRecord
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import open_raster, read_raster
from cloudlulc.io.sentinel import read_reflectance

CloudSource = Literal["metadata.csv", "CloudMask", "clear twin", "cloud test"]

CLOUD_CODES: Final[frozenset[int]] = frozenset(schema.CLOUD_MASK_NAMES)
"""The codes a cloud mask may hold: 0 clear, 1 thin cloud, 2 opaque cloud, 3 shadow (docs/data.md)."""
CLOUD_DIFF_THRESHOLD: Final = 0.05
"""Mean |cloudy - clear| reflectance above which a pixel counts as cloudy when no mask exists (our choice)."""
BLUE_CLOUD_MIN: Final = 0.12
"""Cloud test: B02 surface reflectance above which a spectrally flat pixel is cloud or haze (our choice)."""
BLUE_OPAQUE_MIN: Final = 0.3
"""Cloud test: B02 above this is cloud whatever the spectrum (bright land stays below it in blue)."""
FLATNESS_MIN: Final = 0.8
"""Cloud test: clouds are white, so B02 >= 0.8 x B04; bare soil and built-up land are redder."""
SNOW_NDSI_MIN: Final = 0.4
"""Cloud test: NDSI (B03 - B11) / (B03 + B11) above this is snow, not cloud."""


def check_cloud_codes(mask: np.ndarray, source: str) -> np.ndarray:
    """Return ``mask`` when every value is a known cloud code; a DataError naming ``source`` otherwise."""
    found = set(np.unique(mask).tolist())
    unknown = sorted(found - CLOUD_CODES)
    if unknown:
        raise DataError(
            source,
            f"cloud mask values {unknown[:10]} are not cloud codes {sorted(CLOUD_CODES)} "
            "(0 clear, 1 thin cloud, 2 opaque cloud, 3 shadow)",
        )
    return mask


def cloud_test(reflectance: np.ndarray) -> np.ndarray:
    """Pixels [H,W] that look like cloud or haze in 12-band surface reflectance [12,H,W].

    Clouds are bright and white in the visible; bare soil and cities are bright but redder; snow is
    bright but dark in SWIR. A crude test, used only when a sample has neither a mask nor a clear twin.
    """
    blue, green, red, swir = (reflectance[schema.S2_BANDS.index(b)] for b in ("B02", "B03", "B04", "B11"))
    ndsi = (green - swir) / np.maximum(green + swir, 1e-6)
    white = (blue > BLUE_CLOUD_MIN) & (blue >= FLATNESS_MIN * red)
    return (white | (blue > BLUE_OPAQUE_MIN)) & (ndsi < SNOW_NDSI_MIN)


def sample_cloud_cover(layout: DatasetLayout, record: SampleRecord) -> tuple[float, CloudSource]:
    """Cloud cover in [0, 1] of one sample and where it came from (mask, clear twin, or the cloud test)."""
    if record.cloud_mask:
        source = layout.uri(record.cloud_mask)
        mask = check_cloud_codes(read_raster(source)[0], source)
        return float(np.isin(mask, (schema.CLOUD_THIN, schema.CLOUD_OPAQUE)).mean()), "CloudMask"
    with open_raster(layout.uri(record.opt_cloudy)) as cloudy_file:
        cloudy = read_reflectance(cloudy_file)
    if record.opt_clear:
        with open_raster(layout.uri(record.opt_clear)) as clear_file:
            clear = read_reflectance(clear_file)
        if clear.shape != cloudy.shape:
            raise DataError(
                layout.uri(record.opt_clear), f"shape {clear.shape} differs from Opt_S2_cloudy {cloudy.shape}"
            )
        difference = np.abs(cloudy - clear).mean(axis=0)
        return float(np.mean(difference > CLOUD_DIFF_THRESHOLD)), "clear twin"
    return float(cloud_test(cloudy).mean()), "cloud test"
