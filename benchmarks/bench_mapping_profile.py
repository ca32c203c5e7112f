"""Where mapping time goes: one in-process ONNX Runtime mapping run split into stages, old and new paths.

Each run maps a synthetic scene (``bench_mapping.write_large_inputs``: optics UTM 32N 10 m, SAR UTM 33N
20 m, so every window is warped) with the tiny CloudLULC-Net exported to ONNX, in a fresh subprocess
(peak RSS from VmHWM). The library's stage functions are wrapped with timers:

- read optical: the GDAL read of the 12 bands (DN to float32 during the read)
- read+warp SAR: the warped-VRT read of VV/VH power and its conversion to dB
- scaling: reflectance, SAR scaling, validity and padding (``SceneReader.read`` minus the two reads)
- batching: stacking tiles into a batch (``_submit`` minus reading)
- inference: the predictor call (in the pool threads; overlaps the reading)
- blending: ``BandAccumulator.add`` and ``pop`` (weighted sums, argmax)
- writing: ``PartialMap.append`` (partial GeoTIFF and progress record)
- waiting: the main thread blocked on a prediction it needs next
- publish: COG, areas and quicklook
- opening: opening the pair (units and not-empty checks); other: the rest of the main thread

Wall seconds are summed per stage (inference calls overlap each other and the reading, so stages sum
to more than the run). CPU seconds of main-thread stages are that thread's CPU time; ONNX Runtime's
threads are not visible per call, so inference CPU is the process's CPU minus the main thread's.

The "old" path is the mapping as it was before this benchmark: ONNX Runtime choosing its threads with
spinning on, ``in_flight=2``, the export of opset 18 with ONNX's Softmax, tiles stacked into a fresh
batch, whole-scene decimated reads (units and not-empty checks, quicklook) and GDAL's 128 MB cache
throughout (``legacy_code``). "new" is the library's current default. Paths alternate within each
round; the best round of each is reported.

With ``--full-tile`` the scene is a synthetic Sentinel-2 tile, 10980 x 10980 at 10 m, written as an
L2A product ships its bands (10, 20 and 60 m files) and stacked by a VRT, with the SAR on UTM 33N.

Usage: python benchmarks/bench_mapping_profile.py [--sizes 2048 8192] [--rounds 2] [--paths old new]
       [--full-tile] [--name mapping_profile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_mapping import peak_rss_mb, tiny_network, write_full_tile, write_large_inputs
from common import save

PATHS: dict[str, dict[str, Any]] = {
    "old": {"runner": {"threads": 0, "spinning": True}, "options": {"batch_size": 4, "in_flight": 2}},
    "new": {"runner": {}, "options": {}},
    # the session-option sweep behind the new defaults (onnxruntime_runner, MapOptions)
    "t1": {"runner": {"threads": 1, "spinning": False}, "options": {"batch_size": 4, "in_flight": 2}},
    "t1-spin": {"runner": {"threads": 1, "spinning": True}, "options": {"batch_size": 4, "in_flight": 2}},
    "t1-basic": {
        "runner": {"threads": 1, "spinning": False, "optimization": "basic"},
        "options": {"batch_size": 4, "in_flight": 2},
    },
    "t1-noarena": {"runner": {"threads": 1, "spinning": False, "arena": False}, "options": {"in_flight": 2}},
    "t1-b1": {"runner": {"threads": 1, "spinning": False}, "options": {"batch_size": 1, "in_flight": 2}},
    "t2-if1": {"runner": {"threads": 2, "spinning": False}, "options": {"batch_size": 4, "in_flight": 1}},
    "t1-if3": {"runner": {"threads": 1, "spinning": False}, "options": {"batch_size": 4, "in_flight": 3}},
}


class StageTimer:
    """Wall and thread-CPU seconds per stage, summed over calls from any thread."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` with its calls timed under ``stage``."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                with self.lock:
                    self.wall[stage] += time.perf_counter() - wall
                    self.cpu[stage] += time.thread_time() - cpu
                    self.calls[stage] += 1

        return timed


