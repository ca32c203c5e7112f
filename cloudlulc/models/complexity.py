"""Size of a network: parameters and GFLOPs per patch, for the model card and the benchmark table."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from cloudlulc.models.networks import OPTICAL_CHANNELS, SAR_CHANNELS, SegmentationNetwork


def parameter_count(model: torch.nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def gflops_per_patch(model: SegmentationNetwork, size: int = 512) -> float:
    """Forward GFLOPs (multiply-add counted as 2) for one size x size patch."""
    optical = torch.zeros(1, OPTICAL_CHANNELS, size, size)
    sar = torch.zeros(1, SAR_CHANNELS, size, size)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(optical, sar)
    model.train(was_training)
    return counter.get_total_flops() / 1e9
