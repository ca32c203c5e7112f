"""An in-process PyTorch predictor with the mapping contract: numpy tiles in, calibrated probabilities out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from cloudlulc.models.networks import SegmentationNetwork


def torch_predictor(
    model: SegmentationNetwork, *, reliability: bool = False, device: str = "cpu", mixed_precision: bool = True
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``predict(optical [B,12,T,T], sar [B,2,T,T]) -> [B,6,T,T]`` calibrated probabilities, float32.

    With ``reliability`` ORM's input-resolution reliability is appended as a 7th channel, what
    ``map_scene(..., reliability=True)`` writes as a band. ONNX and Triton models return the class
    probabilities only, so the band comes from this predictor.

    On a CUDA device the network runs channels-last under bf16 autocast (``mixed_precision``; the
    probabilities are computed in float32 from its logits), and tiles go through pinned host memory
    with non-blocking copies, so a batch's transfer overlaps the reading of the next. On the CPU it runs
    as trained, in float32.

    Raises:
        ValueError: ``reliability`` for a network without ORM, or a CUDA device this machine lacks.
    """
    if reliability and not getattr(model.config, "use_orm", False):
        raise ValueError(f"{model.config.architecture} has no ORM (use_orm is off): it predicts no reliability")
    target = torch.device(device)
    on_gpu = target.type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise ValueError(f"device {device}: this machine has no CUDA device (torch {torch.__version__})")
    model = model.to(target).eval()
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch accepts it; stubs lack it

    def to_device(array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if not on_gpu:
            return tensor
        return tensor.pin_memory().to(target, non_blocking=True).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def predict(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        inputs = to_device(optical), to_device(sar)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu and mixed_precision):
            output = model.forward_features(*inputs)
        channels = [torch.softmax(output.logits.float() / model.temperature, dim=1)]
        if reliability:
            channels.append(output.reliability[0].float())
        return torch.cat(channels, dim=1).cpu().numpy()

    return predict
