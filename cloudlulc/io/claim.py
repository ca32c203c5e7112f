"""Exclusive claims on an output, so two runs never write one map or dataset at the same time.

Two runs into one output interleave their temporary and published files and leave a mix of both, so
whoever claims the output first writes it and every other run is refused (``OutputBusyError``, exit 4)
with the holder named: pid, host, start time and command.

Local outputs: a lock file ``<output>.lock`` beside the output, held with ``flock``. The kernel drops
the lock when its holder dies however it dies, so a lock file left by a killed run is stale by
definition: the next run takes it over with a warning. (``O_EXCL`` alone could not tell a dead
holder from a live one.) The file is removed on release, before unlocking; a run that opened the old
file meanwhile sees that its inode is no longer the path's and tries again.

``s3://`` outputs: a create-only object ``<key>.lock`` (``If-None-Match: *``) holding the same facts.
S3 cannot see processes, so the holder refreshes the claim's ``beat`` every sixth of
``CLOUDLULC_CLAIM_STALE_S`` (default 60 s), and a claim is stale when its holder ran on this host and is
gone, or when its beat is older than that (a killed pod's claim, seen from the retried pod on another host).
Taking over a stale S3 claim deletes and re-creates it, which is not atomic: two runs taking over the
same dead claim in the same instant could both proceed, a window that needs a dead holder first.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from cloudlulc.errors import MissingObjectError, OutputBusyError, StorageError
from cloudlulc.io.storage import S3Storage, holder_gone, is_s3_uri

log = logging.getLogger(__name__)

CLAIM_SUFFIX = ".lock"
STALE_ENV = "CLOUDLULC_CLAIM_STALE_S"
DEFAULT_STALE_S = 60.0
"""Six missed beats of 10 s; no longer than the pipelines' first retry backoff (60 s, pipelines/platform.py), so a
retried map step on another pod finds a killed attempt's claim stale instead of burning its retry on exit 4."""


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as written into it."""

    pid: int
    host: str
    since: str
    command: str
    token: str
    beat: float = 0.0
    """When an S3 holder last showed it is alive (Unix time; local holders have the kernel's lock instead)."""

    @classmethod
    def me(cls) -> Holder:
        """This process, now."""
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200] if sys.argv else "python"
        return cls(os.getpid(), socket.gethostname(), since, command, uuid.uuid4().hex, time.time())

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        """The holder recorded in a claim; None for an empty or unreadable one (a holder still writing it)."""
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None

    def describe(self) -> str:
        """One phrase naming the holder."""
        return f"pid {self.pid} on {self.host} since {self.since} ({self.command})"

    def dumps(self) -> bytes:
        """The claim's content."""
        return json.dumps(asdict(self)).encode()


def claim_uri(uri: str) -> str:
    """Where the claim of output ``uri`` lives: ``<uri>.lock`` beside it."""
    return uri.rstrip("/") + CLAIM_SUFFIX


def _refuse(uri: str, holder: Holder | None) -> OutputBusyError:
    who = holder.describe() if holder else "a run that is just starting"
    return OutputBusyError(
        f"{uri}: output in use by {who}; wait for it to finish or choose another output (claim {claim_uri(uri)})"
    )


@contextmanager
def claim_output(uri: str) -> Iterator[Holder]:
    """Hold output ``uri`` (a file or folder, local or ``s3://``) for the block; released on exit.

    Raises:
        OutputBusyError: another live run holds it (the message names that run).
    """
    if is_s3_uri(uri):
        with _s3_claim(uri) as holder:
            yield holder
    else:
        with _local_claim(uri) as holder:
            yield holder


def _open_locked(lock: Path, uri: str) -> int:
    """An open descriptor of ``lock`` holding its ``flock``; refuses when a live process holds it."""
    for _ in range(20):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_local(fd)
            os.close(fd)
            raise _refuse(uri, holder) from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder released (removed) the file between our open and our lock: again
    raise StorageError(f"{lock}: cannot take the output's lock (it keeps being replaced)")


def _read_local(fd: int) -> Holder | None:
    """The holder written in a held lock file, waiting briefly for a holder that has just taken it."""
    for _ in range(10):
        holder = Holder.parse(os.pread(fd, 4096, 0))
        if holder is not None:
            return holder
        time.sleep(0.05)
    return None


@contextmanager
def _local_claim(uri: str) -> Iterator[Holder]:
    output = Path(uri).resolve()
    lock = output.with_name(output.name + CLAIM_SUFFIX)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(lock, uri)
    except OSError as error:
        raise StorageError(f"{lock}: cannot create the output's lock ({error.strerror})") from error
    try:
        previous = Holder.parse(os.pread(fd, 4096, 0))
        if previous is not None:
            log.warning("%s: taking over the claim of %s, which is gone", uri, previous.describe())
        me = Holder.me()
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.dumps(), 0)
        yield me
    finally:
        lock.unlink(missing_ok=True)  # before unlocking: see the module doc
        os.close(fd)


def _stale(holder: Holder) -> bool:
    """Whether an S3 claim's holder is gone: a dead process on this host, or older than the timeout."""
    beat = holder.beat or datetime.strptime(holder.since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    return holder_gone(holder.host, holder.pid, beat, _stale_after_s())


def _stale_after_s() -> float:
    return float(os.environ.get(STALE_ENV, DEFAULT_STALE_S))


def _heartbeat(storage: S3Storage, key: str, me: Holder, stop: threading.Event) -> None:
    """Refresh the claim's beat until ``stop``, so a live holder never looks stale; stop if it was taken."""
    while not stop.wait(_stale_after_s() / 6):
        try:
            current = _read_s3(storage, key)
            if current is None or current.token != me.token:
                log.warning("%s: claim lost to %s", storage.join(key), current.describe() if current else "nobody")
                return
            storage.write_bytes(key, replace(me, beat=time.time()).dumps())
        except StorageError as error:  # an outage: the next beat may get through
            log.warning("%s", error)


def _read_s3(storage: S3Storage, key: str) -> Holder | None:
    try:
        return Holder.parse(storage.read_bytes(key))
    except MissingObjectError:
        return None


@contextmanager
def _s3_claim(uri: str) -> Iterator[Holder]:
    bucket, _, key = uri.removeprefix("s3://").rstrip("/").partition("/")
    storage = S3Storage(f"s3://{bucket}")
    lock_key = f"{key}{CLAIM_SUFFIX}" if key else f".cloudlulc{CLAIM_SUFFIX}"
    me = Holder.me()
    for _ in range(3):
        if storage.write_bytes(lock_key, me.dumps(), if_absent=True):
            break
        holder = _read_s3(storage, lock_key)
        if holder is not None and not _stale(holder):
            raise _refuse(uri, holder)
        if holder is not None:
            log.warning("%s: taking over the claim of %s, which is gone", uri, holder.describe())
            storage.delete(lock_key)
    else:
        raise _refuse(uri, _read_s3(storage, lock_key))
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(storage, lock_key, me, stop), name="claim-beat", daemon=True)
    beat.start()
    try:
        yield me
    finally:
        stop.set()
        beat.join()
        current = _read_s3(storage, lock_key)
        if current is not None and current.token == me.token:
            storage.delete(lock_key)
