"""The promotion gate's thresholds, apart from the registry so the CLI reads them without MLflow and torch."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    """Thresholds of the promotion gate: the one place their defaults, ranges and descriptions live.

    ``cloudlulc evaluate --gate`` options and the training pipeline's parameters are derived from these fields.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_miou_gain: float = Field(
        0.005, ge=0, le=1, description="Test mIoU gain the challenger needs over the champion."
    )
    max_bin_regression: float = Field(0.02, ge=0, le=1, description="Largest mIoU drop allowed in any cloud bin.")
    first_min_miou: float = Field(0.2, ge=0, le=1, description="Test mIoU a first champion needs.")
    first_min_oa: float = Field(0.4, ge=0, le=1, description="Test OA a first champion needs.")