def instrument(timer: StageTimer) -> None:
    """Replace the library's stage functions by timed wrappers (this process only)."""
    from cloudlulc.mapping import region, scene_pair, writer

    scene_pair.SceneReader.optical_dn = timer.wrap("read optical", scene_pair.SceneReader.optical_dn)  # type: ignore[method-assign]
    scene_pair.SceneReader.sar_db = timer.wrap("read+warp SAR", scene_pair.SceneReader.sar_db)  # type: ignore[method-assign]
    scene_pair.SceneReader.read = timer.wrap("_read", scene_pair.SceneReader.read)  # type: ignore[method-assign]
    region._submit = timer.wrap("_submit", region._submit)
    region.BandAccumulator.add = timer.wrap("blend add", region.BandAccumulator.add)  # type: ignore[method-assign]
    region.BandAccumulator.pop = timer.wrap("blend pop", region.BandAccumulator.pop)  # type: ignore[method-assign]
    writer.PartialMap.append = timer.wrap("writing", writer.PartialMap.append)  # type: ignore[method-assign]
    region._publish = timer.wrap("publish", region._publish)
    scene_pair.SceneReader._open = timer.wrap("opening", scene_pair.SceneReader._open)  # type: ignore[method-assign]
    original_consume = region._TileRowBlender.consume

    def consume(self: Any, batch: Any, bar: Any) -> None:
        if batch.future is not None:
            timer.wrap("waiting", batch.future.result)()
        original_consume(self, batch, bar)

    region._TileRowBlender.consume = consume  # type: ignore[method-assign]


def legacy_code() -> None:
    """Put back the old path's code: stacked tiles, blending with a temporary, whole-scene decimated reads."""
    from rasterio.windows import Window

    from cloudlulc.io.gdal_env import STREAMING_CACHE_MB
    from cloudlulc.io.sentinel import optical_units
    from cloudlulc.mapping import region, scene_pair

    def submit(scene: Any, grid: Any, tiles: Any, predictor: Any, pool: Any, buffers: Any = None) -> Any:
        optical, sar, valid = [], [], []
        for _, row, col in tiles:
            rows, cols = grid.tile_shape(row, col)
            inputs = scene.read(Window(col, row, cols, rows))
            optical.append(region.pad_to_tile(inputs.optical, grid.tile))
            sar.append(region.pad_to_tile(inputs.sar, grid.tile))
            valid.append(inputs.valid)
        if not any(v.any() for v in valid):
            return region._Batch(tiles, valid, None)
        return region._Batch(tiles, valid, pool.submit(predictor, np.stack(optical), np.stack(sar)))

    def add(self: Any, row: int, col: int, probabilities: np.ndarray, weights: np.ndarray, valid: np.ndarray) -> None:
        skip = max(0, self.top - row)
        rows = probabilities.shape[1] - skip
        if rows <= 0:
            return
        first = row + skip - self.top
        cols = slice(col, col + probabilities.shape[2])
        self.sums[:, first : first + rows, cols] += probabilities[:, skip:] * weights[skip:]
        self.weights[first : first + rows, cols] += weights[skip:]
        self.valid[first : first + rows, cols] = valid[skip:]

    def decimated(dataset: Any, uri: str, shape: Any, indexes: Any = None, out_dtype: Any = None) -> np.ndarray:
        bands = len(indexes or dataset.indexes)
        return scene_pair._read(dataset, uri, indexes=indexes, out_shape=(bands, *shape), out_dtype=out_dtype)

    def resolve_optical_units(self: Any) -> Any:
        shape = (min(256, self.grid.height), min(256, self.grid.width))
        return optical_units(self.optical, decimated(self.optical, self.optical_uri, shape, out_dtype="float32"))

    region._submit = submit
    region.BandAccumulator.add = add  # type: ignore[method-assign]
    scene_pair._decimated = decimated
    scene_pair.SceneReader._resolve_optical_units = resolve_optical_units  # type: ignore[method-assign]
    # No sampled blocks before the not-empty check's decimated read, no quicklook optics gathered from
    # the tiles, and the streaming cache of 128 MB while tiles are read.
    scene_pair._spread_blocks = lambda dataset, per_side: []
    scene_pair.SceneReader.gather_overview = lambda self, max_side: None  # type: ignore[method-assign]
    scene_pair.SceneReader.tile_row_cache_mb = lambda self, rows: STREAMING_CACHE_MB  # type: ignore[method-assign]


