"""Decoder with skip connections and the classification head shared by every architecture."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cloudlulc.models.blocks import ConvBNAct


class DetailRefinement(nn.Module):
    """A light full-resolution branch: detail features at strides 1 and 2 from the network's own input.

    The encoder's stem reaches stride 4 in two strided convolutions, and a x4 bilinear head cannot
    draw a 10 m road or the corner of a small parcel. This branch convolves the input at stride 1
    and 2, climbs back from the stride-4 embedding through both, and adds a correction to the coarse
    logits. The correction starts at zero (its last layer is zero-initialised), so a network begins
    as the coarse model and learns only the detail it can use.
    """

    def __init__(self, in_channels: int, embedding_dim: int, width: int, out_channels: int) -> None:
        super().__init__()
        half, quarter = max(width // 2, 8), max(width // 4, 8)
        self.detail1 = ConvBNAct(in_channels, quarter)
        self.detail2 = ConvBNAct(quarter, half, stride=2)
        self.fuse2 = ConvBNAct(embedding_dim + half, half)
        self.fuse1 = ConvBNAct(half + quarter, quarter)
        self.correction = nn.Conv2d(quarter, out_channels, 1)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)  # type: ignore[arg-type]

    def forward(self, image: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Full-resolution logit correction [B,K,H,W]."""
        stride1 = self.detail1(image)
        stride2 = self.detail2(stride1)
        up = F.interpolate(embedding, size=stride2.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse2(torch.cat([up, stride2], dim=1))
        x = F.interpolate(x, size=stride1.shape[-2:], mode="bilinear", align_corners=False)
        return self.correction(self.fuse1(torch.cat([x, stride1], dim=1)))


class SkipDecoder(nn.Module):
    """Top-down decoder: upsample, add the lateral skip, convolve; from stride 32 to stride 4.

    Returns the stride-4 embedding (what the anchor loss regularises) and full-resolution logits:
    a linear classifier on that embedding upsampled x4, plus the :class:`DetailRefinement`
    correction when ``detail_channels`` is given (the channels of the image the network passes).
    Inputs must be multiples of 32 pixels.
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        width: int,
        embedding_dim: int,
        out_channels: int,
        detail_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(w, width, 1) for w in widths)
        self.refine = nn.ModuleList(ConvBNAct(width, width) for _ in widths[:-1])
        self.embed = nn.Sequential(ConvBNAct(width, width), nn.Conv2d(width, embedding_dim, 1))
        self.classify = nn.Conv2d(embedding_dim, out_channels, 1)
        self.detail = DetailRefinement(detail_channels, embedding_dim, width, out_channels) if detail_channels else None

    def forward(
        self, features: list[torch.Tensor], image: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.lateral[-1](features[-1])
        for index in range(len(features) - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = self.refine[index](x + self.lateral[index](features[index]))
        embedding = self.embed(x)
        logits = F.interpolate(self.classify(embedding), scale_factor=4.0, mode="bilinear", align_corners=False)
        if self.detail is not None:
            if image is None:
                raise ValueError("this decoder refines at full resolution: pass the network's input image")
            logits = logits + self.detail(image, embedding)
        return embedding, logits
