"""Per-epoch checkpoints: written atomically, found again on resume, never deleted when unreadable."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from cloudlulc.errors import DataError
from cloudlulc.io.filekind import describe_file
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
    """Load a checkpoint without running code from it; refuse what is not one, naming the file.

    ``weights_only=True`` restricts unpickling to tensors and plain containers, so a crafted file
    cannot execute anything. A corrupt file is a DataError naming it and the older checkpoints kept.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's concern
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError... for damaged files
        kind = describe_file(path)
        if kind:
            raise DataError(str(path), f"is {kind}, not a training checkpoint (.pt)") from None
        if isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error):
            raise DataError(
                str(path),
                "refused: the file holds Python objects other than tensors and plain "
                "values (nothing in it was run); a CloudLULC checkpoint holds only weights and "
                "settings",
            ) from None
        raise _corrupt(path, error) from error
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or "network" not in state:
        raise DataError(str(path), "not a CloudLULC checkpoint: expected the keys 'model' (weights) and 'network'")
    return state


def _corrupt(path: Path, error: Exception) -> DataError:
    older = [p.name for p in list_checkpoints(path.parent.parent) if p != path]
    kept = f"; older checkpoints kept: {', '.join(older)}" if older else ""
    return DataError(
        str(path),
        f"checkpoint is corrupt or truncated ({type(error).__name__}){kept}. "
        "Move it aside to resume from the previous one",
    )
