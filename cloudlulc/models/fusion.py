"""SAR-optical fusion of one encoder stage: ORM, then HIAA with its SHOI and CHOI interactions.

Our reading of the published description (see docs/model.md):

- ORM predicts where the optical image can be trusted. Clouds and shadows are a property of
  pixels, so reliability is predicted once at input resolution from the 12 bands and the SAR pair
  (:class:`InputReliability`, supervised by cloud masks where a dataset has them), pooled down to
  every stage and corrected there from the stage's features (:class:`OpticalReliability`). Each
  stage scales its optical features by it and gates the fusion towards a SAR-only projection where
  reliability is low, so under opaque cloud the fused features come from the radar alone;
- SHOI is a cross-modal recursive gated convolution (a g^n-conv over the concatenated modalities):
  each order multiplies the running features by a large-kernel spatial gate, so interactions of
  order n reach across modalities and across the 7x7 neighbourhood without attention's memory;
- CHOI recalibrates the fused channels from first- and second-order statistics (mean and standard
  deviation over space), a gated channel attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cloudlulc.models.blocks import ConvBNAct

TRUST_AT_START = 2.0
"""Initial reliability logit: sigmoid(2) = 0.88, so an untrained ORM starts by trusting the optics."""


class InputReliability(nn.Module):
    """Reliability logits [B,1,H,W] at input resolution from the bands and the SAR pair.

    A per-pixel spectral test (1x1 convolutions: clouds are bright and white, shadows dark) plus a
    3x3 depthwise context, so it costs little at full resolution and sees cloud edges sharply.
    """

    def __init__(self, in_channels: int, hidden: int = 16) -> None:
        super().__init__()
        last = nn.Conv2d(hidden, 1, 1)
        nn.init.constant_(last.bias, TRUST_AT_START)  # type: ignore[arg-type]
        self.score = nn.Sequential(
            ConvBNAct(in_channels, hidden, kernel_size=1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
            last,
        )

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return self.score(torch.cat([optical, sar], dim=1))


class OpticalReliability(nn.Module):
    """ORM at one stage: the pooled input reliability, corrected from the stage's own features.

    The correction starts at zero, so the stage begins with the input-resolution estimate.
    """

    def __init__(self, optical_channels: int, sar_channels: int) -> None:
        super().__init__()
        hidden = max(optical_channels // 2, 8)
        last = nn.Conv2d(hidden, 1, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)  # type: ignore[arg-type]
        self.correction = nn.Sequential(ConvBNAct(optical_channels + sar_channels, hidden), last)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor, input_logits: torch.Tensor) -> torch.Tensor:
        """Reliability [B,1,h,w] in (0, 1) at the stage's resolution."""
        size = (optical.shape[-2], optical.shape[-1])
        # float32 whatever the autocast: in bf16, 1 - 1e-4 rounds to 1 and logit(1) is infinite.
        pooled = F.adaptive_avg_pool2d(torch.sigmoid(input_logits.float()), size).clamp(1e-4, 1 - 1e-4)
        correction = self.correction(torch.cat([optical, sar], dim=1)).float()
        return torch.sigmoid(torch.logit(pooled) + correction)


class SpatialHighOrder(nn.Module):
    """SHOI: recursive gated convolution of order n over both modalities."""

    def __init__(self, in_channels: int, channels: int, order: int) -> None:
        super().__init__()
        self.dims = [channels // 2**i for i in range(order)][::-1]  # e.g. [C/4, C/2, C]
        if min(self.dims) < 1:
            raise ValueError(f"{channels} channels are too few for SHOI order {order}")
        self.project_in = nn.Conv2d(in_channels, self.dims[0] + sum(self.dims), 1)
        self.spatial_gates = nn.Conv2d(sum(self.dims), sum(self.dims), 7, padding=3, groups=sum(self.dims))
        self.steps = nn.ModuleList(nn.Conv2d(a, b, 1) for a, b in zip(self.dims[:-1], self.dims[1:], strict=True))
        self.project_out = nn.Conv2d(channels, channels, 1)

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        start, gates = torch.split(
            self.project_in(torch.cat([optical, sar], dim=1)), [self.dims[0], sum(self.dims)], dim=1
        )
        gate_list = torch.split(self.spatial_gates(gates), self.dims, dim=1)
        x = start * gate_list[0]
        for step, gate in zip(self.steps, gate_list[1:], strict=True):
            x = step(x) * gate
        return self.project_out(x)


class ChannelHighOrder(nn.Module):
    """CHOI: channel gates from the mean and standard deviation of each channel over space."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.gate = nn.Sequential(nn.Linear(2 * channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3))
        std = (x.var(dim=(2, 3), unbiased=False) + 1e-5).sqrt()
        weights = torch.sigmoid(self.gate(torch.cat([mean, std], dim=1)))
        return x * weights[:, :, None, None]


class StageFusion(nn.Module):
    """One stage: optional ORM, then HIAA (a 1x1 mix, plus SHOI and CHOI when enabled).

    With ORM on, the mix of both modalities is weighted by the reliability and the rest comes from
    a SAR-only projection (SAR-guided gating). With every module off this is the plain dual-stream
    fusion baseline (concatenate, 1x1 conv).
    """

    def __init__(self, channels: int, *, use_orm: bool, use_shoi: bool, use_choi: bool, shoi_order: int) -> None:
        super().__init__()
        self.orm = OpticalReliability(channels, channels) if use_orm else None
        self.sar_mix = ConvBNAct(channels, channels, kernel_size=1) if use_orm else None
        self.mix = ConvBNAct(2 * channels, channels, kernel_size=1)
        self.shoi = SpatialHighOrder(2 * channels, channels, shoi_order) if use_shoi else None
        self.choi = ChannelHighOrder(channels) if use_choi else None

    def forward(
        self, optical: torch.Tensor, sar: torch.Tensor, input_reliability: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fused features and this stage's reliability (None without ORM)."""
        reliability = None
        if self.orm is not None and self.sar_mix is not None:
            if input_reliability is None:
                raise ValueError("ORM needs the input-resolution reliability logits")
            reliability = self.orm(optical, sar, input_reliability)
            optical = optical * reliability
            fused = reliability * self.mix(torch.cat([optical, sar], dim=1)) + (1 - reliability) * self.sar_mix(sar)
        else:
            fused = self.mix(torch.cat([optical, sar], dim=1))
        if self.shoi is not None:
            fused = fused + self.shoi(optical, sar)
        if self.choi is not None:
            fused = self.choi(fused)
        return fused, reliability
