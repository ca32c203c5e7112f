"""MLflow tracking, the model registry and the promotion gate."""

from cloudlulc.tracking.registry import CHALLENGER, CHAMPION, GateConfig, GateDecision, Registry, decide
from cloudlulc.tracking.settings import TrackingError, TrackingSettings, ensure_reachable
from cloudlulc.tracking.stages import TrainStageResult, load_registered_network, run_gate_stage, run_train_stage

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
