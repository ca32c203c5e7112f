"""Worker process pools whose workers die with their parent.

A ``ProcessPoolExecutor`` worker blocks on its task queue; when the parent is killed (SIGKILL, the OOM
killer) nothing tells the worker, so it waits forever holding its memory. On Linux each worker asks the
kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), then checks the parent is still
the one that started it: a parent that died between the fork and the ``prctl`` would otherwise go
unnoticed (the worker has already been re-parented). The signal is tied to the *thread* that created
the worker, so pools must be made from a thread that lives as long as the pool (the main thread here).
Elsewhere the pool is an ordinary one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1
"""``prctl`` option from <linux/prctl.h>: the signal a process gets when its parent dies."""


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: SIGKILL this worker when ``parent_pid`` dies; exit at once if it already has."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not fatal: the pool still works, only without the guarantee
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the prctl took effect


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` whose workers are killed with this process (see the module doc)."""
    return ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),))