def stages(timer: StageTimer, seconds: float, process_cpu: float, main_cpu: float, megapixels: float) -> dict:
    """The per-stage table: derived stages are the wrappers' differences."""
    wall, cpu = dict(timer.wall), dict(timer.cpu)
    derived = {"scaling": ("_read", ["read optical", "read+warp SAR"]), "batching": ("_submit", ["_read"])}
    for name, (outer, inner) in derived.items():
        wall[name] = wall.get(outer, 0.0) - sum(wall.get(i, 0.0) for i in inner)
        cpu[name] = cpu.get(outer, 0.0) - sum(cpu.get(i, 0.0) for i in inner)
    wall["blending"] = wall.get("blend add", 0.0) + wall.get("blend pop", 0.0)
    cpu["blending"] = cpu.get("blend add", 0.0) + cpu.get("blend pop", 0.0)
    cpu["inference"] = process_cpu - main_cpu
    main_stages = ["opening", "_submit", "blending", "writing", "publish"]
    wall["other"] = seconds - sum(wall.get(name, 0.0) for name in [*main_stages, "waiting"])
    cpu["other"] = main_cpu - sum(cpu.get(name, 0.0) for name in main_stages)
    order = [
        "opening",
        "read optical",
        "read+warp SAR",
        "scaling",
        "batching",
        "inference",
        "blending",
        "writing",
        "waiting",
        "publish",
        "other",
    ]
    table = {}
    for name in order:
        w, c = wall.get(name, 0.0), cpu.get(name, 0.0)
        table[name] = {
            "wall_s": round(w, 2),
            "cpu_s": round(c, 2),
            "wall_s_per_mpx": round(w / megapixels, 4),
            "cpu_s_per_mpx": round(c / megapixels, 4),
        }
    return table


