"""Readable progress for local pipeline runs: step status on the console, the full output in a log file.

``kfp.local`` prints every executor's full input and output; that detail goes to the log, and the
console shows one line per step as it starts and ends (and the log's tail when a step fails).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STATUS = re.compile(
    r"(Executing task '[^']+'|Task '[^']+' finished with status \w+|"
    r"Pipeline '[^']+' finished with status \w+)"
)


@contextmanager
def step_log(log_path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (and its children's) to ``log_path``; echo step status lines."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    console = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    done = threading.Event()
    with log_path.open("ab") as log:
        start = log.tell()
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)

        def follow() -> None:
            with log_path.open("rb") as reader:
                reader.seek(start)
                while True:
                    line = reader.readline()
                    if not line:
                        if done.is_set():
                            return
                        time.sleep(0.2)
                        continue
                    match = _STATUS.search(_ANSI.sub("", line.decode(errors="replace")))
                    if match:
                        console.write(f"      {match.group(1)}\n")

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            yield
        except BaseException:
            sys.stdout.flush()
            sys.stderr.flush()
            tail = log_path.read_bytes()[start:].decode(errors="replace").splitlines()[-25:]
            console.write("\n".join(_ANSI.sub("", line) for line in tail) + f"\n(full log: {log_path})\n")
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            done.set()
            follower.join(timeout=5)
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            console.close()
