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
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.models.networks import SegmentationNetwork
from cloudlulc.training.metrics import MetricAccumulator

CLOUD_CODES = {0: "clear", 1: "thin", 2: "opaque", 3: "shadow"}
LOW_RELIABILITY = 0.5


def _stage_names(count: int) -> list[str]:
    return ["input", *[f"stage {i}" for i in range(1, count)]]


@torch.no_grad()
def module_diagnostics(model: SegmentationNetwork, dataset: CloudLULCDataset, *, batch_size: int = 8,
                       device: torch.device | None = None) -> dict[str, Any]:  # fmt: skip
    """ORM, SHOI, CHOI and USMT figures of ``model`` over ``dataset`` (built with ``return_cloud_mask``)."""
    device = device or torch.device("cpu")
    captured: dict[str, list[torch.Tensor]] = defaultdict(list)
    hooks = []
    for index, stage in enumerate(getattr(model, "fusion", [])):
        if stage.shoi is not None:
            hooks.append(
                stage.shoi.register_forward_hook(
                    lambda _m, _i, out, i=index: captured[f"shoi {i + 1}"].append(out.norm(dim=1).mean(dim=(1, 2)))
                )
            )
            hooks.append(
                stage.mix.register_forward_hook(
                    lambda _m, _i, out, i=index: captured[f"mix {i + 1}"].append(out.norm(dim=1).mean(dim=(1, 2)))
                )
            )
        if stage.choi is not None:
            hooks.append(
                stage.choi.gate.register_forward_hook(
                    lambda _m, _i, out, i=index: captured[f"choi {i + 1}"].append(torch.sigmoid(out))
                )
            )
    reliability_stats: dict[str, dict[str, list[float]]] = {}
    semantic = MetricAccumulator(model.config.num_classes)
    has_semantic = False
    was_training = model.training
    model.eval()
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            output = model.forward_features(batch["optical"].to(device), batch["sar"].to(device))
            labels = batch["label"]
            if output.reliability and "cloud_mask" in batch:
                mask = batch["cloud_mask"].long()
                for name, level in zip(_stage_names(len(output.reliability)), output.reliability, strict=True):
                    up = F.interpolate(level.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
                    reliability = up[:, 0].cpu()
                    stats = reliability_stats.setdefault(name, defaultdict(lambda: [0.0, 0.0]))
                    low, opaque = reliability < LOW_RELIABILITY, mask == 2
                    stats["intersection"][0] += float((low & opaque).sum())
                    stats["union"][0] += float((low | opaque).sum())
                    for code, label in CLOUD_CODES.items():
                        inside = mask == code
                        stats[label][0] += float(reliability[inside].sum())
                        stats[label][1] += float(inside.sum())
            if output.semantic_logits is not None:
                has_semantic = True
                coarse = F.interpolate(labels[:, None].float(), size=output.semantic_logits.shape[-2:],
                                       mode="nearest")[:, 0].long()  # fmt: skip
                semantic.update(output.semantic_logits.argmax(dim=1).cpu(), coarse)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    result: dict[str, Any] = {"orm": {}, "shoi": {}, "choi": {}, "usmt": None}
    for name, stats in reliability_stats.items():
        union = stats["union"][0]
        result["orm"][name] = {
            "iou_low_with_opaque": stats["intersection"][0] / union if union else None,
            **{f"mean_{label}": (stats[label][0] / stats[label][1] if stats[label][1] else None)
               for label in CLOUD_CODES.values()},
        }  # fmt: skip
    for key in [k for k in captured if k.startswith("shoi")]:
        stage = key.split()[1]
        ratio = torch.cat(captured[key]) / torch.cat(captured[f"mix {stage}"]).clamp(min=1e-12)
        result["shoi"][f"stage {stage}"] = {"norm_ratio_to_mix": float(ratio.mean())}
    for key in [k for k in captured if k.startswith("choi")]:
        gates = torch.cat(captured[key])  # [images, channels]
        result["choi"][f"stage {key.split()[1]}"] = {
            "gate_mean": float(gates.mean()), "gate_spread_between_images": float(gates.std(dim=0).mean()),
            "gate_min": float(gates.min()), "gate_max": float(gates.max()),
        }  # fmt: skip
    if has_semantic:
        scores = semantic.result()["overall"]
        result["usmt"] = {"semantic_oa": scores.overall_accuracy, "semantic_miou": scores.miou}  # type: ignore[attr-defined]
    return result


def diagnostics_text(result: dict[str, Any]) -> str:
    """The figures as aligned lines for people."""
    lines = []
    if result["orm"]:
        lines.append(f"{'ORM map':<9} {'IoU low~opaque':>14} " + " ".join(f"{c:>7}" for c in CLOUD_CODES.values()))
        for name, stats in result["orm"].items():
            cells = " ".join(f"{stats[f'mean_{c}']:>7.3f}" if stats[f"mean_{c}"] is not None else f"{'-':>7}"
                             for c in CLOUD_CODES.values())  # fmt: skip
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
