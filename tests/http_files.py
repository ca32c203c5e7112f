"""A local HTTP file server for tests: Range requests (GDAL's /vsicurl/ needs them) and injected faults.

Serves one folder on 127.0.0.1 only, with no directory listings. ``fail`` and ``delay`` script the next
requests for a URL path, so retry and timeout handling can be tested against a real HTTP stack.

The server runs in a child process, not a thread of the test process: rasterio keeps the GIL through
some GDAL calls that read over HTTP (sidecar lookups when a dataset's georeferencing is first asked
for), and a Python server thread in the same process could then not answer until curl gave up. The
listening socket is bound here, so ``url`` is known at once, and handed to the child; faults and
request counts live in the child and are reached through ``/__fileserver__/`` control requests.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from http import HTTPStatus
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

CHUNK = 256 * 1024
BOUNDARY = "CLOUDLULC_BYTERANGES"
IDLE_TIMEOUT_S = 10.0
"""A keep-alive connection idle this long is closed, so no handler thread waits forever."""
DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
CONTROL = "/__fileserver__/"
"""URL prefix of the control requests (never counted, never faulted)."""


class _State:
    """What the child serves and the faults scripted for it, shared by its handler threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.failures: dict[str, deque[int]] = {}
        self.delays: dict[str, deque[float]] = {}
        self.requests: Counter[str] = Counter()

    def next_fault(self, path: str) -> tuple[int | None, float]:
        with self.lock:
            self.requests[path] += 1
            failures, delays = self.failures.get(path), self.delays.get(path)
            return (failures.popleft() if failures else None), (delays.popleft() if delays else 0.0)

    def file_for(self, path: str) -> Path | None:
        """The file a URL path names, or None (missing, a folder, or outside the root)."""
        candidate = (self.root / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def control(self, action: str, query: dict[str, list[str]]) -> object:
        """Apply one control request; returns what to answer (as JSON)."""
        path = query.get("path", [""])[0]
        times = int(query.get("times", ["1"])[0])
        with self.lock:
            if action == "fail":
                self.failures[path] = deque([int(query["status"][0])] * times)
            elif action == "delay":
                self.delays[path] = deque([float(query["seconds"][0])] * times)
            elif action == "count":
                return self.requests[path]
            elif action != "ping":
                raise KeyError(action)
        return "ok"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # shutdown closes open connections itself instead of waiting on clients

    def __init__(self, listening: socket.socket, state: _State) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(listening.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listening

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up mid-answer (GDAL does once it has its bytes)."""
        if isinstance(sys.exc_info()[1], DISCONNECTS):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in list(self.connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart (delayed ACKs)

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(*DISCONNECTS, OSError):
            super().finish()
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the counters, not a log."""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        try:
            self._serve(send_body)
        except DISCONNECTS:
            self.close_connection = True

    def _serve(self, send_body: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if path.startswith(CONTROL):
            self._control(path.removeprefix(CONTROL), parse_qs(parts.query))
            return
        status, seconds = self.server.state.next_fault(path)
        if seconds:
            time.sleep(seconds)
        if status:
            self._error(status)
            return
        file = self.server.state.file_for(path)
        if file is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        size = file.stat().st_size
        media_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        header = self.headers.get("Range")
        ranges = _parse_ranges(header, size) if header else None
        if ranges == []:
            self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            return
        if ranges is None:
            self._send_file(file, [(0, size - 1)] if size else [], HTTPStatus.OK, media_type, size, send_body)
        elif len(ranges) == 1:
            self._send_file(file, ranges, HTTPStatus.PARTIAL_CONTENT, media_type, size, send_body)
        else:
            self._send_multipart(file, ranges, media_type, size, send_body)

    def _control(self, action: str, query: dict[str, list[str]]) -> None:
        try:
            body = json.dumps(self.server.state.control(action, query)).encode()
        except (KeyError, ValueError):
            self._error(HTTPStatus.BAD_REQUEST)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int) -> None:
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Injected fault"
        body = f"{status} {phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(
        self, file: Path, ranges: list[tuple[int, int]], status: int, media_type: str, size: int, send_body: bool
    ) -> None:
        length = sum(end - start + 1 for start, end in ranges)
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == HTTPStatus.PARTIAL_CONTENT:
            start, end = ranges[0]
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if send_body:
            with file.open("rb") as handle:
                for start, end in ranges:
                    self._copy(handle, start, end)

    def _send_multipart(
        self, file: Path, ranges: list[tuple[int, int]], media_type: str, size: int, send_body: bool
    ) -> None:
        parts = [
            (
                f"--{BOUNDARY}\r\nContent-Type: {media_type}\r\nContent-Range: bytes {s}-{e}/{size}\r\n\r\n".encode(),
                s,
                e,
            )
            for s, e in ranges
        ]
        closing = f"\r\n--{BOUNDARY}--\r\n".encode()
        length = sum(len(head) + e - s + 1 for head, s, e in parts) + 2 * (len(parts) - 1) + len(closing)
        self.send_response(HTTPStatus.PARTIAL_CONTENT)
        self.send_header("Content-Type", f"multipart/byteranges; boundary={BOUNDARY}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if not send_body:
            return
        with file.open("rb") as handle:
            for index, (head, start, end) in enumerate(parts):
                if index:
                    self.wfile.write(b"\r\n")
                self.wfile.write(head)
                self._copy(handle, start, end)
            self.wfile.write(closing)

    def _copy(self, handle: Any, start: int, end: int) -> None:
        handle.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = handle.read(min(CHUNK, left))
            if not chunk:
                break
            self.wfile.write(chunk)
            left -= len(chunk)


def _parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Satisfiable (start, end) byte ranges; [] when none is satisfiable, None when the header is malformed."""
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes" or not specs.strip():
        return None
    ranges: list[tuple[int, int]] = []
    for spec in specs.split(","):
        match = RANGE_SPEC.match(spec)
        if not match or match.groups() == ("", ""):
            return None  # malformed: RFC 9110 says ignore the header and send the whole file
        first, last = match.groups()
        if first:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
            if last and int(last) < start:
                return None
        else:  # a suffix: the last n bytes
            start, end = max(size - int(last), 0), size - 1
            if int(last) == 0:
                continue
        if start < size:
            ranges.append((start, end))
    return ranges


class FileServer:
    """Serve a folder over HTTP on 127.0.0.1 with Range requests (GDAL /vsicurl/ needs them) and fault injection."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = Path(root).resolve()
        self._socket = socket.create_server(("127.0.0.1", port), backlog=64)
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> FileServer:
        """Serve from a child process (a ThreadingHTTPServer there); returns self for chaining.

        Requests made before the child is up wait in the listening socket's backlog.
        """
        if self._process is None:
            fd = self._socket.fileno()
            command = [sys.executable, str(Path(__file__).resolve()), str(fd), str(self.root)]
            # The child serves until its stdin closes: on stop(), or when this process dies.
            self._process = subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.PIPE)
        return self

    def stop(self) -> None:
        """Stop the child (closing open connections) and the listening socket; the port is free afterwards."""
        process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._socket.close()

    def fail(self, path: str, status: int = 404, times: int = 1) -> None:
        """Answer the next ``times`` requests for URL path ``path`` with ``status``.

        Replaces the failures still pending for ``path``, so ``times=0`` clears them.
        """
        self._control("fail", path=path, status=status, times=times)

    def delay(self, path: str, seconds: float, times: int = 1) -> None:
        """Sleep ``seconds`` before answering each of the next ``times`` requests for ``path``.

        Replaces the delays still pending for ``path``, so ``times=0`` clears them.
        """
        self._control("delay", path=path, seconds=seconds, times=times)

    def requests_for(self, path: str) -> int:
        """How many requests (GET and HEAD, failed ones included) hit URL path ``path``."""
        return int(self._control("count", path=path))

    def _control(self, action: str, **query: object) -> Any:
        if self._process is None:
            raise RuntimeError("the file server is not running; call start() first")
        connection = HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", f"{CONTROL}{action}?{urlencode(query)}")
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != HTTPStatus.OK:
            raise RuntimeError(f"file server control {action!r} answered {response.status}")
        return json.loads(body)

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _serve(fd: int, root: Path) -> None:
    """The child: serve on the inherited socket until stdin closes, then close every connection."""
    server = _Server(socket.socket(fileno=fd), _State(root))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    with contextlib.suppress(OSError):
        sys.stdin.buffer.read()
    server.shutdown()
    server.close_connections()
    server.server_close()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]))
