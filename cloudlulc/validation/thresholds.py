"""Tunable limits of the rules, one set per layout, kept apart from the rules that read them.

They are the validation stage's options: ``cloudlulc validate --max-nodata`` and the pipelines'
``max_nodata`` parameter are derived from these fields (``cloudlulc.options``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cloudlulc.options import field_like


class Thresholds(BaseModel):
    """Tunable limits of the chip rules (our defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_nodata_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Largest share of nodata pixels allowed in a sample (or in a scene stack's optical and SAR files).",
    )
    min_cloud_cover_stdev: float = Field(
        0.01, ge=0, description="Below this the cloud-cover distribution is taken as absent (all samples alike)."
    )


class SceneThresholds(BaseModel):
    """Tunable limits of the scene-stack rules (our defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_nodata_fraction: float = field_like(
        Thresholds,
        "max_nodata_fraction",
        description=(
            "Largest share of nodata pixels in optical.tif, in sar.tif, and without both (the chip validation's "
            "default, and the share of valid pixels ingest requires of a chip). An AOI that the acquisitions only "
            "partly cover needs a larger value; a wholly empty file fails at any value."
        ),
    )
    reflectance_min: float = Field(
        -0.05,
        description="Lowest allowed 1st percentile of reflectance, (DN + BOA_ADD_OFFSET) / 10000, on valid pixels "
        "(lowest over the bands). Catches an offset applied twice or declared wrongly.",
    )
    reflectance_max: float = Field(
        1.5,
        description="Highest allowed 99th percentile of reflectance (highest over the bands); clouds and snow stay "
        "below.",
    )
    sar_db_min: float = Field(
        -50.0,
        description="Lowest allowed 1st percentile of sigma0 in dB, per polarisation (the noise floor is near -25 dB).",
    )
    sar_db_max: float = Field(20.0, description="Highest allowed 99th percentile of sigma0 in dB, per polarisation.")
    stats_max_side: int = Field(
        1024, ge=16, description="Longest side, in pixels, of the decimated read statistics come from (bounds memory)."
    )
    verify_checksums: bool = Field(True, description="Stream every file through SHA-256 and compare with the manifest.")
