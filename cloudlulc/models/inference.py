"""An in-process PyTorch predictor with the mapping contract: numpy tiles in, calibrated probabilities out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cloudlulc.models.networks import SegmentationNetwork


def torch_predictor(
    model: SegmentationNetwork, *, reliability: bool = False, device: str = "cpu"
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``predict(optical [B,12,T,T], sar [B,2,T,T]) -> [B,6,T,T]`` calibrated probabilities, float32.

    With ``reliability`` ORM's input-resolution reliability is appended as a 7th channel, what
    ``map_scene(..., reliability=True)`` writes as a band. ONNX and Triton models return the class
    probabilities only, so the band comes from this predictor.

    Raises:
        ValueError: ``reliability`` for a network without ORM.
    """
    if reliability and not getattr(model.config, "use_orm", False):
        raise ValueError(f"{model.config.architecture} has no ORM (use_orm is off): it predicts no reliability")
    target = torch.device(device)
    model = model.to(target).eval()

    @torch.no_grad()
    def predict(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(optical).to(target), torch.from_numpy(sar).to(target)
        output = model.forward_features(*inputs)
        channels = [torch.softmax(output.logits.float() / model.temperature, dim=1)]
        if reliability:
            channels.append(output.reliability[0].float())
        return torch.cat(channels, dim=1).cpu().numpy()

    return predict
