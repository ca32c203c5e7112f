"""Training configuration: a YAML file plus ``key=value`` overrides, validated before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudlulc import schema
from cloudlulc.errors import CloudLULCError
from cloudlulc.models.config import ModelConfig, model_config
from cloudlulc.training.losses import LossWeights


class ConfigError(CloudLULCError):
    """A training config with unknown, missing or inconsistent keys."""

    exit_code = 2


class TrainConfig(BaseModel):
    """Everything one training run needs; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = Field(description="CloudLULC-Set folder or s3:// prefix.")
    output_dir: str = Field("outputs/train", description="Checkpoints and metrics go here.")
    architecture: str = Field("cloudlulc_net", description="cloudlulc_net or a baseline name.")
    size: str = Field("tiny", description="Named size: tiny or base.")
    model_overrides: dict[str, Any] = Field(default_factory=dict, description="ModelConfig fields to change.")
    loss: LossWeights = Field(default_factory=LossWeights)
    epochs: int = Field(10, ge=1, description="Passes over the training split.")
    batch_size: int = Field(8, ge=1)
    crop_size: int = Field(
        256,
        ge=schema.SIZE_MULTIPLE,
        multiple_of=schema.SIZE_MULTIPLE,
        description="Training crop side, a multiple of 32.",
    )
    learning_rate: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (after warm-up).")
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up before the cosine decay.")
    grad_clip: float = Field(1.0, gt=0, description="Largest gradient norm.")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cap on batches per epoch (quick runs).")
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    in_memory: bool = Field(False, description="Keep decoded patches in memory after the first epoch (small sets).")
    mixed_precision: bool = Field(True, description="bf16 autocast on CUDA; ignored on CPU.")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N.")
    exclude_file: str | None = Field(None, description="Sample names to skip (a validation quarantine list).")
    init: str | None = Field(None, description="Start from these weights: a checkpoint path or models:/name@alias.")
    freeze_encoders: bool = Field(False, description="Fine-tune with the encoders frozen.")
    modality_dropout: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "Share of training samples that lose one modality (half the optics, half the SAR), so one model also "
            "maps with S2 only or S1 only; a dropped modality is fed as zeros, which is how a missing one is fed."
        ),
    )
    calibrate: bool = Field(True, description="After training, fit the probability temperature on the val split.")

    def network(self) -> ModelConfig:
        """The validated model config this run trains."""
        return model_config(self.architecture, self.size, **self.model_overrides)


def _set_dotted(values: dict[str, Any], dotted: str, raw: str) -> None:
    node = values
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}={raw}: {key} is not a section")
    node[leaf] = yaml.safe_load(raw)


def load_train_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (optional) and apply ``key=value`` overrides (dotted keys for sections).

    Raises ConfigError listing every unknown, missing or invalid key at once.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: cannot read the config ({error})") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping of keys to values")
        values = loaded
    for override in overrides:
        key, separator, raw = override.partition("=")
        if not separator or not key:
            raise ConfigError(f"override {override!r} must look like key=value")
        _set_dotted(values, key.strip(), raw)
    try:
        config = TrainConfig.model_validate(values)
        config.network()
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"invalid training config{f' {path}' if path else ''}: {problems}") from error
    except ValueError as error:
        raise ConfigError(f"invalid training config{f' {path}' if path else ''}: {error}") from error
    return config
