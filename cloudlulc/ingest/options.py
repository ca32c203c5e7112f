"""The ingest stage's chip options, shared by ``cloudlulc ingest run``, the training pipeline and the library.

Chip size and the share of valid pixels a chip needs are written here once with their ranges and
descriptions; the CLI flags and the pipeline parameters are derived from these fields.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChipOptions(BaseModel):
    """How a pair is cut into CloudLULC-Set chips."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chip_size: int = Field(512, ge=64, le=4096, description="Chip side in pixels.")
    min_valid_fraction: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Smallest share of pixels with both sensors' data for a chip to be kept (validation allows 5 %).",
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="Train, val and test shares of chip locations (non-negative, summing to 1)."
    )

    @field_validator("split_fractions")
    @classmethod
    def _shares(cls, fractions: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
            raise ValueError(f"need three non-negative shares summing to 1, got {fractions}")
        return fractions
