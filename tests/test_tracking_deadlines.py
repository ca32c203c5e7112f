"""The project's bounds on MLflow requests: a server that stops answering mid-run fails the stage, it does not hang.

MLflow's own defaults (120 s per try, 8 tries) let one request to a blackholed server hang about 20 minutes;
``cloudlulc.tracking.settings`` sets shorter ones where the user has not. The late-blackhole test shrinks
them through the environment (as a user would) to stay short; the bound it checks is computed from the
same settings, so it shows the mechanism that gives the 74 s per request of the defaults.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
from faultproxy import FaultProxy

from cloudlulc.tracking.runs import tracked_run
from cloudlulc.tracking.settings import (
    MLFLOW_HTTP_DEFAULTS,
    TrackingError,
    TrackingSettings,
    apply_mlflow_http_defaults,
    ensure_reachable,
    mlflow_request_deadline_s,
)

_READ_BACK = """
import json, os
import cloudlulc.tracking.settings  # every module of the project that talks to MLflow imports it first
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT,
)
print(json.dumps([MLFLOW_HTTP_REQUEST_TIMEOUT.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(),
                  MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()]))
"""


def _read_back(**env: str) -> list[int]:
    """What MLflow itself reads in a fresh process that imported the project, under ``env``."""
    clean = {k: v for k, v in os.environ.items() if k not in MLFLOW_HTTP_DEFAULTS}
    done = subprocess.run(
        [sys.executable, "-c", _READ_BACK], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_project_defaults_are_the_documented_ones_and_what_mlflow_reads():
    assert MLFLOW_HTTP_DEFAULTS == {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    }
    # 4 tries of 15 s, waits 0, 4 + 1, 8 + 1 s: the per-request deadline in docs/benchmarks.md.
    assert mlflow_request_deadline_s(MLFLOW_HTTP_DEFAULTS) == 74.0
    mlflow_own = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "120", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7"}
    assert mlflow_request_deadline_s(mlflow_own) == 1209.0  # about 20 min: what the defaults replace
    assert _read_back() == [15, 3, 2]


def test_a_users_own_values_win_over_the_project_defaults():
    assert _read_back(MLFLOW_HTTP_REQUEST_TIMEOUT="300", MLFLOW_HTTP_REQUEST_MAX_RETRIES="9") == [300, 9, 2]
    environ = {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "5"}
    assert apply_mlflow_http_defaults(environ) == {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    }
    assert environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "5"


def test_ensure_reachable_puts_back_defaults_removed_since_import(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    ensure_reachable("sqlite:///unused.db")  # no server to check, but the bounds apply to every store
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "15"


def _blackholed_after_first_epoch(settings: TrackingSettings, proxy: FaultProxy, struck: list[float]) -> None:
    """Log an epoch, blackhole the server (past the health check, mid-run), log the next one."""
    with tracked_run(settings, "late-blackhole", {"epochs": 2}, {}) as logger:
        logger.log_epoch(0, {"loss": 1.0})
        proxy.set_fault("blackhole")  # only MLflow's own retries stand between this run and a hang
        struck.append(time.monotonic())
        logger.log_epoch(1, {"loss": 0.5})


def test_a_blackhole_after_the_health_check_ends_in_tracking_error_within_the_bound(
    mlflow_server: str, monkeypatch: pytest.MonkeyPatch
):
    # Smaller than the defaults to keep the test short; MLflow reads them per request, as it does the defaults.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    per_request = mlflow_request_deadline_s()  # 2 tries of 2 s
    with FaultProxy.for_url(mlflow_server) as proxy:
        settings = TrackingSettings(tracking_uri=proxy.url, experiment="deadlines")
        struck: list[float] = []
        with pytest.raises(TrackingError, match=re.escape(proxy.url)) as caught:
            _blackholed_after_first_epoch(settings, proxy, struck)
        took = time.monotonic() - struck[0]
        swallowed = proxy.counts()["connections"]
    assert caught.value.exit_code == 4 and "timeout" in str(caught.value).lower(), caught.value
    # The failing request, then the FAILED end of the run (also blackholed): two requests' worth at most.
    assert per_request <= took <= 2 * per_request + 10, (took, per_request)  # + slack for a busy machine
    assert swallowed >= 3, "each try opened a connection the blackhole swallowed"


@pytest.fixture
def failing_server(monkeypatch: pytest.MonkeyPatch):
    """A loopback HTTP server answering every request 503, with MLflow told not to retry (to stay short)."""
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_registry_that_fails_is_not_read_as_having_no_champion(failing_server: str):
    """Only "no such model or alias" means no champion; a failing registry is a TrackingError naming it."""
    from cloudlulc.tracking.registry import Registry

    with pytest.raises(TrackingError, match=re.escape(f"registry at {failing_server}: cannot read alias 'champion'")):
        Registry(failing_server, "cloudlulc").alias_version("champion")


def test_a_run_that_cannot_be_read_is_not_resumed_as_a_new_one(failing_server: str):
    """A retried step whose server fails to say whether its run finished stops (exit 4), not starts a second run."""
    import mlflow

    from cloudlulc.tracking.runs import _unfinished

    mlflow.set_tracking_uri(failing_server)
    try:
        with pytest.raises(TrackingError, match="cannot read run 0123abcd to resume it"):
            _unfinished(mlflow, "0123abcd")
    finally:
        mlflow.set_tracking_uri(None)
