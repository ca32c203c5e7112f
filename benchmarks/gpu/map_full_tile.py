"""A full Sentinel-2 tile mapped in-process with the PyTorch model on a GPU: seconds end to end and on the GPU.

Writes the synthetic 10980 x 10980 tile of ``bench_mapping.write_full_tile`` (10/20/60 m optics stacked
by a VRT, SAR on another UTM zone), maps it with ``map_scene`` and the ``torch_predictor`` of
``cloudlulc map --checkpoint ... --device cuda`` (bf16 autocast, channels-last, pinned transfers), and
reports seconds per tile end to end and inside the predictor with the GPU synchronised (GPU-only), for
an untrained network of the chosen size (speed does not depend on the weights). Goal on one H100/H200:
a full tile end to end in <= 5 s (issue 18). Runs on the CPU too, for a smoke test with a small side.

Usage: python benchmarks/gpu/map_full_tile.py [--device cuda] [--size tiny] [--batch 16] [--in-flight 2]
       [--side-m 109800] [--out folder]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench_mapping, common

from bench_mapping import write_full_tile

from cloudlulc.mapping.options import MapOptions
from cloudlulc.mapping.region import map_scene
from cloudlulc.models.config import model_config
from cloudlulc.models.inference import torch_predictor
from cloudlulc.models.networks import build_model

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def timed(predict: Predictor, device: str) -> tuple[Predictor, dict[str, float]]:
    """The predictor, counting its calls and their seconds (GPU synchronised; calls overlap when in flight > 1)."""
    spent = {"seconds": 0.0, "calls": 0}

    def call(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        result = predict(optical, sar)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        spent["seconds"] += time.perf_counter() - started
        spent["calls"] += 1
        return result

    return call, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--side-m", type=int, default=109_800)
    parser.add_argument("--out", default="outputs/benchmarks/gpu")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    network = build_model(model_config("cloudlulc_net", args.size))
    with tempfile.TemporaryDirectory(prefix="full-tile-") as folder:
        started = time.perf_counter()
        optical, sar = write_full_tile(Path(folder), args.side_m)
        written_s = time.perf_counter() - started
        predict, spent = timed(torch_predictor(network, device=args.device), args.device)
        warm = np.zeros((args.batch, 12, args.tile, args.tile), np.float32)
        predict(warm, np.zeros((args.batch, 2, args.tile, args.tile), np.float32))  # kernels chosen before timing
        spent.update(seconds=0.0, calls=0)
        options = MapOptions(tile=args.tile, overlap=64, batch_size=args.batch, in_flight=args.in_flight)
        started = time.perf_counter()
        result = map_scene(
            str(optical),
            str(sar),
            str(Path(folder) / "map.tif"),
            predict,
            options=options,
            progress=False,
            model_id=f"untrained:{args.size}",
        )
        seconds = time.perf_counter() - started
    megapixels = result.width * result.height / 1e6
    figures = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "size": args.size,
        "pixels": [result.height, result.width],
        "tiles": result.tiles,
        "batch": args.batch,
        "in_flight": args.in_flight,
        "inputs_written_s": round(written_s, 1),
        "end_to_end_s": round(seconds, 2),
        "predictor_call_s": round(spent["seconds"], 2),  # summed over calls; GPU-only with --in-flight 1
        "mpx_per_s": round(megapixels / seconds, 2),
        "goal_full_tile_s": 5.0,
    }
    print(json.dumps(figures, indent=2))
    (out / "map_full_tile.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
