"""Fault figures: orphans after kills, and races on one output (issue "Fault figures across the loop").

- orphans: ``cloudlulc synth`` and ``cloudlulc validate`` with ``--workers 2`` are SIGKILLed (the top process
  only, once both workers run); counted: workers alive 5 s later. A map killed while publishing its COG is
  rerun to success; counted: temporary files left beside the map.
- S3 creators: 32 threads create one key with ``write_bytes(..., if_absent=True)`` on a real S3 server (moto
  server mode): winners, clean refusals, exceptions, and whether the object is the winner's payload.
- maps: two processes map one scene into one ``--out`` with different (constant) models, started together:
  one exits 0, the other 4 naming the holder, and the map is entirely the winner's.
- gates: 64 threads move ``champion`` from the same version on a real MLflow server (SQLite backend).

Usage: python benchmarks/bench_races.py [--tries 3]  (writes benchmarks/results/races_<date>.json)
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("CLOUDLULC_BENCH_OUT", str(Path(__file__).resolve().parent / "results"))

import numpy as np
import psutil
import rasterio
from common import free_port, mlflow_server, save
from rasterio.crs import CRS
from rasterio.transform import from_origin

from cloudlulc import schema
from cloudlulc.data.synthetic import SynthConfig, generate_dataset
from cloudlulc.data.synthetic_scene import make_scene
from cloudlulc.io.rasters import RasterProfile, write_raster

CLI = str(Path(sys.executable).with_name("cloudlulc"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
TILING = "64,16"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def orphans_after_kill(command: list[str], ready: Path | None = None) -> int:
    """SIGKILL the top process of ``command`` once its 2 workers run; workers still alive 5 s later."""
    process = subprocess.Popen(command, env=ENV, start_new_session=True, stderr=subprocess.DEVNULL)
    children: list[psutil.Process] = []
    while process.poll() is None:
        children = psutil.Process(process.pid).children(recursive=True)
        if len(children) >= 2 and (ready is None or ready.exists()):
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(c.pid) for c in children):
        time.sleep(0.05)
    left = [c for c in children if alive(c.pid)]
    for child in left:
        child.kill()
    return len(left)


def write_pair(folder: Path) -> tuple[Path, Path]:
    """A 300 x 420 synthetic Sentinel-2 / Sentinel-1 pair (as in tests/test_mapping.py)."""
    scene = make_scene(np.random.default_rng(5), 420)
    grid = {"crs": CRS.from_epsg(32632), "transform": from_origin(700_000.0, 5_000_000.0, 10, 10)}
    dn = schema.reflectance_to_s2_dn(scene.cloudy[:, :300, :420], -1000)
    band_tags = [{"BOA_ADD_OFFSET": "-1000"}] * 12
    optical, sar = folder / "s2.tif", folder / "s1.tif"
    write_raster(str(optical), dn, RasterProfile(**grid, nodata=0, descriptions=schema.S2_BANDS, band_tags=band_tags))
    profile = RasterProfile(**grid, nodata=float("nan"), descriptions=schema.S1_POLARISATIONS, tags={"UNITS": "dB"})
    write_raster(str(sar), scene.sar_db[:, :300, :420], profile)
    return optical, sar


def child_map(optical: str, sar: str, out: str, klass: int, hang_at_publish: bool) -> None:
    """One mapping run with a constant model (every pixel ``klass``), exiting as the CLI would."""
    import cloudlulc.io.rasters as rasters
    from cloudlulc.errors import CloudLULCError
    from cloudlulc.mapping import map_scene
    from cloudlulc.mapping.options import MapOptions

    def predict(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        time.sleep(0.1)
        probabilities = np.full((len(optical), 6, *optical.shape[2:]), 0.1, np.float32)
        probabilities[:, klass] = 0.5
        return probabilities

    if hang_at_publish:  # stands still on the finished COG under its temporary name, to be killed there
        rasters.validate_cog = lambda path: (Path(f"{out}.publishing").touch(), time.sleep(600))
    tile, overlap = map(int, TILING.split(","))
    try:
        map_scene(
            optical,
            sar,
            out,
            predict,
            options=MapOptions(tile=tile, overlap=overlap),
            progress=False,
            model_id=f"model-{klass}",
        )
    except CloudLULCError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def map_command(optical: Path, sar: Path, out: Path, klass: int, *, hang: bool = False) -> list[str]:
    flags = ["--hang"] if hang else []
    return [sys.executable, __file__, "--child-map", str(optical), str(sar), str(out), str(klass), *flags]


def orphans(tries: int) -> dict[str, object]:
    counts: dict[str, list[int]] = {"synth": [], "validate": [], "map_temp_files_after_rerun": []}
    with tempfile.TemporaryDirectory(prefix="bench-races-") as temp:
        folder = Path(temp)
        dataset = folder / "set"
        generate_dataset(str(dataset), SynthConfig(n=96, size=128, seed=3), workers=2, progress=False)
        optical, sar = write_pair(folder)
        for attempt in range(tries):
            out = folder / f"synth{attempt}"
            synth = [CLI, "synth", "--out", str(out), "--n", "160", "--size", "128", "--workers", "2"]
            counts["synth"].append(orphans_after_kill(synth, ready=out / "synth.json"))
            report = str(folder / f"report{attempt}")
            counts["validate"].append(
                orphans_after_kill([CLI, "validate", str(dataset), "--report-dir", report, "--workers", "2"])
            )
            out = folder / f"maps{attempt}" / "map.tif"
            out.parent.mkdir()
            killed = subprocess.Popen(map_command(optical, sar, out, 1, hang=True), env=ENV)
            while not Path(f"{out}.publishing").exists() and killed.poll() is None:
                time.sleep(0.05)
            killed.kill()
            killed.wait()
            Path(f"{out}.publishing").unlink()
            subprocess.run(map_command(optical, sar, out, 1), env=ENV, check=True)
            counts["map_temp_files_after_rerun"].append(len([p for p in out.parent.iterdir() if ".tmp-" in p.name]))
    return {key: {"tries": len(value), "total": sum(value), "per_try": value} for key, value in counts.items()}


def s3_creators(tries: int) -> dict[str, object]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    os.environ["CLOUDLULC_S3_ENDPOINT_URL"] = endpoint
    try:
        time.sleep(0.5)
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            time.sleep(0.1)
        import boto3

        from cloudlulc.io.storage import open_storage

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench-races")
        rows = []
        for attempt in range(tries):
            barrier = threading.Barrier(32)

            def create(index: int, key: str = f"claims/{attempt}.json", barrier=barrier) -> str:
                storage = open_storage("s3://bench-races/race")
                barrier.wait()
                try:
                    return "won" if storage.write_bytes(key, f"payload {index}".encode(), if_absent=True) else "refused"
                except Exception as error:  # counted, not raised: the figure is how many
                    return f"exception {type(error).__name__}"

            with ThreadPoolExecutor(32) as pool:
                answers = list(pool.map(create, range(32)))
            stored = open_storage("s3://bench-races/race").read_bytes(f"claims/{attempt}.json")
            intact = "won" in answers and stored == f"payload {answers.index('won')}".encode()
            rows.append({**Counter(answers), "object_is_winners_payload": intact})
    finally:
        server.terminate()
        server.wait()
    return {"creators": 32, "tries": rows}


def map_races(tries: int) -> dict[str, object]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-races-") as temp:
        optical, sar = write_pair(Path(temp))
        for attempt in range(tries):
            out = Path(temp) / f"out{attempt}" / "map.tif"
            runs = [
                subprocess.Popen(map_command(optical, sar, out, klass), env=ENV, stderr=subprocess.PIPE, text=True)
                for klass in (1, 3)
            ]
            codes = [run.wait() for run in runs]
            errors = [run.stderr.read().strip().splitlines()[-1:] if run.stderr else [] for run in runs]
            with rasterio.open(out) as dataset:
                classes = dataset.read(1)
                model = dataset.tags().get("CLOUDLULC_MODEL", "")
            mapped = classes[classes != schema.IGNORE_INDEX]
            whole = model.startswith("model-") and bool((mapped == int(model[-1])).all())
            rows.append(
                {
                    "exit_codes": codes,
                    "refusal": [line for lines in errors for line in lines],
                    "map_is_one_models": whole,
                    "tag": model,
                }
            )
    return {"runs_per_try": 2, "tries": rows}


def gate_races(tries: int) -> dict[str, object]:
    from mlflow import MlflowClient

    from cloudlulc.tracking.registry import CHAMPION, ChampionMovedError, Registry

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-races-mlflow-") as temp, mlflow_server(Path(temp), ENV) as url:
        for attempt in range(tries):
            name = f"race-{attempt}"
            client = MlflowClient(url, registry_uri=url)
            client.create_registered_model(name)
            versions = [client.create_model_version(name, f"s3://models/{name}/{i}").version for i in range(3)]
            client.set_registered_model_alias(name, CHAMPION, versions[0])
            barrier = threading.Barrier(64)

            def gate(index: int, name: str = name, versions: list = versions, barrier=barrier) -> str:
                registry = Registry(url, name)
                barrier.wait()
                try:
                    registry.move_champion(str(versions[0]), str(versions[1 + index % 2]))
                except ChampionMovedError as error:
                    return "refused: being moved" if "being moved" in str(error) else "refused: moved meanwhile"
                except Exception as error:  # counted: a refusal must never be an unexplained failure
                    return f"exception {type(error).__name__}"
                return "moved"

            start = time.perf_counter()
            with ThreadPoolExecutor(64) as pool:
                answers = list(pool.map(gate, range(64)))
            seconds = time.perf_counter() - start
            rows.append({**Counter(answers), "seconds": round(seconds, 2)})
    return {"gate_runs": 64, "tries": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--child-map", nargs=4, metavar=("OPTICAL", "SAR", "OUT", "CLASS"))
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()
    if args.child_map:
        optical, sar, out, klass = args.child_map
        child_map(optical, sar, out, int(klass), args.hang)
        return
    result = {
        "command": f"python benchmarks/bench_races.py --tries {args.tries}",
        "orphans_after_kills": orphans(args.tries),
        "s3_creators": s3_creators(args.tries),
        "two_maps_one_output": map_races(args.tries),
        "gates_moving_champion": gate_races(args.tries),
    }
    save(f"races_{datetime.date.today().isoformat()}", result)


if __name__ == "__main__":
    main()
