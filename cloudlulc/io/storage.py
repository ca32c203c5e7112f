"""One storage layer for a local folder and an ``s3://`` URI.

Callers address objects by a key relative to a root URI and never learn which backend holds them.
Writes are atomic on both: a local write goes to a temporary name in the same folder and is renamed;
an S3 object only becomes visible when its upload completes. ``if_absent=True`` turns a write into a
create-only write (a hard link locally, ``If-None-Match: *`` on S3), which later stages use for locks
and manifests.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cloudlulc.errors import MissingObjectError, StorageError

log = logging.getLogger(__name__)

S3_ENDPOINT_VARIABLES = ("CLOUDLULC_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Environment variables read, in this order, for a custom S3 endpoint (MinIO, moto, Ceph...)."""


class Storage(Protocol):
    """What every backend offers; keys are relative, ``/``-separated."""

    @property
    def uri(self) -> str:
        """The root this storage was opened at."""
        ...

    def join(self, key: str) -> str:
        """Full URI (or local path) of ``key``, for GDAL and for messages."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object or file is present at ``key``."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The whole object; raises StorageError naming the URI when missing."""
        ...

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        """Write atomically; with ``if_absent`` return False instead of replacing an existing object."""
        ...

    def upload_file(self, local_path: Path, key: str) -> None:
        """Copy a finished local file to ``key`` atomically."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys under ``prefix``, recursively; temporary files are never listed."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error (deletes are retried after crashes)."""
        ...

    def sha256(self, key: str) -> str:
        """Hex SHA-256 of ``key``, streamed in blocks so memory does not grow with the object.

        Raises MissingObjectError when ``key`` is absent, StorageError when it cannot be read.
        """
        ...


def is_s3_uri(uri: str) -> bool:
    """Whether ``uri`` names an S3 location."""
    return uri.startswith("s3://")


def open_storage(uri: str | Path, *, endpoint_url: str | None = None) -> Storage:
    """Storage rooted at a local folder or an ``s3://bucket/prefix`` URI."""
    uri = str(uri)
    if is_s3_uri(uri):
        return S3Storage(uri, endpoint_url=endpoint_url)
    return LocalStorage(Path(uri))


def join_uri(root: str, key: str) -> str:
    """Join a root URI or path and a relative key with exactly one ``/``."""
    return f"{root.rstrip('/')}/{key.lstrip('/')}" if key else root


TEMP_MARKER = ".tmp-"
DIGEST_BLOCK = 1 << 20
"""Bytes per read while hashing (the memory of a checksum does not depend on the object)."""


def is_temporary(key: str) -> bool:
    """Whether a key is an in-flight temporary write (never a finished object)."""
    return TEMP_MARKER in key.rsplit("/", 1)[-1]


@contextmanager
def atomic_local_path(final_path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename onto it only if the block succeeds.

    The temporary file sits in the same folder (same filesystem, so the rename is atomic) and keeps
    the suffix, so GDAL picks the right driver and its sidecar files land beside it.
    """
    final_path.parent.mkdir(parents=True, exist_ok=True)
    temp_path = final_path.with_name(f".{final_path.stem}{TEMP_MARKER}{_owner_tag()}{final_path.suffix}")
    try:
        yield temp_path
        os.replace(temp_path, final_path)
    finally:
        temp_path.unlink(missing_ok=True)


def _owner_tag() -> str:
    """``<pid>-<host hash>-<random>``: who writes a temporary file, so a later run can tell a dead writer's."""
    return f"{os.getpid()}-{_HOST_TAG}-{uuid.uuid4().hex[:8]}"


_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def holder_gone(host: object, pid: object, last_seen: float, stale_s: float) -> bool:
    """Whether the holder of a lock or claim is gone: a dead process on this host, or not seen for ``stale_s``.

    One rule for the promotion lock and the output claims: a killed holder on this host is known at once,
    one on another host (a killed pod) only by its silence.
    """
    if host == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid):
        return True
    return time.time() - last_seen > stale_s


