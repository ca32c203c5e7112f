"""Relative dates of a recurring mapping run: which days it ingests and which target date it maps.

A recurring run must map the newest date, not the fixed ``start``/``end`` it was created with, so the
mapping pipeline's dates may be left empty: ``end`` is then the day the run was scheduled for (UTC),
``start`` that day less ``window_days``. Every step of a run resolves its dates here, from the same
scheduled time, so they agree on the window; a rerun of a scheduled run resolves the same dates, and
the product of a date already in the catalogue is not built again.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

from cloudlulc.errors import UsageError

logger = logging.getLogger(__name__)

_UNSET_BEFORE = date(1971, 1, 1)
"""Scheduled times before this are a scheduler's zero value (Unix epoch, Go's year 1), not a real schedule."""


def scheduled_day(scheduled: str) -> date | None:
    """The UTC day of an RFC 3339 time (Kubeflow's schedule time), or None when ``scheduled`` is not one.

    Kubeflow fills ``{{$.pipeline_job_schedule_time_utc}}`` for a recurring run (its create time for a
    manual one); a local run gets an empty value, and an older Kubeflow the placeholder text itself
    (kubeflow/pipelines#12616), or a zero time: those are None.
    """
    text = scheduled.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.upper())  # RFC 3339 allows "t" and "z"
    except ValueError:
        return None
    if moment.tzinfo is None:  # no offset: the placeholder's name says UTC
        moment = moment.replace(tzinfo=UTC)
    day = moment.astimezone(UTC).date()
    return day if day >= _UNSET_BEFORE else None


def resolve_window(
    start: str, end: str, window_days: int, scheduled: str, today: date | None = None
) -> tuple[date, date]:
    """The first and last acquisition days of a run; the last is the product's target date.

    Args:
        start: First day, YYYY-MM-DD; empty = the last day less ``window_days``.
        end: Last day, YYYY-MM-DD; empty = the UTC day of ``scheduled``, or today (UTC) when
            ``scheduled`` is empty, an unresolved placeholder or not a time (a manual or local run).
        window_days: Days before the last day that feed a product (``ProductOptions.window_days``).
        scheduled: The run's scheduled time, RFC 3339 (``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER``).
        today: The fallback day; the current UTC day by default (tests pin it).

    Raises:
        UsageError: a date that is not YYYY-MM-DD, a negative window, or a first day after the last.
    """
    if window_days < 0:
        raise UsageError(f"window_days must be >= 0, got {window_days}")
    last = _day("end", end) if end else None
    if last is None:
        last = scheduled_day(scheduled)
        if last is not None:
            logger.info("end: the scheduled day %s (scheduled time %s)", last, scheduled.strip())
        else:
            last = today or datetime.now(UTC).date()
            logger.warning(
                "end: no scheduled time (got %r): today's date, %s (UTC), stands in for the scheduled day",
                scheduled,
                last,
            )
    first = _day("start", start) if start else last - timedelta(days=window_days)
    if first > last:
        raise UsageError(f"start {first} is after end {last}" + ("" if end else " (the run's scheduled day)"))
    return first, last


def _day(name: str, value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{name} must be a date YYYY-MM-DD, got {value!r}") from None
