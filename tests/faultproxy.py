"""A loopback TCP proxy that injects network faults between a client and a real server.

Tests and benchmarks put it in front of the S3 server, the MLflow server or Triton to see what the real
client code does when the network misbehaves: latency, a bandwidth cap, a reset mid-stream, a blackhole
and a slow close. The proxy runs its own asyncio loop in a background thread so that blocking client code
(boto3, requests, the Triton client) can run in the test's thread; :meth:`FaultProxy.set_fault` changes
the fault while connections are open, which is how a benchmark measures recovery once a fault clears.

It lives in tests/ (not in the library, which must not carry test tools); benchmarks add tests/ to
``sys.path`` to import it, as tests do through pytest's rootdir-relative imports.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["FAULT_KINDS", "Fault", "FaultProxy"]

FAULT_KINDS = ("none", "latency", "bandwidth", "reset", "blackhole", "slow_close")
"""The faults :meth:`FaultProxy.set_fault` accepts, with their parameters:

* ``none``: forward untouched.
* ``latency(ms)``: each chunk waits ``ms`` before it is forwarded, in each direction (a request and
  its answer so gain about ``2 * ms``).
* ``bandwidth(bytes_per_s)``: each connection carries at most that many bytes a second in each direction.
* ``reset(after_bytes)``: once a connection has carried ``after_bytes`` (both directions together: an
  upload is cut as well as a download), the client side is closed with SO_LINGER 0, which sends an RST
  (what a crashed peer or a middlebox timing out does); every new connection is cut the same way.
* ``blackhole``: new connections are accepted and read but never answered nor forwarded; data on open
  connections is dropped. Only the client's own timeout ends such a call.
* ``slow_close(s)``: answers flow normally, but when one side closes the other side is closed ``s``
  seconds later (a peer that lingers before its FIN).
