"""Generator throughput: synthetic samples per second at 512x512 on one core, scene vs file writing.

Usage: python benchmarks/bench_synth.py [--n 20] [--size 512]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from common import pin_to_one_core, save

from cloudlulc.data.synthetic import SynthConfig, generate_dataset
from cloudlulc.data.synthetic_scene import make_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    pin_to_one_core()
    make_scene(np.random.default_rng(0), args.size)  # warm-up (imports, allocator)

    start = time.perf_counter()
    for index in range(args.n):
        make_scene(np.random.default_rng([99, index]), args.size)
    scene_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        generate_dataset(folder, SynthConfig(n=args.n, size=args.size, seed=99), workers=1, progress=False)
        total_seconds = time.perf_counter() - start

    save(
        "synth",
        {
            "command": f"python benchmarks/bench_synth.py --n {args.n} --size {args.size}",
            "samples": args.n,
            "size": args.size,
            "samples_per_s_one_core": round(args.n / total_seconds, 3),
            "seconds_per_sample": round(total_seconds / args.n, 3),
            "of_which_scene_arrays_s": round(scene_seconds / args.n, 3),
            "of_which_geotiff_writing_s": round((total_seconds - scene_seconds) / args.n, 3),
        },
    )


if __name__ == "__main__":
    main()
