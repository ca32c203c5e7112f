"""The training loop: AdamW, warm-up + cosine, bf16 on GPU, gradient clipping, exact resume, DDP.

Exact resume: every epoch reseeds the shuffling and augmentation from (seed, epoch), and a checkpoint
after each epoch holds model, optimizer and scheduler states, so a run killed at any point and
restarted ends with the same weights as an uninterrupted run (on the same device and threads).

Under torchrun every replica trains on its own shard of each epoch (``batch_size`` is per replica);
rank 0 alone validates, checkpoints, writes the history and calls ``on_epoch_end``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from cloudlulc.data.dataset import CloudLULCDataset, Sample
from cloudlulc.data.layout import DatasetLayout
from cloudlulc.errors import DataError, DivergedError
from cloudlulc.io.guard import check_outputs_apart, probe_writable
from cloudlulc.io.storage import staged_output
from cloudlulc.logs import progress_enabled
from cloudlulc.models.config import ModelConfig
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
log = logging.getLogger(__name__)


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


def drop_modalities(
    optical: torch.Tensor, sar: torch.Tensor, cloud_mask: torch.Tensor | None, share: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
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
        raise DataError(
            config.init,
            "registered models are loaded by the tracked train stage (cloudlulc train "
            "with tracking on), not by the bare training loop",
        )
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


def train(
    config: TrainConfig,
    *,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train (or resume) the run described by ``config``; checkpoints land in ``config.output_dir``.

    ``init_state`` (weights of a registered model, resolved by the caller) or ``config.init`` (a
    checkpoint) starts a fresh run from those weights; a resumed run ignores both. Started by
    torchrun, this process is one replica of a DDP run (see the module docstring).
    """
    replica = replica_from_environment()
    device = replica_device(replica, config.device)
    with process_group(replica, device):
        return _train(
            config,
            replica,
            device,
            progress=progress and replica.is_main,
            on_epoch_end=_EpochLines(config, on_epoch_end),
            init_state=init_state,
        )


class _EpochLines:
    """One INFO line per finished epoch, then the caller's callback: a run without a terminal is never silent.

    Its seconds run from the previous line (the first also counts setting up), validation and checkpoint included.
    """

    def __init__(self, config: TrainConfig, then: EpochCallback | None) -> None:
        self.epochs, self.then, self.since = config.epochs, then, time.monotonic()

    def __call__(self, epoch: int, record: dict[str, float]) -> None:
        now = time.monotonic()
        seconds, self.since = now - self.since, now
        log.info(
            "epoch %d/%d: loss %.4f, val mIoU %.2f%%, OA %.2f%%, %d samples, %.0f s",
            epoch,
            self.epochs,
            record.get("train_total", float("nan")),
            100 * record.get("val_miou", float("nan")),
            100 * record.get("val_oa", float("nan")),
            record.get("train_samples", 0),
            seconds,
            extra={**record, "epoch": epoch, "epochs": self.epochs, "seconds": round(seconds, 3)},
        )
        if self.then is not None:
            self.then(epoch, record)


@dataclass
class _TrainingRun:
    """What the phases of one run share: the model, its data and optimiser, and the progress so far."""

    config: TrainConfig
    replica: Replica
    device: torch.device
    network_config: ModelConfig
    model: SegmentationNetwork
    loss_function: CloudLULCLoss
    train_set: CloudLULCDataset
    val_set: CloudLULCDataset
    needs_clear: bool
    has_masks: bool
    steps_per_epoch: int
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.AdamW
    scheduler: torch.optim.lr_scheduler.LambdaLR
    history: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 1
    checkpoint: Path | None = None

    @property
    def output_dir(self) -> Path:
        """Where checkpoints and the history are written."""
        return Path(self.config.output_dir)

    def checkpoint_state(self, epoch: int, calibration: dict[str, float] | None = None) -> dict[str, object]:
        """Everything an exact resume needs, plus the settings a predictor rebuilds the network from."""
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": self.history,
            "config": self.config.model_dump(mode="json"),
            "network": self.network_config.model_dump(mode="json"),
            "calibration": calibration,
        }


