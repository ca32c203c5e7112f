"""The model registry and the promotion gate.

Each trained model becomes a new version of the registered model with alias ``challenger``. The gate
compares challenger and ``champion`` on the same test split and moves ``champion`` only if mIoU rises
by a margin and no cloud-cover bin falls by more than a tolerance; with no champion yet, the
challenger must pass absolute thresholds. The decision and both metric sets are written as tags on
the challenger version. MLflow aliases are last-writer-wins, so the gate moves ``champion`` by a
compare-and-set of its own (``Registry.move_champion``) and refuses if another promotion happened meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cloudlulc.tracking.options import GateConfig
from cloudlulc.tracking.settings import ABSENT_ERROR_CODES, TrackingError
from cloudlulc.training.metrics import SegmentationMetrics

CHAMPION = "champion"
CHALLENGER = "challenger"
CLAIM_STALE_S = 120.0
"""Age after which a gate's claim on moving ``champion`` is taken to belong to a dead gate (a move takes < 1 s)."""
CLAIM_DOC = "Claim of the cloudlulc promotion gate while it moves the champion alias; deleted after the move."


class ChampionMovedError(TrackingError):
    """Another gate run moved (or is moving) ``champion`` since this gate read it."""


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, and why; with the challenger's test scores when the gate stage measured them."""

    promote: bool
    reason: str
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    """Flat test metrics (``test_miou``, ``test_bin_0_10_miou``...), names as MLflow logs them."""
    challenger_confusion: list[list[int]] = field(default_factory=list)
    """Test confusion matrix, rows the reference classes, columns the predictions."""


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, config: GateConfig) -> GateDecision:
    """Compare evaluation results (``overall`` and ``bins`` as from MetricAccumulator.result)."""
    new: SegmentationMetrics = challenger["overall"]
    if champion is None:
        if new.miou >= config.first_min_miou and new.overall_accuracy >= config.first_min_oa:
            return GateDecision(
                True,
                f"first champion: mIoU {new.miou:.4f} >= {config.first_min_miou}, "
                f"OA {new.overall_accuracy:.4f} >= {config.first_min_oa}",
            )
        return GateDecision(
            False,
            f"no champion yet and the challenger misses the absolute thresholds: mIoU "
            f"{new.miou:.4f} (needs {config.first_min_miou}), OA {new.overall_accuracy:.4f} "
            f"(needs {config.first_min_oa})",
        )
    old: SegmentationMetrics = champion["overall"]
    gain = new.miou - old.miou
    if gain < config.min_miou_gain:
        return GateDecision(
            False,
            f"mIoU {new.miou:.4f} vs champion {old.miou:.4f}: gain {gain:+.4f} below "
            f"the required {config.min_miou_gain}",
        )
    for label, metrics in challenger["bins"].items():
        if label in champion["bins"]:
            drop = champion["bins"][label].miou - metrics.miou
            if drop > config.max_bin_regression:
                return GateDecision(
                    False, f"cloud bin {label} regresses by {drop:.4f} mIoU (tolerance {config.max_bin_regression})"
                )
    return GateDecision(
        True,
        f"mIoU {new.miou:.4f} vs champion {old.miou:.4f} (gain {gain:+.4f}); no cloud bin "
        f"regresses beyond {config.max_bin_regression}",
    )


def _summary(result: dict[str, Any] | None) -> str:
    if result is None:
        return "none"
    overall: SegmentationMetrics = result["overall"]
    return json.dumps(
        {
            "oa": round(overall.overall_accuracy, 5),
            "miou": round(overall.miou, 5),
            "bins": {k: round(v.miou, 5) for k, v in result["bins"].items()},
        }
    )


