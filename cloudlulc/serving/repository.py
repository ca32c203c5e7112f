"""A Triton model repository in a folder or under ``s3://``: integer versions, published whole.

Each version is one model file, plus a ``golden.npz`` check sample and a ``model.json`` of facts for
the promotion that follows (and, for ``cloudlulc_cpu``, the Python backend's ``model.py``). The model
file is written atomically (rename / single PUT) and only when its version number is still free
(create-only), so a server that reads the repository at any moment sees either the complete model or
none of it, and two publishers never share a number. At the root, beside the model folders (Triton
reads folders only, and reloads every version of a model whose folder holds a changed file),
``<model>.served.json`` names the version that passed its golden check (what clients pin), and
``.<model>.promotion.lock`` serializes promoters: Triton loads a model twice when two load calls
overlap (triton-inference-server/server #7018).
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cloudlulc.errors import ServingError, StorageError
from cloudlulc.io.storage import Storage, holder_gone, is_s3_uri, open_storage
from cloudlulc.serving.model_config import (
    ADAPTER_FILE,
    CPU_MODEL,
    MODEL_FILES,
    WARMUP_FOLDER,
    ServingSettings,
    render_config,
)

GOLDEN_FILE = "golden.npz"
FACTS_FILE = "model.json"
SERVED_SUFFIX = ".served.json"
LOCK_SUFFIX = ".promotion.lock"


def adapter_source() -> bytes:
    """The ``model.py`` every ``cloudlulc_cpu`` version carries (``cloudlulc/serving/triton_model.py``)."""
    return resources.files("cloudlulc.serving").joinpath("triton_model.py").read_bytes()


def warmup_arrays(golden: GoldenSample, tile: int) -> dict[str, np.ndarray]:
    """The golden sample's first item wrapped (or cropped) to ``tile`` x ``tile``: Triton's warmup inputs."""
    arrays = {}
    for name, array in (("optical", golden.optical[0]), ("sar", golden.sar[0])):
        rows, cols = array.shape[1:]
        wrapped = np.pad(array, ((0, 0), (0, max(0, tile - rows)), (0, max(0, tile - cols))), mode="wrap")
        arrays[name] = np.ascontiguousarray(wrapped[:, :tile, :tile], dtype=np.float32)
    return arrays


@dataclass(frozen=True)
class GoldenSample:
    """A fixed input and the output the promoted model must reproduce for it."""

    optical: np.ndarray
    sar: np.ndarray
    expected: np.ndarray

    def to_bytes(self) -> bytes:
        """As an ``.npz`` archive."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, optical=self.optical, sar=self.sar, expected=self.expected)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> GoldenSample:
        """From an ``.npz`` archive."""
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return cls(archive["optical"], archive["sar"], archive["expected"])


