"""A loopback stand-in for the Kubeflow Pipelines v2beta1 REST API: records what the real ``kfp.Client`` sends.

The real API server needs Kubernetes, which cannot run here; this answers the handful of endpoints
that submitting and scheduling use, with the response shapes of the v2beta1 API, and keeps every
request so tests can check what a cluster would have received (parameters, cron, concurrency).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Recorded:
    """One request: method, path, query, JSON body and headers."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


@dataclass
class KfpApiStandIn:
    """Start with ``with KfpApiStandIn() as api:``; ``api.host`` is the URL to give ``kfp.Client``."""

    requests: list[Recorded] = field(default_factory=list)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def posted(self, path: str) -> list[Any]:
        """Bodies POSTed to ``path``."""
        return [r.body for r in self.requests if r.method == "POST" and r.path == path]

    def __enter__(self) -> KfpApiStandIn:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, document: dict[str, Any]) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, method: str) -> Recorded:
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                recorded = Recorded(method, url.path, parse_qs(url.query), body, dict(self.headers))
                api.requests.append(recorded)
                return recorded

            def do_GET(self) -> None:
                request = self._record("GET")
                if request.path == "/apis/v2beta1/healthz":
                    self._answer(200, {"commit_sha": "standin", "tag_name": "2.5.0", "multi_user": True})
                elif request.path == "/apis/v2beta1/experiments":
                    wanted = json.dumps(request.query.get("filter", [""])[0])
                    found = [e for name, e in api.experiments.items() if json.dumps(name)[1:-1] in wanted]
                    self._answer(200, {"experiments": found, "total_size": len(found)})
                else:
                    self._answer(404, {"error": f"no such endpoint {request.path}"})

            def do_POST(self) -> None:
                request = self._record("POST")
                body = request.body or {}
                if request.path == "/apis/v2beta1/experiments":
                    experiment = {**body, "experiment_id": f"exp-{len(api.experiments) + 1}"}
                    api.experiments[body["display_name"]] = experiment
                    self._answer(200, experiment)
                elif request.path == "/apis/v2beta1/runs":
                    self._answer(200, {**body, "run_id": f"run-{len(api.posted(request.path))}", "state": "PENDING"})
                elif request.path == "/apis/v2beta1/recurringruns":
                    self._answer(
                        200, {**body, "recurring_run_id": f"job-{len(api.posted(request.path))}", "status": "ENABLED"}
                    )
                else:
                    self._answer(404, {"error": f"no such endpoint {request.path}"})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
