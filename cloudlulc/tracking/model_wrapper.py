"""The form in which networks are logged to MLflow.

MLflow's pytorch flavour feeds a model one tensor, so the logged model takes the 14 stacked input
channels (12 optical bands, then VV and VH) and returns class probabilities; ``network`` is the
two-input network that export and serving use.
"""

from __future__ import annotations

import torch
from torch import nn

from cloudlulc.models.networks import OPTICAL_CHANNELS, SAR_CHANNELS, SegmentationNetwork

PACKED_CHANNELS = OPTICAL_CHANNELS + SAR_CHANNELS


class PackedInputModel(nn.Module):
    """``[B,14,H,W] -> probabilities [B,K,H,W]`` around a two-input network."""

    def __init__(self, network: SegmentationNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        """Split the stacked channels, run the network, return its calibrated probabilities."""
        return self.network.probabilities(packed[:, :OPTICAL_CHANNELS], packed[:, OPTICAL_CHANNELS:])
