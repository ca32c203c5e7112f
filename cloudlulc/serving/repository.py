"""A Triton model repository in a folder or under ``s3://``: integer versions, published whole.

Each version is one model file, plus a ``golden.npz`` check sample and a ``model.json`` of facts for
the promotion that follows. The model file is written atomically (rename / single PUT) and only when
its version number is still free (create-only), so a server that reads the repository at any moment
sees either the complete model or none of it, and two publishers never share a number.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloudlulc.errors import StorageError
from cloudlulc.io.storage import Storage, open_storage
from cloudlulc.serving.model_config import MODEL_FILES, ServingSettings, render_config

GOLDEN_FILE = "golden.npz"
FACTS_FILE = "model.json"


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
        with np.load(io.BytesIO(data)) as archive:
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

    def write_config(self, model: str, settings: ServingSettings | None = None) -> None:
        """Write ``config.pbtxt`` when it is missing or differs."""
        text = render_config(model, settings).encode()
        key = f"{model}/config.pbtxt"
        if not self.storage.exists(key) or self.storage.read_bytes(key) != text:
            self.storage.write_bytes(key, text)

    def publish(self, model: str, model_file: Path, golden: GoldenSample, facts: dict[str, object],
                settings: ServingSettings | None = None) -> int:  # fmt: skip
        """Add ``model_file`` as the next version of ``model``; return the version number."""
        if not model_file.is_file():
            raise StorageError(f"{model_file}: model file to publish not found")
        self.write_config(model, settings)
        payload = model_file.read_bytes()
        version = (self.versions(model) or [0])[-1] + 1
        while not self.storage.write_bytes(f"{model}/{version}/{MODEL_FILES[model]}", payload, if_absent=True):
            version += 1  # another publisher took this number first
        folder = f"{model}/{version}"
        self.storage.write_bytes(f"{folder}/{GOLDEN_FILE}", golden.to_bytes())
        facts_text = json.dumps({**facts, "model": model, "version": version}, indent=2, default=str) + "\n"
        self.storage.write_bytes(f"{folder}/{FACTS_FILE}", facts_text.encode())
        return version

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
