"""The model registry and the promotion gate.

Each trained model becomes a new version of the registered model with alias ``challenger``. The gate
compares challenger and ``champion`` on the same test split and moves ``champion`` only if mIoU rises
by a margin and no cloud-cover bin falls by more than a tolerance; with no champion yet, the
challenger must pass absolute thresholds. The decision and both metric sets are written as tags on
the challenger version. MLflow aliases are last-writer-wins, so the gate re-reads ``champion`` just
before moving it and refuses if another promotion happened meanwhile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloudlulc.tracking.settings import TrackingError
from cloudlulc.training.metrics import SegmentationMetrics

CHAMPION = "champion"
CHALLENGER = "challenger"


class GateConfig(BaseModel):
    """Thresholds of the promotion gate: the one place their defaults, ranges and descriptions live.

    ``cloudlulc evaluate --gate`` options and the training pipeline's parameters are derived from these fields.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_miou_gain: float = Field(
        0.005, ge=0, le=1, description="Test mIoU gain the challenger needs over the champion."
    )
    max_bin_regression: float = Field(0.02, ge=0, le=1, description="Largest mIoU drop allowed in any cloud bin.")
    first_min_miou: float = Field(0.2, ge=0, le=1, description="Test mIoU a first champion needs.")
    first_min_oa: float = Field(0.4, ge=0, le=1, description="Test OA a first champion needs.")


@dataclass(frozen=True)
class GateDecision:
    """Whether to promote, and why."""

    promote: bool
    reason: str


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
        """The version an alias points at, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

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
            current = self.alias_version(CHAMPION)
            if current != champion_version:
                raise TrackingError(
                    f"champion of {self.name} moved from {champion_version} to {current} during the "
                    "gate; rerun the gate against the new champion"
                )
            self.client.set_registered_model_alias(self.name, CHAMPION, challenger_version)
        return decision