class ModelRepository:
    """The served models' folders, versions and configs under one root."""

    def __init__(self, uri: str, storage: Storage | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.storage = storage or open_storage(self.uri)

    def versions(self, model: str) -> list[int]:
        """Complete versions of ``model`` (those whose model file exists), ascending."""
        found = set()
        for key in self.storage.list(f"{model}/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[1].isdigit() and parts[2] == MODEL_FILES[model]:
                found.add(int(parts[1]))
        return sorted(found)

    def write_config(self, model: str, golden: GoldenSample, settings: ServingSettings | None = None) -> None:
        """Write ``config.pbtxt`` when it is missing or differs, and the warmup inputs when missing."""
        settings = settings or ServingSettings()
        for name, array in warmup_arrays(golden, settings.warmup_tile).items():
            if not self.storage.exists(f"{model}/{WARMUP_FOLDER}/{name}"):
                self.storage.write_bytes(f"{model}/{WARMUP_FOLDER}/{name}", array.tobytes())
        text = render_config(model, settings).encode()
        key = f"{model}/config.pbtxt"
        if not self.storage.exists(key) or self.storage.read_bytes(key) != text:
            self.storage.write_bytes(key, text)

    def config_text(self, model: str) -> str:
        """The repository's ``config.pbtxt`` of ``model``."""
        key = f"{model}/config.pbtxt"
        if not self.storage.exists(key):
            raise ServingError(f"{self.storage.join(key)}: model folder without config.pbtxt")
        return self.storage.read_bytes(key).decode()

    def publish(
        self,
        model: str,
        model_file: Path,
        golden: GoldenSample,
        facts: dict[str, object],
        settings: ServingSettings | None = None,
    ) -> int:
        """Add ``model_file`` as the next version of ``model``; return the version number."""
        if not model_file.is_file():
            raise StorageError(f"{model_file}: model file to publish not found")
        self.write_config(model, golden, settings)
        payload = model_file.read_bytes()
        version = (self.versions(model) or [0])[-1] + 1
        while not self.storage.write_bytes(f"{model}/{version}/{MODEL_FILES[model]}", payload, if_absent=True):
            version += 1  # another publisher took this number first
        folder = f"{model}/{version}"
        if model == CPU_MODEL:
            self.storage.write_bytes(f"{folder}/{ADAPTER_FILE}", adapter_source())
        self.storage.write_bytes(f"{folder}/{GOLDEN_FILE}", golden.to_bytes())
        facts_text = json.dumps({**facts, "model": model, "version": version}, indent=2, default=str) + "\n"
        self.storage.write_bytes(f"{folder}/{FACTS_FILE}", facts_text.encode())
        return version

    def unchecked_versions(self, model: str) -> list[int]:
        """Versions newer than the served one: left by a promotion killed before its golden check ended.

        A promotion publishes its version and, under the promotion lock, either marks it served or
        removes it; so a newer version found under that lock was never checked, and must not be loaded
        (Triton's ``latest 2`` policy would load it and unload the last checked one).
        """
        served = self.served_version(model) or 0
        return [version for version in self.versions(model) if version > served]

    def remove_version(self, model: str, version: int) -> None:
        """Delete a version (model file first, so it stops being a version at once)."""
        folder = f"{model}/{version}"
        self.storage.delete(f"{folder}/{MODEL_FILES[model]}")
        for key in self.storage.list(f"{folder}/"):
            self.storage.delete(key)

    def golden(self, model: str, version: int) -> GoldenSample:
        """The golden sample published with a version."""
        return GoldenSample.from_bytes(self.storage.read_bytes(f"{model}/{version}/{GOLDEN_FILE}"))

    def model_uri(self, model: str, version: int) -> str:
        """Path or URI of a version's model file (for a local server to load)."""
        return self.storage.join(f"{model}/{version}/{MODEL_FILES[model]}")

    def served_version(self, model: str) -> int | None:
        """The version whose golden check passed last (what clients pin), or None before the first."""
        record = self.served_record(model)
        return None if record is None else int(record["version"])

    def served_record(self, model: str) -> dict[str, Any] | None:
        """The served-version record (version, registered model and version, since), or None before the first."""
        key = f"{model}{SERVED_SUFFIX}"
        if not self.storage.exists(key):
            return None
        try:
            record = json.loads(self.storage.read_bytes(key))
            int(record["version"])
        except (ValueError, KeyError, TypeError) as error:
            raise ServingError(f"{self.storage.join(key)}: not a served-version record ({error})") from None
        return dict(record)

    def mark_served(self, model: str, version: int, facts: dict[str, object]) -> None:
        """Record ``version`` as the one clients pin (one atomic write)."""
        record = {
            **facts,
            "model": model,
            "version": version,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.storage.write_bytes(f"{model}{SERVED_SUFFIX}", (json.dumps(record, indent=2) + "\n").encode())

    @contextmanager
    def promotion_lock(self, model: str, *, wait_s: float = 900.0, stale_s: float = 1800.0) -> Iterator[None]:
        """Hold ``.<model>.promotion.lock`` (create-only) so one promoter at a time loads ``model``.

        A lock whose holder ran on this host and is gone (a killed promotion), or older than ``stale_s``
        (a holder elsewhere that died), is broken; waiting longer than ``wait_s`` fails, naming the holder.
        """
        key = f".{model}{LOCK_SUFFIX}"
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": os.urandom(8).hex()}
        deadline = time.monotonic() + wait_s
        while True:
            payload = json.dumps({**owner, "since": time.time()}).encode()
            if self.storage.write_bytes(key, payload, if_absent=True):
                break
            try:
                holder = json.loads(self.storage.read_bytes(key))
            except (StorageError, ValueError):
                holder = {}  # released (or half written) meanwhile: try again
            if holder and _lock_stale(holder, stale_s):
                self.storage.delete(key)
                continue
            if time.monotonic() > deadline:
                raise ServingError(
                    f"{self.storage.join(key)}: another promotion of {model} holds the lock "
                    f"({holder.get('host')} pid {holder.get('pid')}) after {wait_s:.0f} s"
                )
            time.sleep(0.2)
        try:
            yield
        finally:
            self.storage.delete(key)

    def check(self, models: list[str] | None = None) -> list[str]:
        """The served models the repository holds, after checking its layout; ServingError naming the fault.

        Checked: the root is readable, every model folder has ``config.pbtxt``, every version folder is
        an integer with its model file.
        """
        if not is_s3_uri(self.uri):
            root = Path(self.uri)
            if not root.is_dir() or not os.access(root, os.R_OK | os.X_OK):
                raise ServingError(f"{root}: model repository is not a readable folder")
        try:
            keys = self.storage.list("")
        except StorageError as error:
            raise ServingError(f"model repository unreadable: {error}") from None
        found: dict[str, set[str]] = {}
        for key in keys:
            parts = key.split("/")
            if len(parts) >= 2:
                found.setdefault(parts[0], set()).add("/".join(parts[1:]))
        names = sorted(found) if models is None else models
        for model in names:
            files = found.get(model)
            if not files:
                raise ServingError(f"{self.storage.join(model)}: no such model folder in the repository")
            if "config.pbtxt" not in files:
                raise ServingError(f"{self.storage.join(model)}: model folder without config.pbtxt")
            for entry in sorted({f.split("/")[0] for f in files if "/" in f} - {WARMUP_FOLDER}):
                if not entry.isdigit() or int(entry) < 1:
                    raise ServingError(
                        f"{self.storage.join(f'{model}/{entry}')}: version folder is not a positive integer"
                    )
                if model in MODEL_FILES and f"{entry}/{MODEL_FILES[model]}" not in files:
                    raise ServingError(
                        f"{self.storage.join(f'{model}/{entry}')}: version {entry} has no {MODEL_FILES[model]}"
                    )
        return names


def _lock_stale(holder: dict[str, Any], stale_s: float) -> bool:
    """Whether a promotion lock's holder is gone: a dead process on this host, or a lock older than ``stale_s``."""
    return holder_gone(holder.get("host"), holder.get("pid"), float(holder.get("since", 0)), stale_s)
