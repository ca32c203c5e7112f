"""How long a CLI command takes before it does anything: ``cloudlulc --help`` and ``cloudlulc map --help``.

Each command runs ``--runs`` times in a fresh interpreter; the table gives the median wall seconds and
the peak resident memory. With ``--baseline REV`` the same commands also run on the package as it was
at git revision ``REV`` (unpacked to a temporary folder, first on ``PYTHONPATH``), alternating with the
working tree's, so the ratio comes from one run.

Usage: python benchmarks/bench_cli_start.py [--runs 7] [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from common import save

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"help": ["--help"], "map_help": ["map", "--help"]}


def unpack(revision: str, folder: Path) -> Path:
    """The ``cloudlulc`` package at ``revision``, unpacked under ``folder``."""
    archive = subprocess.run(["git", "archive", revision, "cloudlulc"], cwd=REPO, capture_output=True, check=True)
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def run_once(arguments: list[str], package_root: Path) -> tuple[float, int]:
    """(wall seconds, peak resident MB) of one ``python -m cloudlulc ...`` with ``package_root`` first."""
    environment = {**os.environ, "PYTHONPATH": str(package_root)}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "cloudlulc", *arguments], stdout=subprocess.DEVNULL, env=environment
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"cloudlulc {' '.join(arguments)} failed under {package_root}")
    return wall, usage.ru_maxrss // 1024


def measure(roots: dict[str, Path], runs: int) -> dict[str, dict[str, float]]:
    """Median wall seconds and peak MB per (tree, command), the trees alternating run by run."""
    samples: dict[str, list[tuple[float, int]]] = {f"{tree}/{name}": [] for tree in roots for name in COMMANDS}
    for _ in range(runs):
        for tree, root in roots.items():
            for name, arguments in COMMANDS.items():
                samples[f"{tree}/{name}"].append(run_once(arguments, root))
    return {
        key: {"median_s": round(statistics.median(w for w, _ in values), 3), "peak_mb": max(m for _, m in values)}
        for key, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", help="a git revision to measure side by side (e.g. HEAD~1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloudlulc-cli-start-") as folder:
        roots = {"current": REPO}
        if args.baseline:
            roots["baseline"] = unpack(args.baseline, Path(folder))
        figures = measure(roots, args.runs)
    for key, value in figures.items():
        print(f"{key:22s} {value['median_s']:6.2f} s  {value['peak_mb']:5d} MB")
    if args.baseline:
        for name in COMMANDS:
            ratio = figures[f"baseline/{name}"]["median_s"] / figures[f"current/{name}"]["median_s"]
            print(f"{name}: {ratio:.1f}x faster than {args.baseline}")
    save("cli_start", {"runs": args.runs, "baseline": args.baseline, "figures": figures})


if __name__ == "__main__":
    main()