class Registry:
    """Thin access to the MLflow registry for one registered model."""

    def __init__(self, tracking_uri: str, name: str) -> None:
        from mlflow import MlflowClient

        self.name = name
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def register_challenger(self, model_uri: str, run_id: str) -> str:
        """Add ``model_uri`` as a new version and point ``challenger`` at it; return the version."""
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            mlflow.set_registry_uri(self.tracking_uri)
            version = mlflow.register_model(model_uri, self.name, tags={"run_id": run_id}).version
            self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        except MlflowException as error:
            raise TrackingError(f"registry at {self.tracking_uri}: cannot register {model_uri}: {error}") from error
        return str(version)

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points at, or None when the model or the alias does not exist.

        Any other failure (a registry that times out or answers 5xx) is a TrackingError: read as "no
        champion", it would make the gate apply its first-champion rule and promote say "train a model first".
        """
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException as error:
            if error.error_code in ABSENT_ERROR_CODES:
                return None
            raise TrackingError(f"registry at {self.tracking_uri}: cannot read alias {alias!r}: {error}") from error

    def apply_gate(
        self,
        challenger_version: str,
        challenger: dict[str, Any],
        champion_version: str | None,
        champion: dict[str, Any] | None,
        config: GateConfig,
    ) -> GateDecision:
        """Decide, record the decision as tags, and move ``champion`` when it passes (compare-and-swap)."""
        decision = decide(challenger, champion, config)
        tags = {
            "gate.decision": "promoted" if decision.promote else "refused",
            "gate.reason": decision.reason,
            "gate.challenger_metrics": _summary(challenger),
            "gate.champion_metrics": _summary(champion),
            "gate.champion_version": champion_version or "none",
        }
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, challenger_version, key, value)
        if decision.promote:
            self.move_champion(champion_version, challenger_version)
        return decision

    def move_champion(self, expected: str | None, version: str) -> None:
        """Point ``champion`` at ``version`` only if it still points at ``expected``: a compare-and-set.

        MLflow aliases are last-writer-wins and its API has no conditional update, so the atomic step is
        the registry database's unique model name: each mover first creates the claim model
        ``<name>.champion-from-<expected>``; one creation succeeds, and only its maker re-reads the alias
        and moves it. The claim is deleted after the move; a gate that claims later finds the alias moved.

        Raises:
            ChampionMovedError: another gate run holds the claim, or champion no longer points at ``expected``.
        """
        claim = f"{self.name}.champion-from-{expected or 'none'}"
        token = uuid.uuid4().hex
        holder = self._claim(claim, token, f"challenger {version}, pid {os.getpid()} on {socket.gethostname()}")
        if holder is not None:
            raise ChampionMovedError(
                f"champion of {self.name} is already being moved from {expected or 'none'} by another gate run "
                f"({holder}); rerun the gate against the new champion"
            )
        try:
            current = self.alias_version(CHAMPION)
            if current != expected:
                raise ChampionMovedError(
                    f"champion of {self.name} moved from {expected} to {current} during the gate; "
                    "rerun the gate against the new champion"
                )
            self.client.set_registered_model_alias(self.name, CHAMPION, version)
        finally:
            self._release(claim)

    def _claim(self, claim: str, token: str, holder: str) -> str | None:
        """Create the claim model; None when this call made it, else who holds it.

        Any failure to create is settled by reading the claim back: a busy server may fail a request it
        carried out, or time out before it; only the token stored in the claim says whose it is. A claim
        older than CLAIM_STALE_S belongs to a gate that died before releasing it: it is removed and retried.
        """
        from mlflow.exceptions import MlflowException

        failure: Exception | None = None
        for _ in range(3):
            try:
                self.client.create_registered_model(
                    claim, tags={"token": token, "holder": holder}, description=CLAIM_DOC
                )
                return None
            except MlflowException as error:
                failure = None if error.error_code == "RESOURCE_ALREADY_EXISTS" else error
            try:
                existing = self.client.get_registered_model(claim)
            except MlflowException as error:
                failure = failure or error
                continue  # released meanwhile (or the server is busy): try again
            if existing.tags.get("token") == token:
                return None  # made by this call, though the answer said otherwise
            age_s = time.time() - existing.creation_timestamp / 1000
            if age_s < CLAIM_STALE_S:
                return f"{existing.tags.get('holder', 'unknown')}, since {age_s:.0f} s"
            self._release(claim)
        raise TrackingError(
            f"registry at {self.tracking_uri}: cannot claim {claim}: {failure or 'the claim keeps being replaced'}"
        )

    def _release(self, claim: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # already gone: a stale claim cleaned up by another gate run
            self.client.delete_registered_model(claim)
