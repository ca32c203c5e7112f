"""Serving reliability against the real local Triton (``cloudlulc_cpu``, explicit model control, keyed API).

Figures (goals of the serving design):
- reload under load: ``--clients`` gRPC clients send tiles for ``--seconds`` while version n -> n+1
  is promoted; failed requests (0) and p50 / p99 latency before, during and after;
- failed reloads while clients send tiles: a corrupt n+1 caught by the pre-check, and one that passes
  it but fails inside Triton (caught by the throwaway server of ``canary_load``); share answered by n
  (100 %) and readiness, the server's and the model's, sampled every 0.1 s;
- load/unload soak: ``--soak-cycles`` cycles, growth of the server's resident memory (<= 100 MB);
- restricted API: keyless repository, config and statistics calls over gRPC and HTTP refused (100 %)
  while clients send tiles (none failed);
- a client SIGKILLed mid-request: the server stays live and ready;
- deadlines, on a model slowed to 3 s: a 1 s client deadline ends in DEADLINE_EXCEEDED (<= 1.5 s), and
  ``cloudlulc map`` retries, then exits 6 naming server, model and version.

Usage: python benchmarks/bench_triton_reliability.py [--clients 32] [--seconds 60] [--soak-cycles 500]
[--tile 256] (an untrained tiny CloudLULC-Net export: the figures do not depend on the weights).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_mapping import write_large_inputs
from common import save

from cloudlulc.errors import ServingError
from cloudlulc.export import onnxruntime_runner
from cloudlulc.export.onnx import write_onnx_graph
from cloudlulc.models.config import model_config
from cloudlulc.models.networks import build_model
from cloudlulc.serving import (
    CPU_MODEL,
    GoldenSample,
    LocalTarget,
    LocalTriton,
    ModelRepository,
    ServingSettings,
    TritonClient,
    publish_and_serve,
)
from cloudlulc.serving.reliability import (
    BrokenInServerTarget,
    Readiness,
    TileLoad,
    deadline_probe,
    keyless_repository_calls,
    kill_client_mid_request,
    latency_summary,
    soak,
    tile_pair,
)


def golden_for(onnx: Path) -> GoldenSample:
    """The golden sample and the export's own answer to it."""
    optical, sar = tile_pair(64, seed=99)
    return GoldenSample(optical, sar, onnxruntime_runner(onnx, 1)(optical, sar))