"""

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fault:
    """One fault kind and its parameters, swapped atomically by :meth:`FaultProxy.set_fault`."""

    kind: str = "none"
    ms: float = 0.0
    bytes_per_s: float = 0.0
    after_bytes: int = 0
    s: float = 0.0


@dataclass
class _Counters:
    connections: int = 0
    active: int = 0
    resets: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _fault(kind: str, params: dict[str, Any]) -> Fault:
    """Check a kind and its parameters; a typo must fail loudly, not inject no fault."""
    needed = {"none": (), "latency": ("ms",), "bandwidth": ("bytes_per_s",), "reset": ("after_bytes",)}
    needed |= {"blackhole": (), "slow_close": ("s",)}
    if kind not in needed:
        raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
    if set(params) != set(needed[kind]):
        raise ValueError(f"fault {kind!r} takes {needed[kind] or 'no parameters'}, got {sorted(params)}")
    for name, value in params.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if kind == "bandwidth" and params["bytes_per_s"] <= 0:
        raise ValueError("bytes_per_s must be > 0")
    return Fault(kind, **params)


class FaultProxy:
    """Forward a free loopback port to ``target_host:target_port``, injecting the current fault.

    Use as ``with FaultProxy(host, port) as proxy:``; ``proxy.url`` is ``http://127.0.0.1:<port>``.
    :meth:`counts` (and :attr:`connections`, :attr:`bytes_up`, :attr:`bytes_down`) show what went through.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.fault = Fault()
        self._counters = _Counters()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)

    @classmethod
    def for_url(cls, url: str) -> FaultProxy:
        """A proxy in front of the host and port of an ``http://host:port`` URL."""
        from urllib.parse import urlparse

        parsed = urlparse(url)
        if parsed.hostname is None or parsed.port is None:
            raise ValueError(f"{url}: need an explicit host and port")
        return cls(parsed.hostname, parsed.port)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: what the client is pointed at instead of the real server."""
        return f"http://127.0.0.1:{self.port}"

    def set_fault(self, kind: str, **params: float) -> None:
        """Change the fault now; open connections see it from their next chunk on."""
        self.fault = _fault(kind, params)

    def counts(self) -> dict[str, int]:
        """Connections accepted and open, resets sent, bytes forwarded up (to the server) and down."""
        c = self._counters
        with c.lock:
            return {
                "connections": c.connections,
                "active": c.active,
                "resets": c.resets,
                "bytes_up": c.bytes_up,
                "bytes_down": c.bytes_down,
            }

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return self.counts()["connections"]

    @property
    def bytes_down(self) -> int:
        """Bytes forwarded from the server to clients."""
        return self.counts()["bytes_down"]

    @property
    def bytes_up(self) -> int:
        """Bytes forwarded from clients to the server."""
        return self.counts()["bytes_up"]

    def _count(self, **deltas: int) -> None:
        with self._counters.lock:
            for name, delta in deltas.items():
                setattr(self._counters, name, getattr(self._counters, name) + delta)

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._count(connections=1, active=1)
        self._writers.add(client_writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.fault.kind == "blackhole":
                await self._swallow(client_reader)
                return
            try:
                server_reader, upstream = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                return  # the client sees a closed connection, as with the real server down
            self._writers.add(upstream)
            sent = [0]  # both directions: a reset cuts an upload as well as a download
            up = asyncio.create_task(self._pipe(client_reader, upstream, client_writer, upstream, "bytes_up", sent))
            down = asyncio.create_task(
                self._pipe(server_reader, client_writer, client_writer, upstream, "bytes_down", sent)
            )
            await asyncio.gather(up, down, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # stop(): end quietly, or asyncio's stream callback logs the cancellation as an error
        finally:
            for writer in (client_writer, upstream):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()
            self._count(active=-1)

    @staticmethod
    async def _swallow(reader: asyncio.StreamReader) -> None:
        """Read and drop everything until the client gives up: a server that never answers."""
        while await reader.read(_CHUNK):
            pass

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
        upstream: asyncio.StreamWriter,
        counter: str,
        sent: list[int],
    ) -> None:
        """Copy one direction chunk by chunk, applying the fault current at each chunk."""
        try:
            while data := await reader.read(_CHUNK):
                fault = self.fault
                if fault.kind == "blackhole":
                    continue
                if fault.kind == "latency":
                    await asyncio.sleep(fault.ms / 1000)
                if fault.kind == "reset" and sent[0] + len(data) >= fault.after_bytes:
                    await self._reset(writer, data[: max(0, fault.after_bytes - sent[0])], client, counter)
                    upstream.transport.abort()
                    return
                if fault.kind == "bandwidth":
                    await self._throttled(writer, data, fault.bytes_per_s, counter)
                else:
                    writer.write(data)
                    await writer.drain()
                    self._count(**{counter: len(data)})
                sent[0] += len(data)
            # This side finished (FIN): pass it on, late if the fault says so.
            if self.fault.kind == "slow_close":
                await asyncio.sleep(self.fault.s)
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (ConnectionError, OSError, RuntimeError):
            client.close()
            upstream.close()

    async def _throttled(self, writer: asyncio.StreamWriter, data: bytes, bytes_per_s: float, counter: str) -> None:
        """Send in slices of a tenth of a second's worth, sleeping so the rate stays at the cap."""
        step = max(1, int(bytes_per_s / 10))
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            writer.write(piece)
            await writer.drain()
            self._count(**{counter: len(piece)})
            await asyncio.sleep(len(piece) / bytes_per_s)

    async def _reset(
        self, writer: asyncio.StreamWriter, last: bytes, client: asyncio.StreamWriter, counter: str
    ) -> None:
        """Send what may still go, then close the client side with SO_LINGER 0 so the kernel sends an RST."""
        if last:
            writer.write(last)
            await writer.drain()
            self._count(**{counter: len(last)})
            await asyncio.sleep(0.05)  # let loopback deliver it before the RST discards the send buffer
        sock = client.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.transport.abort()
        self._count(resets=1)

    async def _close_all(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Close the listener and every connection, then end the loop thread."""
        if not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
