"""Building blocks shared by every architecture: convolutions, residual blocks, a 4-stage encoder."""

from __future__ import annotations

import torch
from torch import nn


class ConvBNAct(nn.Sequential):
    """Convolution, batch norm, GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBNAct(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class Encoder(nn.Module):
    """Hierarchical encoder: four stages at strides 4, 8, 16 and 32."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], depths: tuple[int, ...]) -> None:
        super().__init__()
        stem = nn.Sequential(
            ConvBNAct(in_channels, widths[0] // 2, stride=2), ConvBNAct(widths[0] // 2, widths[0], stride=2)
        )
        stages = [nn.Sequential(stem, *[ResidualBlock(widths[0]) for _ in range(depths[0])])]
        for previous, width, depth in zip(widths[:-1], widths[1:], depths[1:], strict=True):
            stages.append(
                nn.Sequential(ConvBNAct(previous, width, stride=2), *[ResidualBlock(width) for _ in range(depth)])
            )
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features
