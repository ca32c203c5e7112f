"""The training loop: AdamW, warm-up + cosine, bf16 on GPU, gradient clipping, exact resume, DDP.

Exact resume: every epoch reseeds the shuffling and augmentation from (seed, epoch), and a checkpoint
after each epoch holds model, optimizer and scheduler states, so a run killed at any point and
restarted ends with the same weights as an uninterrupted run (on the same device and threads).

Under torchrun every replica trains on its own shard of each epoch (``batch_size`` is per replica);
rank 0 alone validates, checkpoints, writes the history and calls ``on_epoch_end``.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.data.layout import DatasetLayout
from cloudlulc.errors import DataError, DivergedError
from cloudlulc.io.guard import check_outputs_apart, probe_writable
from cloudlulc.io.storage import staged_output
from cloudlulc.models.networks import ModelOutput, SegmentationNetwork, build_model
from cloudlulc.training.calibration import calibrate
from cloudlulc.training.checkpoints import CHECKPOINT_DIR, list_checkpoints, load_checkpoint, save_checkpoint
from cloudlulc.training.config import TrainConfig
from cloudlulc.training.distributed import (
    Replica,
    barrier,
    process_group,
    replica_device,
    replica_from_environment,
    sum_across,
)
from cloudlulc.training.evaluation import evaluate_model, evaluation_dataset
from cloudlulc.training.losses import CloudLULCLoss
from cloudlulc.training.metrics import SegmentationMetrics

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    model: SegmentationNetwork
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    calibration: dict[str, float] | None = None
    """Temperature and validation ECE before and after, when the run calibrated (``config.calibrate``)."""


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


OPAQUE_CLOUD = 2
"""Cloud-mask code of opaque cloud: what a dropped optical image is, for ORM's supervision."""


