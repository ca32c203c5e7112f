"""Helpers shared by the benchmark scripts: one-core pinning, timing, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(os.environ.get("CLOUDLULC_BENCH_OUT", "outputs/benchmarks"))


def pin_to_one_core() -> None:
    """Run on a single core with single-threaded numeric libraries (the issue's 'one core')."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GDAL_NUM_THREADS"):
        os.environ[name] = "1"
    import torch

    torch.set_num_threads(1)


def timed(function: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version(), "machine": platform.machine()}


def save(name: str, result: dict[str, object]) -> Path:
    """Write a result as JSON under outputs/benchmarks/ and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, "machine": machine()}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
