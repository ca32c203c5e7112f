"""A training run's work folder mirrored to durable storage, so a retried step resumes where it stopped.

A Kubeflow step trains on pod-local disk, which a preempted or evicted pod takes with it; Kubeflow's
retry then starts the step again on a fresh pod. ``DurableWork`` copies every complete checkpoint and
the run record (which MLflow run the training logs to) to a durable URI (the step's own artifact
prefix on S3, which stays the same across retries of one task, or a folder on a volume) and brings
the newest back when the step starts again: the trainer's exact resume then continues from the last
finished epoch, and the tracking stage continues the same MLflow run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cloudlulc.io.storage import atomic_local_path, open_storage
from cloudlulc.training.checkpoints import CHECKPOINT_DIR, KEEP, PATTERN, list_checkpoints

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"
"""In the output folder: ``{"mlflow_run_id": ...}`` of the run these checkpoints belong to."""


def read_run_record(output_dir: str | Path) -> dict[str, str]:
    """The run record of ``output_dir``, or ``{}`` when the folder has none (a fresh run)."""
    path = Path(output_dir) / RUN_RECORD
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()))


def write_run_record(output_dir: str | Path, record: dict[str, str]) -> Path:
    """Write the run record atomically (a kill leaves the old record or the new one, never half)."""
    path = Path(output_dir) / RUN_RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_local_path(path) as temp_path:
        temp_path.write_text(json.dumps(record, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class DurableWork:
    """The newest checkpoints and the run record of ``output_dir``, kept at ``uri`` as well."""

    uri: str
    output_dir: Path

    def restore(self) -> int:
        """Bring the run record and the newest durable checkpoint into ``output_dir``; return its epoch (0: none)."""
        storage = open_storage(self.uri)
        if storage.exists(RUN_RECORD):
            write_run_record(self.output_dir, json.loads(storage.read_bytes(RUN_RECORD)))
        saved = self._durable_checkpoints()
        if not saved:
            return 0
        newest = saved[-1]
        local = self.output_dir / newest
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            with atomic_local_path(local) as temp_path:
                temp_path.write_bytes(storage.read_bytes(newest))
        epoch = int(PATTERN.search(newest).group(1))  # type: ignore[union-attr]  # listed by PATTERN
        log.info("restored checkpoint of epoch %d from %s", epoch, self.uri)
        return epoch

    def save_record(self) -> None:
        """Copy the run record to the durable URI (before the first epoch, so a retry finds the run)."""
        open_storage(self.uri).upload_file(self.output_dir / RUN_RECORD, RUN_RECORD)

    def save_newest(self) -> None:
        """Copy the newest complete checkpoint (if not there yet), then drop durable ones beyond the newest KEEP."""
        local = list_checkpoints(self.output_dir)
        if not local:
            return
        storage = open_storage(self.uri)
        key = f"{CHECKPOINT_DIR}/{local[-1].name}"
        storage.upload_file(local[-1], key)  # staged then renamed locally; one complete object on S3
        for old in self._durable_checkpoints()[:-KEEP]:
            storage.delete(old)

    def _durable_checkpoints(self) -> list[str]:
        keys = open_storage(self.uri).list(f"{CHECKPOINT_DIR}/")
        return sorted(k for k in keys if PATTERN.search(k.rsplit("/", 1)[-1]))
