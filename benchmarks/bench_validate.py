"""Validation time for a synthetic CloudLULC-Set (default 1,000 samples at 512x512).

Generation is not timed. Usage: python benchmarks/bench_validate.py [--n 1000] [--size 512] [--workers 2]
[--keep DIR] (reuse or keep the generated set in DIR; otherwise a temporary folder is used).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import save

from cloudlulc.data.synthetic import SynthConfig, generate_dataset
from cloudlulc.validation import validate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = str(args.keep or Path(scratch) / "set")
        start = time.perf_counter()
        generate_dataset(root, SynthConfig(n=args.n, size=args.size, seed=21), workers=args.workers)
        generation = time.perf_counter() - start
        start = time.perf_counter()
        report = validate_dataset(root, workers=args.workers, progress=False)
        seconds = time.perf_counter() - start
    assert report.success, report.failures[:5]
    save(
        "validate",
        {
            "command": f"python benchmarks/bench_validate.py --n {args.n} --size {args.size} --workers {args.workers}",
            "samples": args.n,
            "size": args.size,
            "workers": args.workers,
            "validation_seconds": round(seconds, 1),
            "samples_per_s": round(args.n / seconds, 2),
            "generation_seconds_untimed_stage": round(generation, 1),
        },
    )


if __name__ == "__main__":
    main()
