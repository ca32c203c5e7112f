"""What each CloudLULC-Net module does, measured on a split, not inferred from the end score.

- ORM: for the input-resolution map and every stage (upsampled to the input), the IoU of low
  reliability (< 0.5) with opaque cloud, and the mean reliability under each cloud-mask code.
- SHOI: how much it adds to the fused features, as the ratio of its output's norm to the mix's.
- CHOI: its channel gates: mean, and how much they vary between images (a gate that is the same
  for every image is a fixed per-channel scale that batch norm already provides).
- USMT: agreement of its coarse semantic map with the labels at its resolution (OA and mIoU).

Needs cloud masks for the ORM figures (the split must have ``CloudMask/``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.hooks import RemovableHandle

from cloudlulc.data.dataset import CloudLULCDataset, Sample
from cloudlulc.models.networks import SegmentationNetwork
from cloudlulc.training.metrics import MetricAccumulator

CLOUD_CODES = {0: "clear", 1: "thin", 2: "opaque", 3: "shadow"}
LOW_RELIABILITY = 0.5


def _stage_names(count: int) -> list[str]:
    return ["input", *[f"stage {i}" for i in range(1, count)]]


Captured = dict[str, list[torch.Tensor]]
"""Per-image figures recorded by the fusion hooks, by ``"<module> <stage>"`` (``shoi 1``, ``mix 1``, ``choi 1``)."""
ReliabilitySums = dict[str, dict[str, list[float]]]
"""Per ORM map: ``[sum, count]`` of reliability under each cloud code, and of the low-opaque intersection and union."""


@torch.no_grad()
def module_diagnostics(
    model: SegmentationNetwork, dataset: CloudLULCDataset, *, batch_size: int = 8, device: torch.device | None = None
) -> dict[str, Any]:
    """ORM, SHOI, CHOI and USMT figures of ``model`` over ``dataset`` (built with ``return_cloud_mask``)."""
    device = device or torch.device("cpu")
    captured: Captured = defaultdict(list)
    hooks = _capture_fusion_outputs(model, captured)
    reliability_sums: ReliabilitySums = {}
    semantic = MetricAccumulator(model.config.num_classes)
    was_training = model.training
    model.eval()
    try:
        has_semantic = _measure(
            model, DataLoader(dataset, batch_size=batch_size, shuffle=False), device, reliability_sums, semantic
        )
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    result: dict[str, Any] = {
        "orm": _orm_figures(reliability_sums),
        "shoi": _shoi_figures(captured),
        "choi": _choi_figures(captured),
        "usmt": None,
    }
    if has_semantic:
        scores = semantic.result()["overall"]
        result["usmt"] = {"semantic_oa": scores.overall_accuracy, "semantic_miou": scores.miou}  # type: ignore[attr-defined]
    return result


def _capture_fusion_outputs(model: SegmentationNetwork, captured: Captured) -> list[RemovableHandle]:
    """Hook every fusion stage so its SHOI and mix norms and CHOI gates are recorded per image; the hooks."""

    def record(key: str, figure: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., None]:
        return lambda _module, _inputs, output: captured[key].append(figure(output))

    def mean_norm(output: torch.Tensor) -> torch.Tensor:
        return output.norm(dim=1).mean(dim=(1, 2))

    hooks = []
    for index, stage in enumerate(getattr(model, "fusion", [])):
        if stage.shoi is not None:
            hooks.append(stage.shoi.register_forward_hook(record(f"shoi {index + 1}", mean_norm)))
            hooks.append(stage.mix.register_forward_hook(record(f"mix {index + 1}", mean_norm)))
        if stage.choi is not None:
            hooks.append(stage.choi.gate.register_forward_hook(record(f"choi {index + 1}", torch.sigmoid)))
    return hooks


def _measure(
    model: SegmentationNetwork,
    loader: DataLoader[Sample],
    device: torch.device,
    reliability_sums: ReliabilitySums,
    semantic: MetricAccumulator,
) -> bool:
    """Run the split once (the hooks record as it goes); whether the model has a semantic map to score."""
    has_semantic = False
    for batch in loader:
        output = model.forward_features(batch["optical"].to(device), batch["sar"].to(device))
        if output.reliability and "cloud_mask" in batch:
            _add_reliability(reliability_sums, output.reliability, batch["cloud_mask"].long())
        if output.semantic_logits is not None:
            has_semantic = True
            labels = batch["label"]
            coarse = F.interpolate(labels[:, None].float(), size=output.semantic_logits.shape[-2:], mode="nearest")
            semantic.update(output.semantic_logits.argmax(dim=1).cpu(), coarse[:, 0].long())
    return has_semantic


def _add_reliability(sums: ReliabilitySums, levels: list[torch.Tensor], mask: torch.Tensor) -> None:
    """Add one batch: each ORM map, upsampled to the cloud mask, against opaque cloud and per cloud code."""
    for name, level in zip(_stage_names(len(levels)), levels, strict=True):
        up = F.interpolate(level.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
        reliability = up[:, 0].cpu()
        stats = sums.setdefault(name, defaultdict(lambda: [0.0, 0.0]))
        low, opaque = reliability < LOW_RELIABILITY, mask == 2
        stats["intersection"][0] += float((low & opaque).sum())
        stats["union"][0] += float((low | opaque).sum())
        for code, label in CLOUD_CODES.items():
            inside = mask == code
            stats[label][0] += float(reliability[inside].sum())
            stats[label][1] += float(inside.sum())


def _orm_figures(sums: ReliabilitySums) -> dict[str, dict[str, float | None]]:
    """Per ORM map: IoU of low reliability with opaque cloud, and mean reliability per cloud code (None if unseen)."""
    figures: dict[str, dict[str, float | None]] = {}
    for name, stats in sums.items():
        union = stats["union"][0]
        figures[name] = {"iou_low_with_opaque": stats["intersection"][0] / union if union else None}
        for label in CLOUD_CODES.values():
            figures[name][f"mean_{label}"] = stats[label][0] / stats[label][1] if stats[label][1] else None
    return figures


def _shoi_figures(captured: Captured) -> dict[str, dict[str, float]]:
    """Per stage: mean ratio of SHOI's output norm to the mix's, how much SHOI adds to the fused features."""
    figures = {}
    for key in [k for k in captured if k.startswith("shoi")]:
        stage = key.split()[1]
        ratio = torch.cat(captured[key]) / torch.cat(captured[f"mix {stage}"]).clamp(min=1e-12)
        figures[f"stage {stage}"] = {"norm_ratio_to_mix": float(ratio.mean())}
    return figures


def _choi_figures(captured: Captured) -> dict[str, dict[str, float]]:
    """Per stage: CHOI's gates, their mean, range and spread between images (none: a fixed per-channel scale)."""
    figures = {}
    for key in [k for k in captured if k.startswith("choi")]:
        gates = torch.cat(captured[key])  # [images, channels]
        figures[f"stage {key.split()[1]}"] = {
            "gate_mean": float(gates.mean()),
            "gate_spread_between_images": float(gates.std(dim=0).mean()),
            "gate_min": float(gates.min()),
            "gate_max": float(gates.max()),
        }
    return figures


