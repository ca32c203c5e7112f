"""Logging for the whole process, set up once by an entry point; progress that stays readable in captured logs.

Library modules only ask ``logging.getLogger(__name__)`` for a logger and never configure: the ``cloudlulc``
CLI and the Kubeflow components call :func:`configure` once, from ``--log-level``/``--log-format`` or the
``CLOUDLULC_LOG_LEVEL``/``CLOUDLULC_LOG_FORMAT`` environment variables. ``plain`` lines are for people
(``2026-06-01 09:30:00 warning: ...``); ``json`` writes one object per line (time, level, logger, message
and any ``extra`` fields) for a cluster's log collector.

Progress bars need a terminal: on a pipe or in a pod their carriage-return frames fill the captured log
and say nothing until the step ends. So a bar shows only where stderr is a TTY (:func:`progress_enabled`),
and long steps log a line per epoch or per tenth of their work instead (:class:`Progress`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from tqdm import tqdm

from cloudlulc.errors import UsageError

LEVEL_ENV: Final = "CLOUDLULC_LOG_LEVEL"
FORMAT_ENV: Final = "CLOUDLULC_LOG_FORMAT"
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS: Final = ("plain", "json")
OWN_LOGGERS: Final = ("cloudlulc", "components", "pipelines")
"""Loggers that take the chosen level; every other library (botocore, mlflow, ...) still shows warnings only."""

_STANDARD_FIELDS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    A stream swapped after :func:`configure` (click's test runner, pytest's capture) then still gets the
    lines, instead of a closed file.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.others_level = logging.WARNING

    def filter(self, record: logging.LogRecord) -> bool:
        """Our loggers' records pass at their level; other libraries' only from ``others_level`` up.

        Some libraries set their own loggers to INFO (Great Expectations does): their chatter stays out.
        """
        ours = record.name.split(".", 1)[0] in OWN_LOGGERS
        return (ours or record.levelno >= self.others_level) and bool(super().filter(record))

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


class PlainFormatter(logging.Formatter):
    """``<date time> <level>: <message>``, the level in lower case like the CLI's ``error:`` lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (the stdlib's name)
        """The message line with the level in lower case (a copy of the record: other handlers see it as is)."""
        return super().formatMessage(logging.makeLogRecord({**vars(record), "levelname": record.levelname.lower()}))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, then the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON; an undefined score (NaN) is null, other odd values their ``str``."""
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_FIELDS and key not in document:  # strict JSON: no NaN or Infinity tokens
                document[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str)


def resolve(level: str | None = None, fmt: str | None = None) -> tuple[str, str]:
    """The level and format to use: the arguments, else the environment, else INFO and plain.

    Raises:
        UsageError: an unknown level or format (exit code 2), naming where it came from.
    """
    chosen_level = (level or os.environ.get(LEVEL_ENV) or "INFO").upper()
    chosen_format = (fmt or os.environ.get(FORMAT_ENV) or "plain").lower()
    if chosen_level not in LEVELS:
        source = "--log-level" if level else LEVEL_ENV
        raise UsageError(f"{source}: unknown log level {chosen_level!r}; use one of {', '.join(LEVELS)}")
    if chosen_format not in FORMATS:
        source = "--log-format" if fmt else FORMAT_ENV
        raise UsageError(f"{source}: unknown log format {chosen_format!r}; use plain or json")
    return chosen_level, chosen_format


def configure(level: str | None = None, fmt: str | None = None) -> logging.Handler:
    """Send log records to stderr at ``level`` in ``fmt`` (see :func:`resolve`); the handler in use.

    Idempotent: a second call (a test runner invoking the CLI again, a component importing twice) changes
    level and format of the one handler instead of adding another, so no line is ever printed twice.
    """
    chosen_level, chosen_format = resolve(level, fmt)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if chosen_format == "json" else PlainFormatter())
    numeric = logging.getLevelName(chosen_level)
    handler.others_level = max(numeric, logging.WARNING)
    root.setLevel(handler.others_level)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(numeric)
    logging.captureWarnings(True)
    return handler


def progress_enabled(requested: bool) -> bool:
    """Whether to draw a bar: asked for, and stderr is a terminal (a pipe or a pod log gets log lines)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return requested and callable(isatty) and bool(isatty())


class Progress:
    """A tqdm bar on a terminal; elsewhere an INFO line each time another tenth of the work is done.

    The line gives done/total, percent, rate (``Mpx/s`` when ``pixels_per_unit`` is known) and elapsed
    time, so a long step in a pod says how far it is without filling the log with bar frames.
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str,
        requested: bool,
        logger: logging.Logger,
        initial: int = 0,
        pixels_per_unit: float = 0,
        bands: int = 10,
    ) -> None:
        self.total, self.done, self.initial = total, initial, initial
        self.desc, self.unit, self.logger, self.pixels_per_unit = desc, unit, logger, pixels_per_unit
        self.started = time.monotonic()
        self.step = max(1, math.ceil(total / bands))
        self.logged_at = initial
        self.next_line = min((initial // self.step + 1) * self.step, total)
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit) if progress_enabled(requested) else None

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.done >= self.next_line and self.done > self.logged_at:
            self._log()
            self.logged_at = self.done
            self.next_line = min((self.done // self.step + 1) * self.step, self.total)

    def _log(self) -> None:
        seconds = max(time.monotonic() - self.started, 1e-9)
        count = self.done - self.initial
        rate = (
            f"{count * self.pixels_per_unit / seconds / 1e6:.2f} Mpx/s"
            if self.pixels_per_unit
            else f"{count / seconds:.2f} {self.unit}/s"
        )
        self.logger.info(
            "%s: %d/%d %ss (%d%%), %s, %.0f s",
            self.desc,
            self.done,
            self.total,
            self.unit,
            100 * self.done // max(self.total, 1),
            rate,
            seconds,
            extra={"done": self.done, "total": self.total, "unit": self.unit, "seconds": round(seconds, 3)},
        )

    def close(self) -> None:
        """Close the bar (no line: the caller logs what the step made)."""
        if self.bar is not None:
            self.bar.close()
