"""Relative dates of recurring mapping runs: ``cloudlulc.products.schedule`` and the parameters that allow them.

No ``from __future__ import annotations`` here: kfp reads the annotations of the local-run test's pipeline.
"""

import logging
from datetime import date
from pathlib import Path

import pytest
from kfp import dsl, local

from cloudlulc.errors import UsageError
from cloudlulc.products.schedule import resolve_window, scheduled_day
from components.images import CPU_IMAGE
from components.parameters import MappingParams, ParameterError, TrainingParams, checked

TODAY = date(2026, 12, 1)


class _Kept(logging.Handler):
    """Keeps the records it is given (the tests run with -p no:logging: no caplog)."""

    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    ("scheduled", "day"),
    [
        ("2026-06-29T06:00:00Z", date(2026, 6, 29)),
        ("2026-06-29T06:00:00.123456789Z", date(2026, 6, 29)),  # Go's RFC3339Nano
        ("2026-06-29t23:59:59z", date(2026, 6, 29)),
        ("2026-06-29T23:30:00-02:00", date(2026, 6, 30)),  # the UTC day, not the local one
        ("2026-06-30T01:00:00+02:00", date(2026, 6, 29)),
        (" 2026-06-29T06:00:00Z\n", date(2026, 6, 29)),
        ("2026-06-29T06:00:00", date(2026, 6, 29)),  # no offset: UTC, as the placeholder's name says
        ("", None),
        ("{{$.pipeline_job_schedule_time_utc}}", None),  # kfp.local leaves the placeholder as it is
        ("1970-01-01T00:00:00Z", None),  # a scheduler's zero time, not a schedule
        ("0001-01-01T00:00:00Z", None),
        ("next monday", None),
    ],
)
def test_scheduled_day_is_the_utc_day_or_none(scheduled: str, day: date | None):
    assert scheduled_day(scheduled) == day


def test_empty_dates_are_the_scheduled_day_and_the_window_before_it():
    assert resolve_window("", "", 15, "2026-06-29T06:00:00Z", today=TODAY) == (date(2026, 6, 14), date(2026, 6, 29))
    assert resolve_window("", "", 0, "2026-06-29T06:00:00Z", today=TODAY) == (date(2026, 6, 29), date(2026, 6, 29))
    # a weekly schedule: each run its own week, whatever the dates the schedule was created with
    runs = [resolve_window("", "", 7, f"2026-07-{day:02d}T06:00:00Z") for day in (6, 13, 20)]
    assert [last for _, last in runs] == [date(2026, 7, 6), date(2026, 7, 13), date(2026, 7, 20)]
    assert [first for first, _ in runs] == [date(2026, 6, 29), date(2026, 7, 6), date(2026, 7, 13)]


def test_given_dates_win_over_the_schedule():
    scheduled = "2026-06-29T06:00:00Z"
    assert resolve_window("2026-06-01", "2026-06-10", 15, scheduled) == (date(2026, 6, 1), date(2026, 6, 10))
    assert resolve_window("", "2026-06-10", 5, scheduled) == (date(2026, 6, 5), date(2026, 6, 10))
    assert resolve_window("2026-06-01", "", 5, scheduled) == (date(2026, 6, 1), date(2026, 6, 29))


@pytest.mark.parametrize("scheduled", ["", "{{$.pipeline_job_schedule_time_utc}}", "soon", "1970-01-01T00:00:00Z"])
def test_no_scheduled_time_falls_back_on_today_saying_so(scheduled: str):
    handler = _Kept(logging.WARNING)
    logger = logging.getLogger("cloudlulc.products.schedule")
    logger.addHandler(handler)
    try:
        assert resolve_window("", "", 10, scheduled, today=TODAY) == (date(2026, 11, 21), TODAY)
        assert resolve_window("", "", 10, "2026-06-29T06:00:00Z", today=TODAY)[1] == date(2026, 6, 29)
    finally:
        logger.removeHandler(handler)
    (record,) = handler.records  # the scheduled run says nothing at warning level
    assert "today" in record.getMessage() and str(TODAY) in record.getMessage()


def test_today_defaults_to_the_current_utc_day():
    from datetime import UTC, datetime

    before = datetime.now(UTC).date()
    _, last = resolve_window("", "", 3, "")
    assert before <= last <= datetime.now(UTC).date()


@pytest.mark.parametrize(
    ("start", "end", "window_days", "match"),
    [
        ("2026-07-01", "", 15, r"start 2026-07-01 is after end 2026-06-29 \(the run's scheduled day\)"),
        ("2026-07-01", "2026-06-01", 15, "start 2026-07-01 is after end 2026-06-01"),
        ("", "30/06/2026", 15, "end must be a date YYYY-MM-DD, got '30/06/2026'"),
        ("June", "", 15, "start must be a date"),
        ("", "", -1, "window_days must be >= 0"),
    ],
)
def test_bad_dates_are_refused_naming_them(start: str, end: str, window_days: int, match: str):
    with pytest.raises(UsageError, match=match) as raised:
        resolve_window(start, end, window_days, "2026-06-29T06:00:00Z")
    assert raised.value.exit_code == 2


def test_mapping_dates_may_be_empty_and_are_by_default():
    assert (MappingParams().start, MappingParams().end) == ("", "")
    for values in ({}, {"start": "", "end": ""}, {"end": "2026-06-30"}, {"start": "2026-06-01"}):
        checked(MappingParams, values)
    fixed = checked(MappingParams, {"start": "2026-06-01", "end": "2026-06-30"})
    assert (fixed.start, fixed.end) == ("2026-06-01", "2026-06-30")


@pytest.mark.parametrize(
    ("model", "values", "named"),
    [
        (MappingParams, {"start": "2026-07-01", "end": "2026-06-01"}, "start 2026-07-01 is after end"),
        (MappingParams, {"end": "tomorrow"}, "parameter 'end': must be a date YYYY-MM-DD"),
        (MappingParams, {"start": "2026-6-1"}, "parameter 'start': must be a date YYYY-MM-DD"),
        (TrainingParams, {"start": ""}, "parameter 'start': must be a date YYYY-MM-DD"),  # training: fixed dates
        (TrainingParams, {"end": ""}, "parameter 'end'"),
    ],
)
def test_non_empty_dates_are_still_checked(model: type, values: dict[str, str], named: str):
    with pytest.raises(ParameterError, match=named):
        checked(model, values)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def _echo_scheduled(scheduled: str) -> str:
    return scheduled


@dsl.pipeline
def _scheduled_echo() -> str:
    return _echo_scheduled(scheduled=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER).output


def test_local_runs_see_no_schedule_time(tmp_path: Path):
    """kfp.local fails on the schedule-time placeholder (kubeflow/pipelines#13424); local runs mend it."""
    from pipelines.local import local_runs_without_schedule_time

    local_runs_without_schedule_time()
    local_runs_without_schedule_time()  # twice changes nothing
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    seen = _scheduled_echo().output
    assert seen == "" or scheduled_day(seen) is not None  # a kfp that resolves it itself gives a time
    first, last = resolve_window("", "", 15, seen)
    assert (last - first).days == 15
