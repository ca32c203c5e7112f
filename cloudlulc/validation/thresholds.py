"""Tunable limits of the rules, one set per layout, kept apart from the rules that read them."""

from __future__ import annotations

from dataclasses import dataclass

from cloudlulc.errors import DataError


@dataclass(frozen=True)
class Thresholds:
    """Tunable limits of the chip rules (our defaults)."""

    max_nodata_fraction: float = 0.05
    """Largest share of pixels without valid optical or SAR data in one sample."""
    min_cloud_cover_stdev: float = 0.01
    """Below this the cloud-cover distribution is taken as absent (all samples alike)."""


@dataclass(frozen=True)
class SceneThresholds:
    """Tunable limits of the scene-stack rules (our defaults)."""

    max_nodata_fraction: float = 0.05
    """Largest share of nodata pixels in optical.tif, in sar.tif, and without both (the chip validation's
    default, and the share of valid pixels ingest requires of a chip). An AOI that the acquisitions only
    partly cover needs a larger value (``--max-nodata``); a wholly empty file fails at any value."""
    reflectance_min: float = -0.05
    """Lowest allowed 1st percentile of reflectance, ``(DN + BOA_ADD_OFFSET) / 10000``, on valid pixels
    (lowest over the bands). Catches an offset applied twice or declared wrongly."""
    reflectance_max: float = 1.5
    """Highest allowed 99th percentile of reflectance (highest over the bands); clouds and snow stay below."""
    sar_db_min: float = -50.0
    """Lowest allowed 1st percentile of sigma0 in dB, per polarisation (the noise floor is near -25 dB)."""
    sar_db_max: float = 20.0
    """Highest allowed 99th percentile of sigma0 in dB, per polarisation."""
    stats_max_side: int = 1024
    """Longest side, in pixels, of the decimated read statistics come from (bounds memory)."""
    verify_checksums: bool = True
    """Stream every file through SHA-256 and compare with the manifest."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_nodata_fraction <= 1.0:
            raise DataError("max nodata fraction", f"must be in [0, 1], got {self.max_nodata_fraction}")
        if self.stats_max_side < 16:
            raise DataError("stats_max_side", f"must be at least 16 pixels, got {self.stats_max_side}")
