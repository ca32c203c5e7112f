"""Exceptions that entry points turn into a one-line message and an exit code.

Every error names the file, URI or field at fault, so a user can act on the message alone.
"""

from __future__ import annotations


class CloudLULCError(Exception):
    """Base class: a problem the user can fix; the CLI prints it without a traceback."""

    exit_code: int = 1


class UsageError(CloudLULCError):
    """Arguments that cannot work together or are out of range, found before any work starts."""

    exit_code = 2


class SourcedError(CloudLULCError):
    """An error about one file, URI or run: ``source`` names it, ``problem`` says what is wrong."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class DataError(SourcedError):
    """Input data is unreadable, malformed or breaks the data contract."""

    exit_code = 3


class DivergedError(SourcedError):
    """The training loss stopped being a finite number; the run stops before saving anything of that epoch."""

    exit_code = 1

    def __init__(self, run: str, problem: str) -> None:
        super().__init__(run, f"training diverged: {problem}")


class StorageError(CloudLULCError):
    """An object store or folder cannot be reached, listed or written."""

    exit_code = 4


class OutputBusyError(StorageError):
    """Another run holds the output (see ``io.claim``); this run stops before writing and names the holder."""

    exit_code = 4


class MissingObjectError(StorageError):
    """The storage answered, but the named file or object is not there: an input problem, not an outage."""

    exit_code = 3


class ExportError(CloudLULCError):
    """A model cannot be exported or compiled, or the export fails its parity check."""

    exit_code = 5


class ServingError(CloudLULCError):
    """A Triton server is unreachable, refuses a request, or serves a model that fails its check."""

    exit_code = 6