def _train(
    config: TrainConfig,
    replica: Replica,
    device: torch.device,
    *,
    progress: bool,
    on_epoch_end: EpochCallback | None,
    init_state: dict[str, torch.Tensor] | None,
) -> TrainResult:
    """Set up, resume, train the remaining epochs, then calibrate; every replica runs every phase.

    Rank 0 alone validates and writes; the barriers keep the replicas in step around what it does.
    """
    if replica.is_main:
        check_training_paths(config)
    seed_everything(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    run = _set_up_run(config, replica, device, init_state)
    _resume(run)
    replicated = _replicate(run.model, replica, device)
    for epoch in range(run.start_epoch, config.epochs + 1):
        record = _train_epoch(run, replicated, epoch, progress=progress)
        if replica.is_main:
            _validate_and_checkpoint(run, epoch, record, on_epoch_end)
        barrier(replica)
    calibration = _calibrate(run)
    barrier(replica)
    return TrainResult(model=run.model, history=run.history, checkpoint=run.checkpoint, calibration=calibration)


def _set_up_run(
    config: TrainConfig, replica: Replica, device: torch.device, init_state: dict[str, torch.Tensor] | None
) -> _TrainingRun:
    """Build the model, loss, datasets, optimiser and schedule, in the order that fixes the seeded draws."""
    exclude = _read_exclude(config.exclude_file)
    network_config = config.network()
    model = _starting_model(config, network_config, replica, device, init_state)
    loss_function = CloudLULCLoss(config.loss, network_config.num_classes)
    needs_clear = network_config.architecture == "reconstruction_first"
    has_masks = all(r.cloud_mask for r in DatasetLayout(config.dataset).read_records(("train",)))
    train_set, val_set = _datasets(config, exclude, needs_clear=needs_clear, has_masks=has_masks)
    # The schedule counts the steps of one replica's shard: that is what each replica steps through.
    steps_per_epoch = math.ceil(math.ceil(len(train_set) / replica.world_size) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = warmup_cosine(config.warmup_steps, steps_per_epoch * config.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return _TrainingRun(
        config,
        replica,
        device,
        network_config,
        model,
        loss_function,
        train_set,
        val_set,
        needs_clear,
        has_masks,
        steps_per_epoch,
        trainable,
        optimizer,
        scheduler,
    )


def _datasets(
    config: TrainConfig, exclude: tuple[str, ...], *, needs_clear: bool, has_masks: bool
) -> tuple[CloudLULCDataset, CloudLULCDataset]:
    """Augmented random crops to train on; the full, unaugmented patches the protocol validates on."""
    train_set = CloudLULCDataset(
        config.dataset,
        "train",
        crop_size=config.crop_size,
        augment=True,
        return_clear=needs_clear,
        return_cloud_mask=has_masks,
        exclude=exclude,
        in_memory=config.in_memory,
    )
    return train_set, evaluation_dataset(config.dataset, "val", exclude, in_memory=config.in_memory)


def _starting_model(
    config: TrainConfig,
    network_config: ModelConfig,
    replica: Replica,
    device: torch.device,
    init_state: dict[str, torch.Tensor] | None,
) -> SegmentationNetwork:
    """The network with its starting weights and frozen encoders (if asked), on ``device``.

    Under DDP only rank 0 loads them: the other replicas receive rank 0's weights when the model is wrapped.
    """
    model = build_model(network_config)
    start_weights = init_state if init_state is not None else initial_weights(config) if replica.is_main else None
    if start_weights is not None:
        try:
            model.load_state_dict(start_weights)
        except RuntimeError as error:
            raise DataError(
                config.init or "init",
                f"weights do not fit {network_config.architecture}/{config.size}: {str(error).splitlines()[0]}",
            ) from error
    if config.freeze_encoders:
        freeze_encoders(model)
    return model.to(device)


def _resume(run: _TrainingRun) -> None:
    """Continue from the newest checkpoint, if any, so a killed run ends with the weights of an unbroken one.

    Raises:
        DataError: the checkpoint was written under another config (its run cannot be continued).
    """
    existing = list_checkpoints(run.output_dir)
    if not existing:
        return
    state = load_checkpoint(existing[-1])
    if _resumable_config(state.get("config")) != _resumable_config(run.config.model_dump(mode="json")):
        raise DataError(
            str(existing[-1]), "checkpoint was written by a run with another config; use another output_dir"
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.history = state["history"]
    run.start_epoch = state["epoch"] + 1
    run.checkpoint = existing[-1]


def _resumable_config(config: object) -> object:
    """What must match to continue a run: its config, wherever its folder now lies (a retry gets a new one)."""
    return {k: v for k, v in config.items() if k != "output_dir"} if isinstance(config, dict) else config


def _replicate(model: SegmentationNetwork, replica: Replica, device: torch.device) -> torch.nn.Module:
    """The training forward, wrapped in DDP (with synchronised batch norm on GPUs) when there are replicas."""
    replicated: torch.nn.Module = _Features(model)
    if replica.distributed:
        if device.type == "cuda":
            replicated = torch.nn.SyncBatchNorm.convert_sync_batchnorm(replicated)
        replicated = DistributedDataParallel(replicated, device_ids=[device.index] if device.type == "cuda" else None)
    return replicated


def _epoch_loader(run: _TrainingRun, epoch_seed: int) -> DataLoader[Sample]:
    """This replica's batches of one epoch, shuffled from the epoch's seed alone (what makes resume exact)."""
    config, replica = run.config, run.replica
    if replica.distributed:
        sampler: DistributedSampler[dict[str, torch.Tensor]] = DistributedSampler(
            run.train_set, replica.world_size, replica.rank, shuffle=True, seed=epoch_seed
        )
        return DataLoader(run.train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers)
    shuffle_order = torch.Generator().manual_seed(epoch_seed)
    return DataLoader(
        run.train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=False,
        num_workers=config.num_workers,
        generator=shuffle_order,
    )


def _train_epoch(run: _TrainingRun, replicated: torch.nn.Module, epoch: int, *, progress: bool) -> dict[str, float]:
    """One pass over this replica's shard (at most ``steps_per_epoch`` steps); its record, summed over replicas.

    Augmentation and modality dropout are reseeded from (seed, epoch, rank), so a resumed epoch draws the same.
    """
    config, replica = run.config, run.replica
    epoch_seed = config.seed * 100_003 + epoch
    seed_everything(epoch_seed + 1_000_003 * replica.rank)  # augmentation of this epoch and replica only
    loader = _epoch_loader(run, epoch_seed)
    replicated.train()
    dropout_draws = torch.Generator().manual_seed(epoch_seed + 7_919 * replica.rank)
    totals: dict[str, float] = {}
    steps = samples = 0
    bar = tqdm(
        loader, total=run.steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", disable=not progress_enabled(progress)
    )
    for batch in bar:
        if steps >= run.steps_per_epoch:
            break
        terms = _train_step(run, replicated, batch, dropout_draws, epoch=epoch, step=steps + 1)
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + value
        steps += 1
        samples += len(batch["label"])
        bar.set_postfix(loss=f"{totals['total'] / steps:.3f}")
    return _epoch_record(run, epoch, totals, steps, samples)


def _train_step(
    run: _TrainingRun,
    replicated: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    dropout_draws: torch.Generator,
    *,
    epoch: int,
    step: int,
) -> dict[str, float]:
    """Forward, loss, backward, clipped update; the loss terms of the batch.

    Raises:
        DivergedError: the loss is not finite; raised before the update, so no weight is spoiled.
    """
    config, device = run.config, run.device
    optical, sar, labels = batch["optical"].to(device), batch["sar"].to(device), batch["label"].to(device)
    cloud_mask = batch["cloud_mask"].to(device) if run.has_masks else None
    optical, sar, cloud_mask = drop_modalities(optical, sar, cloud_mask, config.modality_dropout, dropout_draws)
    autocast = device.type == "cuda" and config.mixed_precision
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
        output = replicated(optical, sar)
        clear = batch["clear"].to(device) if run.needs_clear else None
        terms = run.loss_function(output, labels, clear=clear, cloud_mask=cloud_mask)
    if not torch.isfinite(terms["total"]):
        raise _diverged(config, terms, epoch=epoch, step=step)
    run.optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(run.trainable, config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return {name: float(value.detach()) for name, value in terms.items()}


def _diverged(config: TrainConfig, terms: dict[str, torch.Tensor], *, epoch: int, step: int) -> DivergedError:
    """The error of a non-finite loss: where it happened, each term, and which checkpoint is still good."""
    parts = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in terms.items() if k != "total")
    return DivergedError(
        config.output_dir,
        f"loss is {float(terms['total'].detach())} at epoch {epoch}, step {step} ({parts}); the "
        f"checkpoint of epoch {epoch - 1} is kept: lower learning_rate or check the inputs",
    )


def _epoch_record(
    run: _TrainingRun, epoch: int, totals: dict[str, float], steps: int, samples: int
) -> dict[str, float]:
    """Mean loss terms over every replica's steps, samples seen, epoch and learning rate."""
    names = sorted(totals)
    summed = sum_across(run.replica, [totals[name] for name in names] + [float(steps), float(samples)])
    all_steps, all_samples = summed[-2], summed[-1]
    record = {f"train_{name}": value / max(all_steps, 1) for name, value in zip(names, summed, strict=False)}
    record["train_samples"] = all_samples
    record["epoch"] = float(epoch)
    record["learning_rate"] = float(run.scheduler.get_last_lr()[0])
    return record


def _validate_and_checkpoint(
    run: _TrainingRun, epoch: int, record: dict[str, float], on_epoch_end: EpochCallback | None
) -> None:
    """Rank 0: score the validation split, then write checkpoint and history (each staged, then renamed)."""
    record.update(_summary(evaluate_model(run.model, run.val_set, device=run.device)["overall"]))  # type: ignore[arg-type]
    run.history.append(record)
    run.checkpoint = save_checkpoint(run.output_dir, epoch, run.checkpoint_state(epoch))
    with staged_output(str(run.output_dir / "history.json")) as temp_path:
        temp_path.write_text(json.dumps(run.history, indent=2) + "\n")
    if on_epoch_end is not None:
        on_epoch_end(epoch, record)


def _calibrate(run: _TrainingRun) -> dict[str, float] | None:
    """Rank 0, when asked and an epoch exists: fit the temperature and rewrite the last checkpoint with it."""
    if not (run.config.calibrate and run.replica.is_main and run.history):
        return None
    calibration = calibrate(run.model, run.val_set, device=run.device)  # raw logits: a rerun fits the same temperature
    epochs = len(run.history)
    run.checkpoint = save_checkpoint(run.output_dir, epochs, run.checkpoint_state(epochs, calibration))
    return calibration
