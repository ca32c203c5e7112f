"""Serving overhead: one synthetic scene mapped through the local Triton over gRPC and in-process ONNX Runtime.

Triton serves the export from a model repository as ``cloudlulc_cpu`` (Python backend, explicit model
control). Both paths run the same ONNX export, tiles, batches and requests in flight, one after the
other in one run, alternating over rounds; the figure is Mpx/s of each and the ratio Triton /
in-process (goal >= 0.85). ``triton_shm`` is the same client passing tensors through Triton's system
shared memory instead of the gRPC message (``TritonClient(shared_memory=True)``), measured alongside.

Usage: python benchmarks/bench_serving.py [--size 4096] [--tile 512] [--rounds 2] [--onnx model.onnx]
[--instances 1] [--onnx-threads 0]
(without --onnx an untrained tiny CloudLULC-Net is exported: throughput does not depend on the weights).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_mapping import write_large_inputs
from common import save

from cloudlulc.export import onnxruntime_runner
from cloudlulc.export.onnx import threads_per_call, write_onnx_graph
from cloudlulc.mapping import map_scene
from cloudlulc.mapping.options import MapOptions
from cloudlulc.models.config import model_config
from cloudlulc.models.networks import build_model
from cloudlulc.serving import CPU_MODEL, GoldenSample, LocalTriton, ModelRepository, ServingSettings, TritonClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--onnx", default=None)
    parser.add_argument(
        "--instances",
        type=int,
        default=ServingSettings.python_instances,
        help="Python-backend instances of cloudlulc_cpu.",
    )
    parser.add_argument(
        "--onnx-threads",
        type=int,
        default=ServingSettings.python_threads,
        help="ONNX Runtime intra-op threads per instance (0: every core).",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder_name:
        folder = Path(folder_name)
        optical, sar = write_large_inputs(folder, args.size)
        onnx_path = Path(args.onnx) if args.onnx else folder / "model.onnx"
        if not args.onnx:
            write_onnx_graph(build_model(model_config("cloudlulc_net", "tiny")), onnx_path)
        seconds: dict[str, list[float]] = {"in_process": [], "triton": [], "triton_shm": []}
        run = onnxruntime_runner(onnx_path, threads_per_call(args.in_flight))  # what `cloudlulc map --onnx` runs
        sample = np.zeros((1, 12, 64, 64), np.float32), np.zeros((1, 2, 64, 64), np.float32)
        repository = ModelRepository(str(folder / "repository"))
        settings = ServingSettings(python_instances=args.instances, python_threads=args.onnx_threads)
        repository.publish(CPU_MODEL, onnx_path, GoldenSample(*sample, run(*sample)), {}, settings)
        with LocalTriton(folder / "triton") as server:
            state = server.start(repository.uri)
            with (
                TritonClient(state.grpc_url) as client,
                TritonClient(state.grpc_url, repository_key=server.key(), shared_memory=True) as shm_client,
            ):
                client.check_contract(CPU_MODEL, "1")
                runners = {
                    "in_process": run,
                    "triton": lambda o, s: client.infer(CPU_MODEL, o, s, "1"),
                    "triton_shm": lambda o, s: shm_client.infer(CPU_MODEL, o, s, "1"),
                }
                for round_index in range(args.rounds):
                    for name, runner in runners.items():
                        out = folder / f"{name}_{round_index}.tif"
                        started = time.perf_counter()
                        map_scene(
                            str(optical),
                            str(sar),
                            str(out),
                            runner,
                            options=MapOptions(tile=args.tile, batch_size=args.batch, in_flight=args.in_flight),
                            progress=False,
                        )
                        seconds[name].append(time.perf_counter() - started)
    megapixels = args.size * args.size / 1e6
    rates = {name: megapixels / min(values) for name, values in seconds.items()}
    save(
        "serving_overhead",
        {
            "size": args.size,
            "tile": args.tile,
            "batch": args.batch,
            "in_flight": args.in_flight,
            "instances": args.instances,
            "onnx_threads": args.onnx_threads,
            "seconds": seconds,
            "mpx_per_s": rates,
            "triton_over_in_process": rates["triton"] / rates["in_process"],
            "triton_shm_over_in_process": rates["triton_shm"] / rates["in_process"],
            "shm_over_grpc": rates["triton_shm"] / rates["triton"],
        },
    )


if __name__ == "__main__":
    main()
