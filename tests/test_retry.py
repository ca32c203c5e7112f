"""The one retry rule of remote calls: its waits, its validation, its two tuned instances and ingest's loop."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError, replace

import pytest

from cloudlulc.errors import DataError, ServingError
from cloudlulc.ingest import assets
from cloudlulc.ingest.coregister import policy_for
from cloudlulc.io.retry import ASSET_RETRY, SERVING_RETRY, RetryPolicy
from cloudlulc.serving.client import TritonClient


class FakeClock:
    """Stands in for a module's ``time``: sleeping advances the clock, and each call costs ``call_s``."""

    def __init__(self, call_s: float = 0.0) -> None:
        self.now, self.call_s, self.sleeps = 0.0, call_s, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_delays_double_from_the_first_and_number_one_fewer_than_attempts():
    assert RetryPolicy(attempts=1).delays() == []
    assert RetryPolicy(attempts=2, first_delay_s=0.5).delays() == [0.5]
    assert RetryPolicy(attempts=5, first_delay_s=0.5, max_delay_s=100).delays() == [0.5, 1.0, 2.0, 4.0]


def test_each_wait_is_capped_at_max_delay():
    policy = RetryPolicy(attempts=7, first_delay_s=1.0, max_delay_s=5.0)
    assert policy.delays() == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert RetryPolicy(attempts=3, first_delay_s=10.0, max_delay_s=3.0).delays() == [3.0, 3.0]


def test_asset_retry_keeps_ingests_waits():
    assert ASSET_RETRY.attempts == 4 and ASSET_RETRY.timeout_s == 30.0
    assert ASSET_RETRY.delays() == [1.0, 2.0, 4.0]
    # the deadline never binds before the attempts run out, however slow each call is
    worst_case_s = ASSET_RETRY.attempts * ASSET_RETRY.timeout_s + sum(ASSET_RETRY.delays())
    assert ASSET_RETRY.deadline_s > worst_case_s and ASSET_RETRY.deadline_s == math.inf
    # `ingest run --retries` up to 7 keeps the old uncapped doubling
    assert replace(ASSET_RETRY, attempts=7).delays() == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]


def test_serving_retry_keeps_the_triton_clients_waits():
    assert (SERVING_RETRY.attempts, SERVING_RETRY.deadline_s, SERVING_RETRY.timeout_s) == (5, 120.0, 60.0)
    assert SERVING_RETRY.delays() == pytest.approx([1.0, 2.0, 4.0, 5.0])
    assert replace(SERVING_RETRY, attempts=8).delays() == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0])
    assert RetryPolicy() == SERVING_RETRY  # the documented defaults


def test_policies_are_frozen_values():
    with pytest.raises(FrozenInstanceError):
        ASSET_RETRY.attempts = 1  # type: ignore[misc]
    assert replace(ASSET_RETRY, attempts=4) == ASSET_RETRY and hash(replace(ASSET_RETRY)) == hash(ASSET_RETRY)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempts", 0),
        ("attempts", -1),
        ("attempts", 2.5),
        ("attempts", True),
        ("first_delay_s", 0.0),
        ("first_delay_s", -1.0),
        ("first_delay_s", math.inf),
        ("max_delay_s", 0.0),
        ("max_delay_s", math.nan),
        ("deadline_s", 0.0),
        ("deadline_s", -5.0),
        ("deadline_s", math.nan),
        ("timeout_s", 0.0),
        ("timeout_s", -30.0),
        ("timeout_s", math.inf),
    ],
)
def test_invalid_values_are_refused_naming_the_field(field: str, value: object):
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_a_local_file_gets_one_attempt_with_the_rest_of_the_policy():
    assert policy_for("https://example.com/b04.tif", ASSET_RETRY) is ASSET_RETRY
    assert policy_for("s3://bucket/b04.tif", ASSET_RETRY) is ASSET_RETRY
    local = policy_for("/data/b04.tif", ASSET_RETRY)
    assert local == replace(ASSET_RETRY, attempts=1) and local.delays() == []


