"""Checks every entry point runs before work starts: outputs apart from inputs, outputs writable, inputs reachable.

An output that lands on one of the run's inputs destroys the user's data and the run still "succeeds";
a storage problem found after an hour of inference loses the hour. Both are cheap to find first.
Paths are compared after resolving symlinks and ``..`` (local) or normalising the key (``s3://``).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from cloudlulc.errors import DataError, StorageError, UsageError
from cloudlulc.io.storage import TEMP_MARKER, S3Storage, is_s3_uri

Named = Mapping[str, str | None]
"""What the user called each path (an option such as ``--out``) -> the path or URI; None entries are skipped."""


def canonical(uri: str) -> str:
    """One spelling per location: symlinks and ``..`` resolved locally, the key normalised on S3."""
    if is_s3_uri(uri):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        key = posixpath.normpath(key) if key else ""
        return f"s3://{bucket}/{'' if key == '.' else key}".rstrip("/")
    return os.path.realpath(os.path.expanduser(uri))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _same_file(output: str, source: str) -> bool:
    """Two local names of one file (hard links too), or one canonical spelling."""
    if canonical(output) == canonical(source):
        return True
    if is_s3_uri(output) or is_s3_uri(source):
        return False
    try:
        return os.path.samefile(output, source)
    except OSError:
        return False


def check_outputs_apart(outputs: Named, *, files: Named | None = None, datasets: Named | None = None) -> None:
    """Refuse, before any work, an output that is one of the inputs or lies inside an input dataset.

    Args:
        outputs: every file the run writes (sidecars included), by the name the user knows it under.
        files: input files (a scene, a checkpoint, an ONNX model).
        datasets: input folders or ``s3://`` prefixes whose whole content is input (a CloudLULC-Set).

    Raises:
        UsageError: naming the output and the input it would replace (exit code 2).
    """
    for out_name, out in outputs.items():
        if not out:
            continue
        for in_name, source in (files or {}).items():
            if source and _same_file(out, source):
                raise UsageError(
                    f"{out_name} {out} would overwrite the input {in_name} {source}; choose another output"
                )
        for in_name, root in (datasets or {}).items():
            if root and _inside(canonical(out), canonical(root)):
                raise UsageError(
                    f"{out_name} {out} lies inside the input dataset {in_name} {root}; write outputs outside it"
                )


def probe_writable(uri: str, what: str) -> None:
    """Prove an output can be written where ``uri`` points, by creating and removing a temporary object there.

    Local: the folder is created if needed, then a temporary file in it; S3: a temporary object is put
    and deleted (its name is never listed as a finished object). Nothing of the probe stays behind.

    Raises:
        StorageError: the folder cannot be created (a path component is a file, read-only filesystem,
            permissions) or the bucket cannot be written (exit code 4), naming ``what`` and the URI.
    """
    if is_s3_uri(uri):
        parent, _, name = uri.rstrip("/").rpartition("/")
        storage = S3Storage(parent)
        key = f".{name}{TEMP_MARKER}probe-{uuid.uuid4().hex[:8]}"
        try:
            storage.write_bytes(key, b"")
            storage.delete(key)
        except StorageError as error:
            raise StorageError(f"{what} {uri} is not writable: {error}") from error
        return
    folder = Path(uri).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".probe{TEMP_MARKER}"):
            pass
    except OSError as error:
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else error.strerror or type(error).__name__
        raise StorageError(f"{what} {uri} is not writable: {reason}") from error


def probe_readable(uri: str, what: str) -> None:
    """Tell an unreachable object store (exit 4) from a missing input (exit 3) before GDAL opens ``uri``.

    Local paths are left to the reader, whose messages already name the file.
    """
    if not is_s3_uri(uri):
        return
    parent, _, name = uri.rstrip("/").rpartition("/")
    if not S3Storage(parent).exists(name):
        raise DataError(uri, f"{what} not found")