def remove_stale_temporaries(folder: Path, *, recursive: bool = False) -> list[Path]:
    """Delete the temporary files under ``folder`` whose writer was killed; return them.

    A SIGKILL runs no cleanup, so a killed writer leaves ``.<name>.tmp-<pid>-<host>-...`` files (and GDAL
    sidecars of them). Only files written on this host by a pid that no longer exists are removed: a live
    writer's file (here, or on another host sharing the folder) is never touched, and names without an
    owner (written before owners were recorded) are left alone. Called once by a successful run, not per
    write: listing a large folder for every file would make writing a dataset quadratic.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(f"*{TEMP_MARKER}*") if recursive else folder.glob(f"*{TEMP_MARKER}*"):
        pid, _, rest = path.name.rsplit(TEMP_MARKER, 1)[1].partition("-")
        if pid.isdigit() and rest.partition("-")[0] == _HOST_TAG and not pid_alive(int(pid)) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@dataclass
class LocalStorage:
    """A folder on a local or mounted filesystem."""

    root: Path

    @property
    def uri(self) -> str:
        return str(self.root)

    def join(self, key: str) -> str:
        return str(self.root / key)

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

    def read_bytes(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError as error:
            raise MissingObjectError(f"{self.join(key)}: no such file") from error
        except OSError as error:
            raise StorageError(f"{self.join(key)}: cannot read ({error.strerror})") from error

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        final_path = self.root / key
        try:
            if if_absent:
                return self._create_only(final_path, data)
            with atomic_local_path(final_path) as temp_path:
                temp_path.write_bytes(data)
            return True
        except OSError as error:
            raise StorageError(f"{final_path}: cannot write ({error.strerror})") from error

    @staticmethod
    def _create_only(final_path: Path, data: bytes) -> bool:
        """Publish a complete file with a hard link, which fails atomically if the name is taken."""
        final_path.parent.mkdir(parents=True, exist_ok=True)
        temp_path = final_path.with_name(f".{final_path.name}{TEMP_MARKER}{_owner_tag()}")
        try:
            temp_path.write_bytes(data)
            os.link(temp_path, final_path)
            return True
        except FileExistsError:
            return False
        finally:
            temp_path.unlink(missing_ok=True)

    def upload_file(self, local_path: Path, key: str) -> None:
        final_path = self.root / key
        try:
            with atomic_local_path(final_path) as temp_path:
                shutil.copyfile(local_path, temp_path)
        except OSError as error:
            raise StorageError(f"{final_path}: cannot write ({error.strerror})") from error

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix
        if not base.exists():
            return []
        if base.is_file():
            return [prefix]
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not is_temporary(k))

    def delete(self, key: str) -> None:
        path = self.root / key
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(f"{path}: cannot delete ({error.strerror})") from error
        # Like an object store, leave no empty folders behind (a model server would read one as a version).
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            if parent.exists():
                if any(parent.iterdir()):
                    break
                parent.rmdir()

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        try:
            with (self.root / key).open("rb") as handle:
                for block in iter(lambda: handle.read(DIGEST_BLOCK), b""):
                    digest.update(block)
        except FileNotFoundError as error:
            raise MissingObjectError(f"{self.join(key)}: no such file") from error
        except OSError as error:
            raise StorageError(f"{self.join(key)}: cannot read ({error.strerror})") from error
        return digest.hexdigest()


def s3_endpoint_url(explicit: str | None = None) -> str | None:
    """The S3 endpoint to use: the explicit one, else the first variable of S3_ENDPOINT_VARIABLES set."""
    if explicit:
        return explicit
    return next((os.environ[v] for v in S3_ENDPOINT_VARIABLES if os.environ.get(v)), None)


def _s3_client(endpoint_url: str | None, uri: str):
    """A boto3 S3 client, one per endpoint and credentials, reused across Storage objects."""
    import boto3  # lazy: local-only runs never pay for it
    from botocore.exceptions import BotoCoreError

    try:
        credentials = boto3.session.Session().get_credentials()
    except BotoCoreError as error:  # e.g. AWS_PROFILE names a profile that does not exist
        raise StorageError(
            f"{uri}: cannot load S3 credentials ({error}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or a valid AWS_PROFILE), and CLOUDLULC_S3_ENDPOINT_URL for a non-AWS endpoint"
        ) from error
    if credentials is None:
        raise StorageError(
            f"{uri}: no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE), and CLOUDLULC_S3_ENDPOINT_URL for a non-AWS endpoint"
        )
    frozen = credentials.get_frozen_credentials()
    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "5")
    return _cached_s3_client(endpoint_url, frozen.access_key, frozen.secret_key, frozen.token, attempts)


@functools.lru_cache(maxsize=8)
def _cached_s3_client(endpoint_url: str | None, access_key: str, secret_key: str, token: str | None, attempts: str):
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": int(attempts), "mode": "standard"}, connect_timeout=10, read_timeout=60)
    session = boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
        region_name=os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1")),
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


BODY_ATTEMPTS = 3
"""Reads of one object whose body is cut mid-stream before the read fails (waits 0.5 and 1 s between)."""


class S3Storage:
    """A bucket and key prefix on S3 or any S3-compatible server, through boto3."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise StorageError(f"{uri}: an S3 URI needs a bucket, e.g. s3://bucket/prefix")
        self.uri = uri.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = s3_endpoint_url(endpoint_url)
        self.client = _s3_client(self.endpoint_url, uri)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def join(self, key: str) -> str:
        return join_uri(self.uri, key)

    def _fail(self, key: str, action: str, error: Exception) -> StorageError:
        where = f" (endpoint {self.endpoint_url})" if self.endpoint_url else ""
        return StorageError(f"{self.join(key)}: cannot {action}{where}: {error}")

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise self._fail(key, "check", error) from error
        except BotoCoreError as error:
            raise self._fail(key, "check", error) from error

    @contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        """A missing object becomes MissingObjectError, any other S3 failure a StorageError naming the key."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NoSuchBucket"}:
                raise MissingObjectError(f"{self.join(key)}: no such object") from error
            raise self._fail(key, "read", error) from error
        except BotoCoreError as error:
            raise self._fail(key, "read", error) from error

    def read_bytes(self, key: str) -> bytes:
        """The object's bytes, whole: a body cut mid-stream is fetched again (up to BODY_ATTEMPTS times).

        boto retries a request that fails, not a response it is already reading, so one connection reset
        during a download would otherwise end the read (measured: docs/benchmarks.md, "Network faults").
        """
        from botocore.exceptions import IncompleteReadError, ResponseStreamingError

        for attempt in range(1, BODY_ATTEMPTS + 1):
            with self._reading(key):
                body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
                try:
                    return bytes(body.read())
                except (ResponseStreamingError, IncompleteReadError) as error:
                    if attempt == BODY_ATTEMPTS:
                        raise
                    log.warning("%s: read cut after a partial body (%s); reading again", self.join(key), error)
                    time.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
            return True
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if if_absent and code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return False
            raise self._fail(key, "write", error) from error
        except BotoCoreError as error:
            raise self._fail(key, "write", error) from error

    def upload_file(self, local_path: Path, key: str) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.upload_file(str(local_path), self.bucket, self._key(key))
        except (ClientError, BotoCoreError, S3UploadFailedError) as error:
            raise self._fail(key, "write", error) from error

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full_prefix = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full_prefix):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as error:
            raise self._fail(prefix, "list", error) from error
        return sorted(k for k in keys if not is_temporary(k))

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as error:
            raise self._fail(key, "delete", error) from error

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self._reading(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            for chunk in body.iter_chunks(DIGEST_BLOCK):
                digest.update(chunk)
        return digest.hexdigest()


@contextmanager
def staged_output(uri: str) -> Iterator[Path]:
    """Yield a local path to write ``uri`` to; it is published atomically when the block succeeds.

    A local file is written beside its final name and renamed; an ``s3://`` object is written to a
    local temporary folder and uploaded, so readers never see a half-written file on either backend.
    """
    if not is_s3_uri(uri):
        with atomic_local_path(Path(uri)) as temp_path:
            yield temp_path
        return
    parent, _, name = uri.rpartition("/")
    with tempfile.TemporaryDirectory(prefix="cloudlulc-") as folder:
        temp_path = Path(folder) / name
        yield temp_path
        S3Storage(parent).upload_file(temp_path, name)