def diagnostics_text(result: dict[str, Any]) -> str:
    """The figures as aligned lines for people."""
    lines = []
    if result["orm"]:
        lines.append(f"{'ORM map':<9} {'IoU low~opaque':>14} " + " ".join(f"{c:>7}" for c in CLOUD_CODES.values()))
        for name, stats in result["orm"].items():
            cells = " ".join(
                f"{stats[f'mean_{c}']:>7.3f}" if stats[f"mean_{c}"] is not None else f"{'-':>7}"
                for c in CLOUD_CODES.values()
            )
            iou = stats["iou_low_with_opaque"]
            lines.append(f"{name:<9} {iou if iou is not None else float('nan'):>14.3f} {cells}")
    for name, stats in result["shoi"].items():
        lines.append(f"SHOI {name}: |SHOI| / |mix| = {stats['norm_ratio_to_mix']:.3f}")
    for name, stats in result["choi"].items():
        lines.append(
            f"CHOI {name}: gate mean {stats['gate_mean']:.3f}, spread between images "
            f"{stats['gate_spread_between_images']:.4f}, range {stats['gate_min']:.3f}-{stats['gate_max']:.3f}"
        )
    if result["usmt"]:
        lines.append(
            f"USMT semantic map vs labels: OA {result['usmt']['semantic_oa']:.1%}, "
            f"mIoU {result['usmt']['semantic_miou']:.1%}"
        )

    return "\n".join(lines)
