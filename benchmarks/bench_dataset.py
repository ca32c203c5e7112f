"""Dataset read throughput versus a plain rasterio read of the same files, side by side in one run.

Both paths read the five rasters of each sample (cloudy optics, VV, VH, label); the dataset also checks
band counts and grids, scales values and builds tensors. Rounds alternate between the two paths so
that machine noise hits both alike. Target: dataset rate >= 0.8 x plain rate.

Usage: python benchmarks/bench_dataset.py [--n 40] [--size 512] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import rasterio
from common import pin_to_one_core, save

from cloudlulc.data.dataset import CloudLULCDataset
from cloudlulc.data.synthetic import SynthConfig, generate_dataset


def plain_read(dataset: CloudLULCDataset) -> None:
    for record in dataset.records:
        for path in (record.opt_cloudy, record.sar_vv, record.sar_vh, record.label):
            with rasterio.open(dataset.layout.uri(path)) as source:
                source.read()


def dataset_read(dataset: CloudLULCDataset) -> None:
    for index in range(len(dataset)):
        dataset[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pin_to_one_core()
    with tempfile.TemporaryDirectory() as folder:
        generate_dataset(
            folder,
            SynthConfig(n=args.n, size=args.size, seed=5, train_fraction=1.0, val_fraction=0.0),
            workers=1,
            progress=False,
        )
        dataset = CloudLULCDataset(folder, ("train", "val", "test"))
        plain_read(dataset)  # warm the page cache for both paths
        rates: dict[str, list[float]] = {"plain": [], "dataset": []}
        for _ in range(args.rounds):
            for name, function in (("plain", plain_read), ("dataset", dataset_read)):
                start = time.perf_counter()
                function(dataset)
                rates[name].append(len(dataset) / (time.perf_counter() - start))
    plain, ours = statistics.median(rates["plain"]), statistics.median(rates["dataset"])
    save(
        "dataset_read",
        {
            "command": f"python benchmarks/bench_dataset.py --n {args.n} --size {args.size} --rounds {args.rounds}",
            "samples": len(dataset),
            "size": args.size,
            "plain_rasterio_samples_per_s": round(plain, 2),
            "dataset_samples_per_s": round(ours, 2),
            "ratio": round(ours / plain, 3),
            "target_ratio": 0.8,
        },
    )


if __name__ == "__main__":
    main()
