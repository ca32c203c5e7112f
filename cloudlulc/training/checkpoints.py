"""Per-epoch checkpoints: written atomically, found again on resume, never deleted when unreadable."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from cloudlulc.errors import DataError
from cloudlulc.io.storage import staged_output

CHECKPOINT_DIR = "checkpoints"
PATTERN = re.compile(r"epoch_(\d{4})\.pt$")
KEEP = 3
"""Checkpoints kept on disk (the newest); older ones are removed only after a newer one is complete."""


def checkpoint_path(output_dir: str | Path, epoch: int) -> Path:
    """Where the checkpoint written after ``epoch`` (1-based) lives."""
    return Path(output_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.pt"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary files of an interrupted write are not listed)."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if PATTERN.fullmatch(p.name))


def save_checkpoint(output_dir: str | Path, epoch: int, state: dict[str, Any]) -> Path:
    """Write atomically, then prune all but the newest KEEP checkpoints."""
    path = checkpoint_path(output_dir, epoch)
    with staged_output(str(path)) as temp_path:
        torch.save(state, temp_path)
    for old in list_checkpoints(output_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint; a corrupt file is a DataError naming it and the older checkpoints kept."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError... for damaged files
        older = [p.name for p in list_checkpoints(path.parent.parent) if p != path]
        kept = f"; older checkpoints kept: {', '.join(older)}" if older else ""
        raise DataError(str(path), f"checkpoint is corrupt or truncated ({type(error).__name__}){kept}. "
                        "Move it aside to resume from the previous one") from error  # fmt: skip