def child(optical: str, sar: str, out: str, onnx: str, path: str) -> None:
    """One mapping run in this process: build the predictor, warm it up, map, print the figures as JSON."""
    from cloudlulc.export.onnx import onnxruntime_runner, threads_per_call
    from cloudlulc.mapping import map_scene
    from cloudlulc.mapping.options import MapOptions

    config = PATHS[path]
    options = MapOptions(**config["options"])
    if path == "old":
        legacy_code()
        onnx = onnx.replace(".onnx", "_softmax.onnx")  # exported with ONNX's Softmax op, as before
    runner = config["runner"] or {"threads": threads_per_call(options.in_flight)}  # what `cloudlulc map` does
    predictor = onnxruntime_runner(onnx, **runner)
    tile = options.tile
    predictor(np.zeros((1, 12, tile, tile), np.float32), np.zeros((1, 2, tile, tile), np.float32))
    baseline = peak_rss_mb()
    timer = StageTimer()
    instrument(timer)
    timer_predictor = timer.wrap("inference", predictor)
    cpu_process, cpu_main, start = time.process_time(), time.thread_time(), time.perf_counter()
    result = map_scene(optical, sar, out, timer_predictor, options=options, progress=False)
    seconds = time.perf_counter() - start
    process_cpu, main_cpu = time.process_time() - cpu_process, time.thread_time() - cpu_main
    megapixels = result.width * result.height / 1e6
    print(
        json.dumps(
            {
                "path": path,
                "options": options.model_dump(),
                "runner": runner,
                "seconds": round(seconds, 2),
                "mpx_per_s": round(megapixels / seconds, 3),
                "cpu_s": round(process_cpu, 2),
                "baseline_rss_mb": round(baseline, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "tiles": result.tiles,
                "stages": stages(timer, seconds, process_cpu, main_cpu, megapixels),
            }
        )
    )


def run_child(optical: Path, sar: Path, out: Path, onnx: Path, path: str) -> dict[str, Any]:
    """One mapping run in a fresh process (so its peak RSS is its own); its figures."""
    command = [sys.executable, __file__, "--child", str(optical), str(sar), str(out), str(onnx), path]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    for suffix in (".tif", "_areas.json", "_quicklook.png"):
        Path(str(out).removesuffix(".tif") + suffix).unlink(missing_ok=True)
    return dict(json.loads(output.strip().splitlines()[-1]))


def load() -> str:
    """The load average (1, 5, 15 min): the machine is shared, so every figure carries it."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def compare(folder: Path, onnx: Path, size: int, rounds: int, paths: list[str], inputs: tuple[Path, Path]) -> dict:
    """Alternate the paths over ``rounds`` on one scene; every run, and the best of each path."""
    runs: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
    for round_index in range(rounds):
        for path in paths if round_index % 2 == 0 else paths[::-1]:
            before = load()
            figures = run_child(*inputs, folder / f"map_{size}_{path}.tif", onnx, path)
            figures["load_before_after"] = [before, load()]
            runs[path].append(figures)
            print(f"{size} {path}: {figures['seconds']} s, {figures['mpx_per_s']} Mpx/s, load {before}", flush=True)
    best = {path: min(items, key=lambda r: r["seconds"]) for path, items in runs.items()}
    return {"rounds": {p: [r["seconds"] for r in items] for p, items in runs.items()}, "best": best}


def export_with_softmax(network: Any, path: Path) -> None:
    """The export as it was before: ``network.probabilities`` (ONNX's Softmax op over the classes), opset 18."""
    from cloudlulc.export import onnx as onnx_export

    class Before(onnx_export.ServingModel):
        def forward(self, optical: Any, sar: Any) -> Any:
            return self.network.probabilities(optical, sar)

    current, onnx_export.ServingModel = onnx_export.ServingModel, Before  # type: ignore[misc]
    opset, onnx_export.OPSET = onnx_export.OPSET, 18  # GELU as Div, Erf, Add, Mul, Mul
    try:
        onnx_export.write_onnx_graph(network, path)
    finally:
        onnx_export.ServingModel = current  # type: ignore[misc]
        onnx_export.OPSET = opset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--paths", nargs="+", default=["old", "new"], choices=sorted(PATHS))
    parser.add_argument("--name", default="mapping_profile", help="result file name under the results folder")
    parser.add_argument(
        "--full-tile",
        action="store_true",
        help="map a synthetic 10980 x 10980 Sentinel-2 tile (10/20/60 m band files under a VRT) instead of --sizes",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="bench-mapping-profile-") as name:
        folder = Path(name)
        from cloudlulc.export.onnx import write_onnx_graph

        onnx = folder / "tiny.onnx"
        network = tiny_network().eval()
        write_onnx_graph(network, onnx)
        export_with_softmax(network, folder / "tiny_softmax.onnx")
        results = {}
        for size in [10980] if args.full_tile else args.sizes:
            start = time.perf_counter()
            inputs = write_full_tile(folder) if args.full_tile else write_large_inputs(folder, size)
            written = round(time.perf_counter() - start, 1)
            results[f"{size}x{size}"] = compare(folder, onnx, size, args.rounds, args.paths, inputs)
            results[f"{size}x{size}"]["inputs_written_s"] = written
            for path in folder.glob("s[12]_*"):
                path.unlink()
    scenes = "--full-tile" if args.full_tile else f"--sizes {' '.join(map(str, args.sizes))}"
    paths = " ".join(args.paths)
    command = f"python benchmarks/bench_mapping_profile.py {scenes} --rounds {args.rounds} --paths {paths}"
    if args.name != "mapping_profile":
        command += f" --name {args.name}"
    save(args.name, {"command": command, "scenes": results})


if __name__ == "__main__":
    main()
