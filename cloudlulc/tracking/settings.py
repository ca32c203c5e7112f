"""Where runs and models are tracked: the URI, the experiment, the registered model name.

The embedded default is a local SQLite store with a local artifact folder; an ``http(s)://`` URI
points at an MLflow server (checked before any work starts, so a wrong URI fails fast).

MLflow's own HTTP defaults (120 s per try, 8 tries, waits up to 120 s) let one request to a server that
accepts connections but never answers hang about 20 minutes. Importing this module (every module of the
project that talks to MLflow does, before its first call) sets the project's bounds in ``os.environ``
wherever the user has not set them: MLflow 3 reads these variables on every request
(``mlflow.utils.rest_utils.http_request``), not once at import, so they hold for calls made after
``mlflow`` itself was imported, and a value the user exports (or sets later in the process) wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cloudlulc.errors import CloudLULCError

DEFAULT_STORE = Path("outputs/mlflow")

MLFLOW_HTTP_DEFAULTS: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
}
"""The project's MLflow request bounds, used where the environment does not set them.

* ``MLFLOW_HTTP_REQUEST_TIMEOUT`` 15 s: the requests timeout, i.e. the longest silence on one socket
  operation (connect, each send, each read), not the length of a transfer: an artifact upload of any
  size that keeps moving is unaffected. A server answering loopback calls in < 1 s gets 15x that; it
  also bounds the server's own work after the last byte of an upload (a proxied artifact stored onward).
* ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 3 (4 tries) with ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` 2: urllib3
  waits 0, 4, 8 s (+ up to 1 s jitter each after the first) between tries, so a server that refuses
  connections or answers 503 for about 12 s while it restarts is ridden out.

Worst case for one request to a blackholed server: 4 x 15 s + 12-14 s ≈ 74 s
(:func:`mlflow_request_deadline_s`). A run that fails mid-way makes one more request (MLflow ends it
FAILED), so a stage past its health check fails with exit 4 within about 2.5 minutes.
"""


def apply_mlflow_http_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`MLFLOW_HTTP_DEFAULTS` where unset (a user's value wins); return what was set now."""
    target = os.environ if environ is None else environ
    added = {name: value for name, value in MLFLOW_HTTP_DEFAULTS.items() if name not in target}
    target.update(added)
    return added


def mlflow_request_deadline_s(environ: Mapping[str, str] | None = None, *, jitter_s: float = 1.0) -> float:
    """Seconds one MLflow request may take against a server that never answers, under ``environ``'s settings.

    Every try waits out the timeout; urllib3 waits 0 s after the first failure, then
    ``factor * 2 ** (n - 1)`` (+ jitter, capped at 120 s) after the n-th.
    """
    values = {**MLFLOW_HTTP_DEFAULTS, **{k: v for k, v in (environ or os.environ).items() if k in MLFLOW_HTTP_DEFAULTS}}
    timeout = float(values["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    retries = int(values["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    factor = float(values["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    waits = [min(120.0, factor * 2 ** (n - 1) + jitter_s) for n in range(2, retries + 1)]
    return (retries + 1) * timeout + sum(waits)


apply_mlflow_http_defaults()


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


ABSENT_ERROR_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
"""MLflow error codes that mean "no such run, model or alias" (MLflow answers a missing alias with the second)."""


def ensure_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the URI, when an MLflow server does not answer its health check.

    Also (re)applies the project's MLflow request bounds, so the calls that follow are bounded even if
    something removed them from the environment since import.
    """
    apply_mlflow_http_defaults()
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        response = requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
        response.raise_for_status()
    except requests.RequestException as error:
        raise TrackingError(f"MLflow tracking server {tracking_uri} is unreachable: {error}") from error
