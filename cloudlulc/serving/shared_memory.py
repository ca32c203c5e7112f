"""Triton system shared memory for a client on the server's host: tiles and probabilities skip the socket.

Each calling thread owns one region (``/dev/shm``) that holds its request's ``optical`` and ``sar`` and
the ``probs`` Triton writes back, registered with the server once and grown when a larger batch comes.
Registering is a repository-API call (restricted by the key), so only a keyed client can use it.
Whether it pays is measured in docs/benchmarks.md (``benchmarks/bench_serving.py --transports``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Region:
    """One registered region: its Triton name, handle and size in bytes."""

    name: str
    handle: Any
    size: int


class SharedMemorySlots:
    """Per-thread regions for requests of float32 inputs and one float32 output."""

    def __init__(self, register: Callable[[str, str, int], None], unregister: Callable[[str], None]) -> None:
        self._register, self._unregister = register, unregister
        self._local = threading.local()
        self._regions: list[Region] = []
        self._lock = threading.Lock()

    def region(self, size: int) -> Region:
        """This thread's region, (re)created when smaller than ``size`` bytes."""
        import tritonclient.utils.shared_memory as shm

        current: Region | None = getattr(self._local, "region", None)
        if current is not None and current.size >= size:
            return current
        if current is not None:
            self._release(current)
        name = f"cloudlulc_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, f"/{name}", size)
        try:
            self._register(name, f"/{name}", size)
        except BaseException:
            shm.destroy_shared_memory_region(handle)
            raise
        region = Region(name, handle, size)
        with self._lock:
            self._regions.append(region)
        self._local.region = region
        return region

    def write(self, region: Region, arrays: Sequence[np.ndarray]) -> list[int]:
        """Copy ``arrays`` one after the other into ``region``; their byte offsets."""
        import tritonclient.utils.shared_memory as shm

        shm.set_shared_memory_region(region.handle, list(arrays))
        return [int(offset) for offset in np.cumsum([0, *[a.nbytes for a in arrays[:-1]]])]

    @staticmethod
    def read(region: Region, shape: tuple[int, ...], offset: int) -> np.ndarray:
        """A copy of the float32 array of ``shape`` at ``offset`` (the region is reused by the next request)."""
        import tritonclient.utils.shared_memory as shm

        return np.array(shm.get_contents_as_numpy(region.handle, np.float32, list(shape), offset=offset))

    def _release(self, region: Region) -> None:
        import tritonclient.utils.shared_memory as shm

        try:
            self._unregister(region.name)
        finally:
            shm.destroy_shared_memory_region(region.handle)
            with self._lock:
                self._regions.remove(region)

    def close(self) -> None:
        """Unregister and free every region (the server may be gone: freeing still happens)."""
        for region in list(self._regions):
            with contextlib.suppress(Exception):  # the server is unreachable: its registration dies with it
                self._release(region)
