"""Where a run came from: code revision, package version and the Kubeflow run, as MLflow tags.

MLflow sets ``mlflow.source.git.commit`` by itself only for a script run from a git checkout; a
container has no checkout, so images carry the commit in ``CLOUDLULC_GIT_COMMIT`` (a build argument)
and Kubeflow steps pass their run id in ``CLOUDLULC_KFP_RUN_ID``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cloudlulc

GIT_COMMIT_ENV = "CLOUDLULC_GIT_COMMIT"
KFP_RUN_ID_ENV = "CLOUDLULC_KFP_RUN_ID"


def git_commit() -> str | None:
    """The commit the code was built from: the environment's, else the checkout's, else None."""
    if (commit := os.environ.get(GIT_COMMIT_ENV, "")) and commit != "unknown":  # an image built without REVISION
        return commit
    source = Path(cloudlulc.__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def provenance_tags() -> dict[str, str]:
    """MLflow tags of this process: package version, git commit, Kubeflow run (those that are known)."""
    tags = {"cloudlulc.version": cloudlulc.__version__}
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    if run_id := os.environ.get(KFP_RUN_ID_ENV):
        tags["kubeflow.run_id"] = run_id
    return tags


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run, for links from Kubeflow (None for a local store: there is no page)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
