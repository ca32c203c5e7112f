"""The INT8 export's options: calibration size and its gate, the one place their defaults and ranges live.

Kept apart from the exporters so the CLI builds its flags from them without importing torch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Int8Options(BaseModel):
    """Calibration and gate of ``cloudlulc export int8``; the gate applies in every cloud bin of the test split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calibration_count: int = Field(16, ge=1, description="Train-split samples that calibrate the activations.")
    min_agreement: float = Field(
        0.98, ge=0, le=1, description="Least share of pixels keeping the FP32 class, in every cloud bin."
    )
    max_miou_drop: float = Field(0.01, ge=0, le=1, description="Most mIoU lost against the labels, in every cloud bin.")
