"""Data validation with Great Expectations: rules, reports, quarantine."""

from cloudlulc.validation.report import Failure, ValidationReport, write_report
from cloudlulc.validation.scene_stacks import validate_scenes
from cloudlulc.validation.thresholds import SceneThresholds, Thresholds
from cloudlulc.validation.validate import validate_dataset

__all__ = [
    "Failure",
    "SceneThresholds",
    "Thresholds",
    "ValidationReport",
    "validate_dataset",
    "validate_scenes",
    "write_report",
]