def promotion_under_load(
    repository: ModelRepository,
    target: LocalTarget | BrokenInServerTarget,
    url: str,
    model_file: Path,
    golden: GoldenSample,
    clients: int,
    tile: int,
    seconds: float,
) -> dict[str, object]:
    """Clients pin the served version while a promotion starts after a third of ``seconds``."""
    served = repository.served_version(CPU_MODEL)
    marks: dict[str, object] = {}

    def promote() -> None:
        time.sleep(seconds / 3)
        marks["start"] = time.monotonic()
        try:
            marks["version"] = publish_and_serve(repository, target, model_file, golden, {}).version
        except ServingError as error:
            marks["refused"] = str(error)[:300]
        marks["end"] = time.monotonic()

    with (
        Readiness(url, model=CPU_MODEL) as readiness,
        TileLoad(url, CPU_MODEL, clients, tile, lambda: str(repository.served_version(CPU_MODEL))) as load,
    ):
        began = time.monotonic()
        promoter = threading.Thread(target=promote)
        promoter.start()
        promoter.join()
        time.sleep(max(0.0, began + seconds - time.monotonic()))
    start, end = float(marks["start"]), float(marks["end"])  # type: ignore[arg-type]
    answered_by_n = sum(a.version == str(served) for a in load.answers) / max(len(load.answers), 1)
    return {
        "promotion_s": round(end - start, 1),
        "outcome": marks.get("version", marks.get("refused")),
        "before": latency_summary(load.answers, 0, start),
        "during": latency_summary(load.answers, start, end),
        "after": latency_summary(load.answers, end),
        "all": latency_summary(load.answers),
        "answered_by_served_version": answered_by_n,
        "readiness": readiness.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of the reload-under-load run.")
    parser.add_argument("--failed-seconds", type=float, default=20.0, help="Length of each failed-reload run.")
    parser.add_argument("--soak-cycles", type=int, default=500)
    parser.add_argument("--tile", type=int, default=256)
    args = parser.parse_args()
    result: dict[str, object] = {"clients": args.clients, "seconds": args.seconds, "tile": args.tile}
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as folder_name:
        folder = Path(folder_name)
        onnx = folder / "model.onnx"
        write_onnx_graph(build_model(model_config("cloudlulc_net", "tiny")), onnx)
        corrupt = folder / "corrupt.onnx"
        corrupt.write_bytes(onnx.read_bytes()[:4096])
        golden = golden_for(onnx)
        repository = ModelRepository(str(folder / "repository"))
        repository.mark_served(CPU_MODEL, repository.publish(CPU_MODEL, onnx, golden, {}), {})
        target = LocalTarget(folder / "triton")
        with LocalTriton(target.state_dir) as server:
            state = server.start(repository.uri)
            url, http_url = state.grpc_url, f"127.0.0.1:{state.http_port}"
            with TileLoad(url, CPU_MODEL, 2, args.tile, lambda: "1") as load:
                refused = keyless_repository_calls(url, http_url, CPU_MODEL)
            result["restricted"] = {
                "refused": refused,
                "share_refused": sum(refused.values()) / len(refused),
                "inference": latency_summary(load.answers),
            }
            result["reload_under_load"] = promotion_under_load(
                repository, target, url, onnx, golden, args.clients, args.tile, args.seconds
            )
            result["failed_reload_precheck"] = promotion_under_load(
                repository, target, url, corrupt, golden, args.clients, args.tile, args.failed_seconds
            )
            with TritonClient(url, repository_key=server.key()) as client:
                result["soak"] = soak(client, CPU_MODEL, args.soak_cycles, state.pid)
            result["failed_reload_in_server"] = promotion_under_load(
                repository,
                BrokenInServerTarget(target),
                url,
                onnx,
                golden,
                args.clients,
                args.tile,
                args.failed_seconds,
            )
        result["slow_model"] = slow_model_figures(folder, onnx, golden)
    save("triton_reliability", result)


def slow_model_figures(folder: Path, onnx: Path, golden: GoldenSample) -> dict[str, object]:
    """Client deadlines, a killed client and ``cloudlulc map`` against a model that takes 3 s per request."""
    repository = ModelRepository(str(folder / "slow"))
    repository.mark_served(CPU_MODEL, repository.publish(CPU_MODEL, onnx, golden, {}, ServingSettings(delay_s=3.0)), {})
    optical, sar = write_large_inputs(folder, 256)
    with LocalTriton(folder / "slow-triton") as server:
        url = server.start(repository.uri).grpc_url
        status, seconds = deadline_probe(url, CPU_MODEL, "1", 1.0)
        killed = kill_client_mid_request(url, CPU_MODEL, "1", 1.0)
        started = time.monotonic()
        mapped = subprocess.run(
            [
                str(Path(sys.executable).with_name("cloudlulc")),
                "map",
                "--optical",
                str(optical),
                "--sar",
                str(sar),
                "--out",
                str(folder / "slow_map.tif"),
                "--triton-url",
                url,
                "--model",
                CPU_MODEL,
                "--model-version",
                "1",
                "--request-timeout",
                "1",
                "--attempts",
                "3",
                "--tile",
                "256",
                "--overlap",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    return {
        "deadline": {"client_deadline_s": 1.0, "model_delay_s": 3.0, "status": status, "seconds": round(seconds, 2)},
        "killed_client": killed,
        "map": {
            "exit_code": mapped.returncode,
            "seconds": round(time.monotonic() - started, 1),
            "message": mapped.stderr.strip().splitlines()[-1] if mapped.stderr.strip() else "",
        },
    }


if __name__ == "__main__":
    main()