def _failing(clock: FakeClock, calls: list[int]):
    def action() -> str:
        calls.append(1)
        clock.now += clock.call_s
        raise OSError("connection reset")

    return action


def test_with_retries_waits_the_asset_policys_delays(monkeypatch: pytest.MonkeyPatch):
    clock, calls = FakeClock(call_s=30.0), []  # every call runs into its timeout
    monkeypatch.setattr(assets, "time", clock)
    with pytest.raises(DataError, match=r"item X asset 'red'.*unreachable after 4 attempts.*connection reset"):
        assets.with_retries(_failing(clock, calls), "item X asset 'red'", ASSET_RETRY)
    assert len(calls) == 4 and clock.sleeps == [1.0, 2.0, 4.0]


def test_with_retries_stops_at_the_deadline(monkeypatch: pytest.MonkeyPatch):
    clock, calls = FakeClock(call_s=4.0), []
    monkeypatch.setattr(assets, "time", clock)
    policy = replace(ASSET_RETRY, attempts=10, deadline_s=10.0)
    with pytest.raises(DataError, match="unreachable after 3 attempts"):
        assets.with_retries(_failing(clock, calls), "item X asset 'red'", policy)
    # tries end at 4, 9 and 14 s: the second wait is cut to the 1 s left, and no retry starts after 10 s
    assert len(calls) == 3 and clock.sleeps == [1.0, 1.0]


def test_with_retries_returns_the_first_success(monkeypatch: pytest.MonkeyPatch):
    clock, outcomes = FakeClock(), iter([OSError("reset"), OSError("reset"), "ok"])

    def flaky() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(assets, "time", clock)
    assert assets.with_retries(flaky, "item X asset 'red'", ASSET_RETRY) == "ok"
    assert clock.sleeps == [1.0, 2.0]


# --- the Triton client follows the same policy -------------------------------------------------


def _always_unavailable(clock: FakeClock, calls: list[int]):
    from tritonclient.utils import InferenceServerException

    def call() -> None:
        calls.append(1)
        clock.now += clock.call_s
        raise InferenceServerException("server gone", status="StatusCode.UNAVAILABLE")

    return call


def test_client_retry_waits_follow_the_serving_policy(monkeypatch: pytest.MonkeyPatch):
    from cloudlulc.io.retry import SERVING_RETRY
    from cloudlulc.serving import client as client_module

    clock, calls = FakeClock(), []
    monkeypatch.setattr(client_module, "time", clock)
    monkeypatch.setattr(client_module.random, "random", lambda: 1.0)  # no jitter: the full wait
    with TritonClient("127.0.0.1:1") as client:
        assert client.retry == SERVING_RETRY
        with pytest.raises(ServingError, match="after 5 attempt"):
            client._call("a test call", _always_unavailable(clock, calls))
    assert len(calls) == 5 and clock.sleeps == pytest.approx([1.0, 2.0, 4.0, 5.0])

    clock.sleeps.clear()
    with TritonClient("127.0.0.1:1", retry=replace(SERVING_RETRY, attempts=8)) as client, pytest.raises(ServingError):
        client._call("a test call", _always_unavailable(clock, calls))
    assert clock.sleeps == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0])  # each wait capped at 5 s


def test_client_retry_stops_at_the_deadline(monkeypatch: pytest.MonkeyPatch):
    from cloudlulc.serving import client as client_module

    clock, calls = FakeClock(call_s=4.0), []
    monkeypatch.setattr(client_module, "time", clock)
    monkeypatch.setattr(client_module.random, "random", lambda: 1.0)
    policy = RetryPolicy(attempts=10, first_delay_s=1.0, max_delay_s=2.0, deadline_s=10.0)
    with TritonClient("127.0.0.1:1", retry=policy) as client, pytest.raises(ServingError, match="after 3 attempt"):
        client._call("a test call", _always_unavailable(clock, calls))
    # 4 s per call: tries end at 4, 9 and 14 s; the second wait is cut to the 1 s left, the third try is the last.
    assert len(calls) == 3 and clock.sleeps == pytest.approx([1.0, 1.0])
