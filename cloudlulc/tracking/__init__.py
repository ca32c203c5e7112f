"""MLflow tracking, the model registry and the promotion gate.

Names are imported on first use (:mod:`cloudlulc.lazy`): the gate's options and the tracking settings
are read without MLflow and torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudlulc.lazy import lazy_names

if TYPE_CHECKING:
    from cloudlulc.tracking.options import GateConfig
    from cloudlulc.tracking.registry import CHALLENGER, CHAMPION, GateDecision, Registry, decide
    from cloudlulc.tracking.settings import TrackingError, TrackingSettings, ensure_reachable
    from cloudlulc.tracking.stages import TrainStageResult, load_registered_network, run_gate_stage, run_train_stage

__getattr__ = lazy_names(
    __name__,
    {
        "options": ["GateConfig"],
        "registry": ["CHALLENGER", "CHAMPION", "GateDecision", "Registry", "decide"],
        "settings": ["TrackingError", "TrackingSettings", "ensure_reachable"],
        "stages": ["TrainStageResult", "load_registered_network", "run_gate_stage", "run_train_stage"],
    },
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GateConfig",
    "GateDecision",
    "Registry",
    "TrackingError",
    "TrackingSettings",
    "TrainStageResult",
    "decide",
    "ensure_reachable",
    "load_registered_network",
    "run_gate_stage",
    "run_train_stage",
]
