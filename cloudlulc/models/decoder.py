"""Decoder with skip connections and the classification head shared by every architecture."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cloudlulc.models.blocks import ConvBNAct


class SkipDecoder(nn.Module):
    """Top-down decoder: upsample, add the lateral skip, convolve; from stride 32 to stride 4.

    Returns the stride-4 embedding (what the anchor loss regularises) and full-resolution logits
    from a linear classifier on that embedding. Inputs must be multiples of 32 pixels.
    """

    def __init__(self, widths: tuple[int, ...], width: int, embedding_dim: int, out_channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(w, width, 1) for w in widths)
        self.refine = nn.ModuleList(ConvBNAct(width, width) for _ in widths[:-1])
        self.embed = nn.Sequential(ConvBNAct(width, width), nn.Conv2d(width, embedding_dim, 1))
        self.classify = nn.Conv2d(embedding_dim, out_channels, 1)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.lateral[-1](features[-1])
        for index in range(len(features) - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = self.refine[index](x + self.lateral[index](features[index]))
        embedding = self.embed(x)
        logits = F.interpolate(self.classify(embedding), scale_factor=4.0, mode="bilinear", align_corners=False)
        return embedding, logits
