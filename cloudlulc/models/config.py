"""Model configuration: which architecture, how wide, and which CloudLULC-Net modules are on.

Configs are validated models that reject unknown keys, so a typo in a YAML file or a CLI override is
an error naming the key, not a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudlulc import schema

Architecture = Literal[
    "cloudlulc_net", "optical_only", "sar_only", "early_fusion", "dual_stream", "reconstruction_first"
]
ARCHITECTURES: tuple[str, ...] = Architecture.__args__  # type: ignore[attr-defined]
SizeName = Literal["tiny", "base"]


class ModelConfig(BaseModel):
    """Everything that decides a model's structure (and so its checkpoint layout)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Architecture = Field("cloudlulc_net", description="CloudLULC-Net or one of the baselines.")
    widths: tuple[int, int, int, int] = Field((16, 32, 64, 128), description="Channels of encoder stages 1-4.")
    depths: tuple[int, int, int, int] = Field((1, 1, 1, 1), description="Residual blocks per encoder stage.")
    decoder_width: int = Field(32, ge=8, description="Channels of the decoder.")
    embedding_dim: int = Field(32, ge=4, description="Size of the embedding the anchor loss regularises.")
    usmt_dim: int = Field(64, ge=8, description="Token width of the semantic mapping transformer.")
    usmt_layers: int = Field(1, ge=1, description="Transformer layers of USMT.")
    usmt_heads: int = Field(2, ge=1, description="Attention heads of USMT.")
    shoi_order: int = Field(3, ge=2, le=5, description="Order of the recursive gated spatial interaction.")
    # Defaults follow the seed-paired table of docs/benchmarks.md (H200, tiny, 128 px, 1,000 steps):
    # a module stays on only where removing it cost more than the seed noise (CloudLULC-Net's mIoU
    # spread between seeds: 0.9 points).
    use_orm: bool = Field(
        True,
        description=(
            "Optical reliability modulation (input-resolution reliability, SAR-guided gating). On: removing it cost "
            "1.1 mIoU; its map finds opaque cloud (IoU 0.93-0.95) and feeds the reliability band."
        ),
    )
    use_shoi: bool = Field(
        False,
        description=(
            "Spatial high-order SAR-optical interaction in HIAA. Off: removing it cost 0.6 mIoU, within seed noise, "
            "though it changes the fused features (norm 0.1-0.55 of the mix's)."
        ),
    )
    use_choi: bool = Field(
        False,
        description=(
            "Channel high-order interaction in HIAA. Off: removing it gained 0.1 mIoU; its gates barely vary between "
            "images (spread 0.03-0.14)."
        ),
    )
    use_usmt: bool = Field(
        False,
        description=(
            "Semantic mapping transformer with per-class tokens. Off: removing it cost 0.3 mIoU, within seed noise, "
            "though its semantic map agrees with the labels (OA 87-88 %)."
        ),
    )
    detail: bool = Field(
        True,
        description=(
            "Full-resolution detail branch in the decoder (every architecture). On: removing it cost 7.4 mIoU "
            "(8 in the clearest bin) for +2.5 GFLOPs per 512 px patch at tiny."
        ),
    )
    num_classes: int = Field(schema.NUM_CLASSES, ge=2, description="Output classes.")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.usmt_dim % self.usmt_heads:
            raise ValueError(f"usmt_dim ({self.usmt_dim}) must be divisible by usmt_heads ({self.usmt_heads})")
        if self.architecture == "dual_stream" and (self.use_orm or self.use_shoi or self.use_choi or self.use_usmt):
            raise ValueError("dual_stream is CloudLULC-Net without ORM, SHOI, CHOI and USMT: switch them off")
        return self


SIZES: dict[str, dict[str, object]] = {
    "tiny": {
        "widths": (16, 32, 64, 128),
        "depths": (1, 1, 1, 1),
        "decoder_width": 32,
        "embedding_dim": 32,
        "usmt_dim": 64,
        "usmt_layers": 1,
        "usmt_heads": 2,
    },
    "base": {
        "widths": (64, 128, 256, 512),
        "depths": (2, 2, 4, 2),
        "decoder_width": 128,
        "embedding_dim": 64,
        "usmt_dim": 256,
        "usmt_layers": 4,
        "usmt_heads": 8,
    },
}
"""Named sizes: ``tiny`` trains on a CPU in the demo and tests, ``base`` is the real model for GPUs."""

FUSION_OFF = {"use_orm": False, "use_shoi": False, "use_choi": False, "use_usmt": False}
ALL_MODULES = {"use_orm": True, "use_shoi": True, "use_choi": True, "use_usmt": True}
"""CloudLULC-Net with every published module on (the full network of the paper's description)."""


def model_config(architecture: str = "cloudlulc_net", size: str = "tiny", **overrides: object) -> ModelConfig:
    """A validated config for a named architecture and size; unknown names list the valid ones."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    values: dict[str, object] = {**SIZES[size], "architecture": architecture}
    if architecture != "cloudlulc_net":
        values.update(FUSION_OFF)  # baselines have none of CloudLULC-Net's modules
    values.update(overrides)
    return ModelConfig.model_validate(values)
