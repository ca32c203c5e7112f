"""Training losses: cross-entropy + dice, the semantic anchor term, and the auxiliary terms.

- Cross-entropy and soft dice on the full-resolution logits (label 255 ignored).
- Semantic anchor-guided term: class anchors are the per-class means of the L2-normalised stride-4
  embeddings under the reference labels of the batch; each pixel is pulled to its class anchor and
  anchors of different classes are pushed at least ``margin`` apart. Training only.
- Reliability term (CloudLULC-Net with ORM, where cloud masks exist): the input-resolution map and
  each stage's map are pushed towards 1 on clear pixels, 0 under opaque cloud and 0.5 under thin
  cloud or shadow (targets averaged over each map's cells).
- Semantic term (USMT): cross-entropy of the coarse semantic map against the labels at stride 32.
- Reconstruction term (reconstruction-first baseline): L1 to Opt_S2_clear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cloudlulc import schema
from cloudlulc.models.networks import ModelOutput

RELIABILITY_TARGET = torch.tensor([1.0, 0.5, 0.0, 0.5])
"""Target reliability per cloud code: clear, thin cloud, opaque cloud, shadow."""


class LossWeights(BaseModel):
    """Weights of the loss terms; a zero switches a term off (e.g. the anchor ablation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cross_entropy: float = Field(1.0, ge=0)
    dice: float = Field(0.5, ge=0)
    anchor: float = Field(
        0.0,
        ge=0,
        description=(
            "Semantic anchor-guided term (0.1 in the published setting). Off by default: in the seed-paired table "
            "removing it gained 0.3 mIoU, within seed noise (docs/benchmarks.md)."
        ),
    )
    anchor_margin: float = Field(0.5, gt=0, description="Smallest distance wanted between class anchors.")
    reliability: float = Field(0.1, ge=0)
    semantic: float = Field(0.2, ge=0)
    reconstruction: float = Field(1.0, ge=0)


def _labels_at(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour labels [B,h,w] at a feature map's size."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels; 0 (not NaN) when a batch has none."""
    total = F.cross_entropy(logits, labels, ignore_index=schema.IGNORE_INDEX, reduction="sum")
    return total / (labels != schema.IGNORE_INDEX).sum().clamp(min=1)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = schema.IGNORE_INDEX) -> torch.Tensor:
    """1 - soft dice, averaged over the classes present in the batch's labels."""
    num_classes = logits.shape[1]
    valid = (labels != ignore_index).unsqueeze(1)
    probabilities = logits.softmax(dim=1) * valid
    one_hot = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
    cardinality = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    present = one_hot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * intersection + 1.0) / (cardinality + 1.0)
    return (1 - dice[present]).mean() if bool(present.any()) else logits.sum() * 0


def anchor_loss(embedding: torch.Tensor, labels: torch.Tensor, margin: float, num_classes: int) -> torch.Tensor:
    """Pull each pixel embedding to its class anchor; push anchors of different classes apart."""
    target = _labels_at(labels, (embedding.shape[-2], embedding.shape[-1])).reshape(-1)
    vectors = F.normalize(embedding, dim=1).permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])
    keep = target != schema.IGNORE_INDEX
    target, vectors = target[keep], vectors[keep]
    if target.numel() == 0:
        return embedding.sum() * 0
    one_hot = F.one_hot(target, num_classes).float()
    counts = one_hot.sum(dim=0)
    anchors = (one_hot.T @ vectors) / counts.clamp(min=1)[:, None]
    pull = ((vectors - anchors[target]) ** 2).sum(dim=1).mean()
    present = counts > 0
    if int(present.sum()) < 2:
        return pull
    distances = torch.cdist(anchors[present], anchors[present])
    off_diagonal = ~torch.eye(int(present.sum()), dtype=torch.bool, device=distances.device)
    push = F.relu(margin - distances[off_diagonal]).pow(2).mean()
    return pull + push


def reliability_loss(reliability: list[torch.Tensor], cloud_mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every reliability map against the pooled cloud-code targets.

    Written out in float32 rather than ``F.binary_cross_entropy``: that kernel is not bf16-safe, and
    on CUDA a NaN input stops the process with a device-side assert, where a NaN loss here reaches
    the trainer's divergence check and is reported as such.
    """
    target = RELIABILITY_TARGET.to(cloud_mask.device)[cloud_mask.long().clamp(0, 3)][:, None]
    terms = []
    for level in reliability:
        r = level.float().clamp(1e-6, 1 - 1e-6)
        pooled = F.adaptive_avg_pool2d(target, (r.shape[-2], r.shape[-1]))
        terms.append(-(pooled * torch.log(r) + (1 - pooled) * torch.log1p(-r)).mean())
    return torch.stack(terms).mean()


class CloudLULCLoss(nn.Module):
    """The combined objective; returns every term so that each can be logged."""

    def __init__(self, weights: LossWeights | None = None, num_classes: int = schema.NUM_CLASSES) -> None:
        super().__init__()
        self.weights = weights or LossWeights()
        self.num_classes = num_classes

    def forward(
        self,
        output: ModelOutput,
        labels: torch.Tensor,
        clear: torch.Tensor | None = None,
        cloud_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        w = self.weights
        terms = {"cross_entropy": masked_cross_entropy(output.logits, labels), "dice": dice_loss(output.logits, labels)}
        if w.anchor > 0:
            terms["anchor"] = anchor_loss(output.embedding, labels, w.anchor_margin, self.num_classes)
        if w.reliability > 0 and output.reliability and cloud_mask is not None:
            terms["reliability"] = reliability_loss(output.reliability, cloud_mask)
        if w.semantic > 0 and output.semantic_logits is not None:
            coarse = _labels_at(labels, (output.semantic_logits.shape[-2], output.semantic_logits.shape[-1]))
            terms["semantic"] = masked_cross_entropy(output.semantic_logits, coarse)
        if output.reconstruction is not None:
            if clear is None:
                raise ValueError("the reconstruction-first baseline needs Opt_S2_clear (return_clear=True)")
            terms["reconstruction"] = F.l1_loss(output.reconstruction, clear)
        total = sum(getattr(w, name) * value for name, value in terms.items())
        terms["total"] = torch.as_tensor(total)
        return terms
