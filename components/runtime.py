"""What every component needs at run time: its credentials checked first, its tracking settings.

On a cluster, credentials arrive as environment variables from Kubernetes secrets (never as pipeline
parameters) and endpoints from the ``cloudlulc-settings`` config map; a step that would need a secret
that is not there fails at its first line, naming the variable and the secret it comes from.
"""

from __future__ import annotations

import os

from cloudlulc.errors import CloudLULCError

S3_SECRET = "cloudlulc-s3"
"""Kubernetes secret with the object store's keys (see k8s/ and docs/deploy.md)."""
MLFLOW_SECRET = "cloudlulc-mlflow"
"""Optional Kubernetes secret with MLflow basic-auth credentials."""
TRITON_SECRET = "cloudlulc-triton"
"""Kubernetes secret with the key of Triton's restricted model-repository protocol."""
SETTINGS_CONFIG_MAP = "cloudlulc-settings"
"""Kubernetes config map with endpoints: S3 endpoint URL, region, MLflow and Triton addresses."""

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
