"""Data validation with Great Expectations: rules, reports, quarantine."""

from cloudlulc.validation.report import Failure, ValidationReport, write_report
from cloudlulc.validation.scenes import SceneThresholds, validate_scenes
from cloudlulc.validation.suites import Thresholds
from cloudlulc.validation.validate import assert_valid, validate_dataset

__all__ = [
    "Failure",
    "SceneThresholds",
    "Thresholds",
    "ValidationReport",
    "assert_valid",
    "validate_dataset",
    "validate_scenes",
    "write_report",
]
