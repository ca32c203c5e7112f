"""Where runs and models are tracked: the URI, the experiment, the registered model name.

The embedded default is a local SQLite store with a local artifact folder; an ``http(s)://`` URI
points at an MLflow server (checked before any work starts, so a wrong URI fails fast).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cloudlulc.errors import CloudLULCError

DEFAULT_STORE = Path("outputs/mlflow")


class TrackingError(CloudLULCError):
    """The tracking server or registry cannot be reached or refused a request."""

    exit_code = 4


class TrackingSettings(BaseModel):
    """MLflow coordinates of a run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str = Field(default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI", default_tracking_uri()))
    experiment: str = Field("cloudlulc", description="Experiment the runs are grouped in.")
    registered_model: str = Field("cloudlulc", description="Registered model that versions are added to.")
    artifact_root: str | None = Field(None, description="Artifact folder for a local store (default beside it).")

    def artifact_location(self) -> str | None:
        """Artifact folder for new experiments: the configured one, else beside a local SQLite store."""
        if self.artifact_root:
            return self.artifact_root
        if self.tracking_uri.startswith("sqlite:///"):
            return (Path(self.tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
        return None


def default_tracking_uri(store: Path = DEFAULT_STORE) -> str:
    """SQLite tracking store under ``store`` (created on first use)."""
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store.resolve() / 'mlflow.db'}"


def ensure_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URI, when an MLflow server does not answer its health check."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        response = requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
        response.raise_for_status()
    except requests.RequestException as error:
        raise TrackingError(f"MLflow tracking server {tracking_uri} is unreachable: {error}") from error
