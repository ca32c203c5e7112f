"""USMT, the unified semantic mapping transformer.

Fused tokens of stages 3 and 4 pass through transformer layers together with one learnable token
per class. The class tokens gather what each class looks like in this image; their similarity to the
stage-4 tokens is a coarse semantic map (supervised during training), which organises the features
in a LULC-oriented latent space. Positions come from a depthwise convolution, so any input size
works (no fixed positional table), which keeps ONNX export dynamic.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SemanticMappingTransformer(nn.Module):
    """Refines stage-3 and stage-4 features jointly with per-class semantic tokens."""

    def __init__(self, channels3: int, channels4: int, dim: int, layers: int, heads: int, num_classes: int) -> None:
        super().__init__()
        self.project3 = nn.Conv2d(channels3, dim, 1)
        self.project4 = nn.Conv2d(channels4, dim, 1)
        self.position3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.position4 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.class_tokens = nn.Parameter(torch.randn(1, num_classes, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.back3 = nn.Conv2d(dim, channels3, 1)
        self.back4 = nn.Conv2d(dim, channels4, 1)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, stage3: torch.Tensor, stage4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return refined stage-3 and stage-4 features and semantic logits [B,K,h4,w4]."""
        tokens3 = self.project3(stage3)
        tokens3 = tokens3 + self.position3(tokens3)
        tokens4 = self.project4(stage4)
        tokens4 = tokens4 + self.position4(tokens4)
        batch, dim, h3, w3 = tokens3.shape
        h4, w4 = tokens4.shape[-2:]
        classes = self.class_tokens.expand(batch, -1, -1)
        sequence = torch.cat([tokens3.flatten(2).transpose(1, 2), tokens4.flatten(2).transpose(1, 2), classes], dim=1)
        sequence = self.norm(self.transformer(sequence))
        out3, out4, class_out = torch.split(sequence, [h3 * w3, h4 * w4, classes.shape[1]], dim=1)
        semantic = torch.einsum("bnd,bkd->bkn", out4, class_out) * self.scale
        refined3 = stage3 + self.back3(out3.transpose(1, 2).reshape(batch, dim, h3, w3))
        refined4 = stage4 + self.back4(out4.transpose(1, 2).reshape(batch, dim, h4, w4))
        return refined3, refined4, semantic.reshape(batch, -1, h4, w4)
