"""One rule for how every remote call retries: STAC assets, object storage, the Triton server.

A call is tried at most ``attempts`` times, each try bounded by ``timeout_s``; between tries it waits
``first_delay_s`` doubling, each wait capped at ``max_delay_s``; no retry starts once ``deadline_s``
has passed since the first try. Ingest and serving used to carry a policy class each, with different
field names for the same ideas; one frozen dataclass keeps them comparable and lets a CLI flag or a
test change one knob with :func:`dataclasses.replace`.

:data:`ASSET_RETRY` and :data:`SERVING_RETRY` hold the two stages' tuned values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ASSET_RETRY", "SERVING_RETRY", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts, capped exponential backoff, an overall deadline and a per-call timeout.

    The defaults are those of :data:`SERVING_RETRY` (the Triton client's); ingest uses :data:`ASSET_RETRY`,
    so derive ingest variants from it with :func:`dataclasses.replace` rather than from the defaults.

    Attributes:
        attempts: Tries in all, the first included (1 = no retry).
        first_delay_s: Wait after the first failure; each later wait doubles it.
        max_delay_s: Cap on any single wait, so a long run of failures does not sleep for minutes.
        deadline_s: Seconds from the first try after which no retry starts (``math.inf``: attempts alone bound it).
        timeout_s: Bound on one call (an HTTP request, a gRPC request), not on the whole retry loop.
    """

    attempts: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 5.0
    deadline_s: float = 120.0
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        # bool is an int: True would silently mean one attempt.
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be an integer >= 1, got {self.attempts!r}")
        for name in ("first_delay_s", "max_delay_s", "timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not (isinstance(self.deadline_s, int | float) and self.deadline_s > 0):  # NaN fails too; inf is allowed
            raise ValueError(f"deadline_s must be positive (math.inf for none), got {self.deadline_s!r}")

    def delays(self) -> list[float]:
        """The nominal waits between attempts (``attempts - 1`` of them), before any deadline cuts one short."""
        return [min(self.max_delay_s, self.first_delay_s * 2**n) for n in range(self.attempts - 1)]


ASSET_RETRY = RetryPolicy(attempts=4, first_delay_s=1.0, max_delay_s=60.0, deadline_s=math.inf, timeout_s=30.0)
"""Ingest reads of remote assets: 4 attempts, waits of 1, 2 and 4 s, 30 s per call.

Object stores lag (a fresh asset can answer 404 for a while), so failures are retried slowly. There is
no overall deadline: the attempts bound the loop, as they always have. The 60 s cap leaves the waits of
up to 7 attempts (``ingest run --retries``) as they were and stops more from sleeping for hours."""

SERVING_RETRY = RetryPolicy(attempts=5, first_delay_s=1.0, max_delay_s=5.0, deadline_s=120.0, timeout_s=60.0)
"""Triton requests: 5 attempts, waits of 1, 2, 4 and 5 s, no retry after 120 s, 60 s per request.

The waits span about 12 s (6-24 s with jitter), so a server restarting or reloading for a few seconds
is ridden out. With waits from 0.2 s they spanned 3 s, and a map whose connections were reset for 3 s
failed (exit 6) instead of finishing (docs/benchmarks.md, "Network faults")."""
