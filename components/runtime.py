"""What every component needs at run time: its logging set up, its credentials checked first, its tracking settings.

On a cluster, credentials arrive as environment variables from Kubernetes secrets (never as pipeline
parameters) and endpoints from the ``cloudlulc-settings`` config map; a step that would need a secret
that is not there fails at its first line, naming the variable and the secret it comes from.
"""

from __future__ import annotations

import logging
import os

from cloudlulc.errors import CloudLULCError
from cloudlulc.logs import configure

log = logging.getLogger(__name__)
if os.environ.get("_KFP_RUNTIME") == "true":  # KFP's marker of a running step (a pod, or kfp.local's subprocess)
    configure()  # once per step: its body imports this module first; CLOUDLULC_LOG_LEVEL/_FORMAT from the env

S3_SECRET = "cloudlulc-s3"
"""Kubernetes secret with the object store's keys (see k8s/ and docs/deploy.md)."""
MLFLOW_SECRET = "cloudlulc-mlflow"
"""Kubernetes secret with the pipeline runner's MLflow basic-auth credentials (the cluster's MLflow requires them)."""
TRITON_SECRET = "cloudlulc-triton"
"""Kubernetes secret with the key of Triton's restricted model-repository protocol."""
SETTINGS_CONFIG_MAP = "cloudlulc-settings"
"""Kubernetes config map with endpoints: S3 endpoint URL, region, MLflow and Triton addresses."""

WORK_DIR_ENV = "CLOUDLULC_WORK_DIR"
"""Folder on a volume that outlives the pod (the ``cloudlulc-work`` claim), where a retried step resumes."""

S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
WEB_IDENTITY = "AWS_WEB_IDENTITY_TOKEN_FILE"
"""Set instead of keys where the cluster grants S3 access to the pod's service account (IRSA)."""


class MissingSecretError(CloudLULCError):
    """A step needs a credential that its environment does not carry."""

    exit_code = 4


def require_s3_credentials(*uris: str) -> None:
    """Fail fast when any of ``uris`` is on S3 and neither keys nor a web identity are in the environment."""
    if not any(uri.startswith("s3://") for uri in uris if uri):
        return
    if os.environ.get(WEB_IDENTITY):
        return
    missing = [key for key in S3_KEYS if not os.environ.get(key)]
    if missing:
        names = ", ".join(missing)
        raise MissingSecretError(
            f"missing secret: {names} not set; this step reads or writes s3:// and takes "
            f"them from the Kubernetes secret {S3_SECRET!r} (keys {names})"
        )


def tracking_uri_or_env(tracking_uri: str) -> str:
    """The given MLflow URI, else ``MLFLOW_TRACKING_URI`` (from the settings config map); one is required."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise MissingSecretError(
            f"no MLflow tracking URI: pass tracking_uri or set MLFLOW_TRACKING_URI (config map {SETTINGS_CONFIG_MAP!r})"
        )
    return uri


def durable_work_uri(artifact_uri: str) -> str | None:
    """Where a step keeps what a retry needs: beside its output artifact, whose URI Kubeflow fixes per task.

    Kubeflow's driver runs once per task and each retry reruns only the executor with the same
    output URIs, so ``<artifact URI>.work`` is the same folder for every attempt of one task and
    another for every other task or run. ``s3://`` and local roots (``kfp.local``) are supported; on
    another artifact store the step still runs, and a retry starts over.
    """
    uri = artifact_uri.rstrip("/")
    if uri.startswith("s3://") or uri.startswith("/"):
        return f"{uri}.work"
    log.warning("artifact store %s is neither s3:// nor local: a retried step starts over", uri.split("/")[0])
    return None