def drop_modalities(optical: torch.Tensor, sar: torch.Tensor, cloud_mask: torch.Tensor | None, share: float,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Zero the optics of ``share / 2`` of the samples and the SAR of another ``share / 2``.

    A sample without its optics is, for ORM, entirely opaque cloud (its cloud mask says so). The
    draw comes from ``generator`` (seeded per epoch), so resumed runs drop the same samples.
    """
    if share <= 0:
        return optical, sar, cloud_mask
    draw = torch.rand(optical.shape[0], generator=generator)
    no_optics = (draw < share / 2).to(optical.device)
    no_sar = ((draw >= share / 2) & (draw < share)).to(optical.device)
    optical = optical * ~no_optics[:, None, None, None]
    sar = sar * ~no_sar[:, None, None, None]
    if cloud_mask is not None:
        cloud_mask = torch.where(no_optics[:, None, None], torch.full_like(cloud_mask, OPAQUE_CLOUD), cloud_mask)
    return optical, sar, cloud_mask


def _read_exclude(path: str | None) -> tuple[str, ...]:
    if not path:
        return ()
    try:
        return tuple(line.strip() for line in Path(path).read_text().splitlines() if line.strip())
    except OSError as error:
        raise DataError(path, f"cannot read the exclude list ({error.strerror})") from error


def _summary(metrics: SegmentationMetrics) -> dict[str, float]:
    return {"val_oa": metrics.overall_accuracy, "val_miou": metrics.miou, "val_macro_f1": metrics.macro_f1}


def initial_weights(config: TrainConfig) -> dict[str, torch.Tensor] | None:
    """Weights of ``config.init`` when it is a checkpoint file (registry URIs are resolved by the tracking stage)."""
    if config.init is None:
        return None
    if config.init.startswith("models:/"):
        raise DataError(config.init, "registered models are loaded by the tracked train stage (cloudlulc train "
                        "with tracking on), not by the bare training loop")  # fmt: skip
    path = Path(config.init)
    if not path.is_file():
        raise DataError(config.init, "init checkpoint not found")
    return load_checkpoint(path)["model"]


def check_training_paths(config: TrainConfig) -> None:
    """Before any epoch: outputs outside the dataset, ``init`` not among the checkpoints a run prunes, writable.

    Raises:
        UsageError: the output folder lies in the dataset, or ``init`` is one of its own checkpoints.
        StorageError: the output folder cannot be written.
    """
    check_outputs_apart({"output_dir": config.output_dir}, datasets={"dataset": config.dataset})
    checkpoints = Path(config.output_dir) / CHECKPOINT_DIR
    if config.init and not config.init.startswith("models:/"):
        check_outputs_apart({"init": config.init}, datasets={"output_dir checkpoints": str(checkpoints)})
    probe_writable(str(checkpoints / "epoch_0000.pt"), "output_dir")


def freeze_encoders(model: SegmentationNetwork) -> int:
    """Stop gradients in every encoder (modules named ``*encoder``); return the parameters frozen."""
    frozen = 0
    for name, module in model.named_modules():
        if name.endswith("encoder"):
            for parameter in module.parameters():
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen


class _Features(torch.nn.Module):
    """The training forward (all heads) as ``forward``, which is the method DDP synchronises."""

    def __init__(self, network: SegmentationNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        return self.network.forward_features(optical, sar)


def train(config: TrainConfig, *, progress: bool = True, on_epoch_end: EpochCallback | None = None,
          init_state: dict[str, torch.Tensor] | None = None) -> TrainResult:  # fmt: skip
    """Train (or resume) the run described by ``config``; checkpoints land in ``config.output_dir``.

    ``init_state`` (weights of a registered model, resolved by the caller) or ``config.init`` (a
    checkpoint) starts a fresh run from those weights; a resumed run ignores both. Started by
    torchrun, this process is one replica of a DDP run (see the module docstring).
    """
    replica = replica_from_environment()
    device = replica_device(replica, config.device)
    with process_group(replica, device):
        return _train(config, replica, device, progress=progress and replica.is_main,
                      on_epoch_end=on_epoch_end, init_state=init_state)  # fmt: skip


def _train(config: TrainConfig, replica: Replica, device: torch.device, *, progress: bool,
           on_epoch_end: EpochCallback | None, init_state: dict[str, torch.Tensor] | None) -> TrainResult:  # fmt: skip
    if replica.is_main:
        check_training_paths(config)
    seed_everything(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    exclude = _read_exclude(config.exclude_file)
    network_config = config.network()
    model = build_model(network_config)
    # Under DDP the other replicas receive rank 0's weights when the model is wrapped.
    start_weights = init_state if init_state is not None else initial_weights(config) if replica.is_main else None
    if start_weights is not None:
        try:
            model.load_state_dict(start_weights)
        except RuntimeError as error:
            raise DataError(config.init or "init", f"weights do not fit {network_config.architecture}/"
                            f"{config.size}: {str(error).splitlines()[0]}") from error  # fmt: skip
    if config.freeze_encoders:
        freeze_encoders(model)
    model = model.to(device)
    loss_function = CloudLULCLoss(config.loss, network_config.num_classes)
    needs_clear = network_config.architecture == "reconstruction_first"
    has_masks = all(r.cloud_mask for r in DatasetLayout(config.dataset).read_records(("train",)))
    train_set = CloudLULCDataset(config.dataset, "train", crop_size=config.crop_size, augment=True,
                                 return_clear=needs_clear, return_cloud_mask=has_masks, exclude=exclude,
                                 in_memory=config.in_memory)  # fmt: skip
    val_set = evaluation_dataset(config.dataset, "val", exclude, in_memory=config.in_memory)
    shard_size = math.ceil(len(train_set) / replica.world_size)
    steps_per_epoch = math.ceil(shard_size / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, steps_per_epoch * config.epochs)
    )
    output_dir = Path(config.output_dir)
    history: list[dict[str, float]] = []
    start_epoch = 1
    existing = list_checkpoints(output_dir)
    if existing:
        state = load_checkpoint(existing[-1])
        if state.get("config") != config.model_dump(mode="json"):
            raise DataError(str(existing[-1]), "checkpoint was written by a run with another config; "
                            "use another output_dir")  # fmt: skip
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = state["history"]
        start_epoch = state["epoch"] + 1

    def checkpoint_state(epoch: int, calibration: dict[str, float] | None = None) -> dict[str, object]:
        return {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "history": history, "config": config.model_dump(mode="json"),
                "network": network_config.model_dump(mode="json"), "calibration": calibration}  # fmt: skip

    replicated: torch.nn.Module = _Features(model)
    if replica.distributed:
        if device.type == "cuda":
            replicated = torch.nn.SyncBatchNorm.convert_sync_batchnorm(replicated)
        replicated = DistributedDataParallel(replicated, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = device.type == "cuda" and config.mixed_precision
    checkpoint = existing[-1] if existing else None
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_seed = config.seed * 100_003 + epoch
        seed_everything(epoch_seed + 1_000_003 * replica.rank)  # augmentation of this epoch and replica only
        if replica.distributed:
            sampler: DistributedSampler[dict[str, torch.Tensor]] = DistributedSampler(
                train_set, replica.world_size, replica.rank, shuffle=True, seed=epoch_seed
            )
            loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler,
                                num_workers=config.num_workers)  # fmt: skip
        else:
            shuffle_order = torch.Generator().manual_seed(epoch_seed)
            loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=False,
                                num_workers=config.num_workers, generator=shuffle_order)  # fmt: skip
        replicated.train()
        dropout_draws = torch.Generator().manual_seed(epoch_seed + 7_919 * replica.rank)
        totals: dict[str, float] = {}
        steps = samples = 0
        bar = tqdm(loader, total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", disable=not progress)
        for batch in bar:
            if steps >= steps_per_epoch:
                break
            optical, sar, labels = batch["optical"].to(device), batch["sar"].to(device), batch["label"].to(device)
            cloud_mask = batch["cloud_mask"].to(device) if has_masks else None
            optical, sar, cloud_mask = drop_modalities(optical, sar, cloud_mask, config.modality_dropout,
                                                       dropout_draws)  # fmt: skip
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                output = replicated(optical, sar)
                terms = loss_function(
                    output, labels, clear=batch["clear"].to(device) if needs_clear else None, cloud_mask=cloud_mask
                )
            if not torch.isfinite(terms["total"]):
                raise DivergedError(
                    config.output_dir,
                    f"loss is {float(terms['total'].detach())} at epoch {epoch}, step {steps + 1} "
                    f"({', '.join(f'{k} {float(v.detach()):.4g}' for k, v in terms.items() if k != 'total')}); the "
                    f"checkpoint of epoch {epoch - 1} is kept: lower learning_rate or check the inputs",
                )
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
            optimizer.step()
            scheduler.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
            steps += 1
            samples += len(labels)
            bar.set_postfix(loss=f"{totals['total'] / steps:.3f}")
        names = sorted(totals)
        summed = sum_across(replica, [totals[name] for name in names] + [float(steps), float(samples)])
        all_steps, all_samples = summed[-2], summed[-1]
        record = {f"train_{name}": value / max(all_steps, 1) for name, value in zip(names, summed, strict=False)}
        record["train_samples"] = all_samples
        record["epoch"] = float(epoch)
        record["learning_rate"] = float(scheduler.get_last_lr()[0])
        if replica.is_main:
            record.update(_summary(evaluate_model(model, val_set, device=device)["overall"]))  # type: ignore[arg-type]
            history.append(record)
            checkpoint = save_checkpoint(output_dir, epoch, checkpoint_state(epoch))
            with staged_output(str(output_dir / "history.json")) as temp_path:
                temp_path.write_text(json.dumps(history, indent=2) + "\n")
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
        barrier(replica)
    calibration = None
    if config.calibrate and replica.is_main and history:
        calibration = calibrate(model, val_set, device=device)  # raw logits: a rerun fits the same temperature
        checkpoint = save_checkpoint(output_dir, len(history), checkpoint_state(len(history), calibration))
    barrier(replica)
    return TrainResult(model=model, history=history, checkpoint=checkpoint, calibration=calibration)
