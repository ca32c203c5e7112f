"""Kill anywhere, lose nothing: every stage SIGKILLed at random points, rerun, and compared.

For each stage, one uninterrupted run gives the reference output and its duration T. Then, per point,
the stage is started in its own session, SIGKILLed (the whole process group) after a uniform random
fraction of T, checked, rerun to success and compared with the reference:

- partial: a file visible at a final path of the killed run that differs from the reference's file of
  that name (a half-written output; temporary names and lock files do not count);
- invalid COG: a map at its final path that fails strict COG validation;
- different: the rerun's outputs differ from the reference (bytes, or for training the weights);
- multipart: multipart uploads left open on the S3 server after the rerun.

Usage: python benchmarks/bench_kills.py [--points 20] [--stages synth,ingest,...] [--seed 0]
(the issue's figure is --points 20; each point costs about one run of its stage).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common import save

CLI = [sys.executable, "-m", "cloudlulc"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "CLOUDLULC_LOG_LEVEL": "warning"}


@dataclass
class Stage:
    """One stage: the command writing into ``out`` and how its outputs are read for comparison."""

    name: str
    command: Callable[[Path], list[str]]
    outputs: Callable[[Path], dict[str, str]]
    """Final output name -> digest (what a reader of the final paths sees)."""
    prepare: Callable[[Path], None] = lambda out: None
    cogs: Callable[[Path], list[Path]] = lambda out: []
    s3: bool = False


@dataclass
class Tally:
    """Counts of one stage over its points."""

    points: int = 0
    partial: int = 0
    invalid_cogs: int = 0
    different: int = 0
    multipart: int = 0
    killed_before_end: int = 0
    details: list[str] = field(default_factory=list)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def final_files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Files under ``root`` at final names (no temporaries, locks or logs), with their digests."""
    if not root.exists():
        return {}
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if ".tmp" in path.name or path.name.endswith(".lock") or path.name.startswith(".") or name.startswith(skip):
            continue
        found[name] = digest(path)
    return found


def weights(output_dir: Path) -> dict[str, str]:
    """Each checkpoint's weights as a digest (the file also holds the config, which names its folder).

    A killed run leaves the checkpoints of the epochs it finished: complete files equal to the reference
    run's checkpoints of those epochs, which is not a partial output; a torn file fails to load. The last
    epoch's checkpoint is rewritten once calibrated (its temperature and calibration record): a run killed
    in between leaves it complete but uncalibrated, so the temperature is compared as its own entry, present
    only once calibrated, and a rerun must end with the reference's.
    """
    from cloudlulc.training.checkpoints import list_checkpoints, load_checkpoint

    found = {}
    for path in list_checkpoints(output_dir):
        try:
            checkpoint = load_checkpoint(path)
        except Exception as error:  # a torn checkpoint at a final name: what this benchmark looks for
            found[path.name] = f"unreadable: {type(error).__name__}"
            continue
        state = checkpoint["model"]
        hashed = hashlib.sha256()
        for name in sorted(state):
            if name != "temperature":
                hashed.update(name.encode() + state[name].numpy().tobytes())
        found[path.name] = hashed.hexdigest()[:16]
        if checkpoint.get("calibration"):
            found[f"{path.name} calibration"] = json.dumps(checkpoint["calibration"], sort_keys=True)
    return found


def run(command: list[str], timeout: float = 900) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - started


def kill_after(command: list[str], seconds: float) -> bool:
    """Start ``command`` in its own session, SIGKILL its group after ``seconds``; whether it was still running."""
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        return True


def measure(stage: Stage, work: Path, points: int, rng: random.Random, multipart: Callable[[], int]) -> Tally:
    reference = work / f"{stage.name}-reference"
    stage.prepare(reference)
    duration = run(stage.command(reference))
    expected = stage.outputs(reference)
    tally = Tally()
    for point in range(points):
        out = work / f"{stage.name}-{point}"
        stage.prepare(out)
        at = rng.uniform(0.05, 0.95) * duration
        tally.points += 1
        tally.killed_before_end += kill_after(stage.command(out), at)
        seen = stage.outputs(out)
        half = sorted(name for name, value in seen.items() if expected.get(name) != value)
        tally.partial += bool(half)
        from cloudlulc.io.rasters import validate_cog

        tally.invalid_cogs += sum(bool(validate_cog(str(cog))) for cog in stage.cogs(out) if cog.exists())
        run(stage.command(out))
        again = stage.outputs(out)
        tally.different += again != expected
        tally.multipart += multipart()
        if half or again != expected:
            tally.details.append(f"point {point} at {at:.1f} s: partial {half[:3]}, rerun differs: {again != expected}")
        shutil.rmtree(out, ignore_errors=True)
    return tally


def stages(work: Path, bucket_uri: str | None) -> list[Stage]:
    """The stages, built on a small synthetic set, a trained checkpoint and a synthetic catalog made once."""
    dataset = work / "set"
    run([*CLI, "synth", "--out", str(dataset), "--n", "24", "--size", "64", "--seed", "3"])
    run(
        [
            *CLI,
            "train",
            "--no-track",
            f"dataset={dataset}",
            f"output_dir={work / 'trained'}",
            "epochs=2",
            "batch_size=8",
            "crop_size=64",
            "calibrate=false",
        ]
    )
    checkpoint = sorted((work / "trained" / "checkpoints").glob("epoch_*.pt"))[-1]
    onnx = work / "model.onnx"
    run([*CLI, "export", "onnx", "--checkpoint", str(checkpoint), "--dataset", str(dataset), "--out", str(onnx)])
    catalog = work / "catalog"
    listing = subprocess.run(
        [*CLI, "ingest", "synthetic", "--out", str(catalog), "--size", "512"],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    bbox = next(line.split()[-1] for line in listing.splitlines() if line.startswith("bbox:"))
    ingest = [
        *CLI,
        "ingest",
        "run",
        "--catalog",
        str(catalog / "catalog.json"),
        "--bbox",
        bbox,
        "--start",
        "2026-06-01",
        "--end",
        "2026-06-30",
        "--mode",
        "scenes",
        "--no-progress",
    ]
    scenes = work / "scenes"
    run([*ingest, "--out", str(scenes)])
    from cloudlulc.ingest.scene_stacks import scene_stacks

    stack = next(stack for stack in scene_stacks(str(scenes)) if stack.sar is not None)
    optical, sar = stack.optical, stack.sar
    mapping = [
        *CLI,
        "map",
        "--optical",
        str(optical),
        "--sar",
        str(sar),
        "--onnx",
        str(onnx),
        "--tile",
        "256",
        "--overlap",
        "32",
        "--confidence",
    ]
    broken = work / "broken-set"
    shutil.copytree(dataset, broken)
    chip = sorted((broken / "Opt_S2_cloudy").glob("*.tif"))[0]
    chip.write_bytes(chip.read_bytes()[:300])
    found = [
        Stage(
            "synth",
            lambda out: [*CLI, "synth", "--out", str(out), "--n", "48", "--size", "64", "--workers", "2"],
            final_files,
        ),
        Stage("ingest", lambda out: [*ingest, "--out", str(out)], lambda out: final_files(out, ("manifest",))),
        Stage(
            "validate",
            lambda out: [*CLI, "validate", str(broken), "--report-dir", str(out), "--quarantine", "--workers", "2"],
            lambda out: final_files(out, ("report",)),
        ),
        Stage(
            "train",
            lambda out: [
                *CLI,
                "train",
                "--no-track",
                f"dataset={dataset}",
                f"output_dir={out}",
                "epochs=3",
                "batch_size=8",
                "crop_size=64",
            ],
            weights,
        ),
        Stage(
            "export",
            lambda out: [
                *CLI,
                "export",
                "onnx",
                "--checkpoint",
                str(checkpoint),
                "--dataset",
                str(dataset),
                "--out",
                str(out / "model.onnx"),
            ],
            final_files,
            prepare=lambda out: out.mkdir(parents=True, exist_ok=True),
        ),
        Stage(
            "map-local",
            lambda out: [*mapping, "--out", str(out / "map.tif")],
            final_files,
            prepare=lambda out: out.mkdir(parents=True, exist_ok=True),
            cogs=lambda out: [out / "map.tif"],
        ),
    ]
    if bucket_uri:
        found.append(s3_map_stage(mapping, bucket_uri))
    return found


def s3_map_stage(mapping: list[str], bucket_uri: str) -> Stage:
    """The map stage into ``s3://``: outputs read back from the bucket."""
    from cloudlulc.io.storage import open_storage

    def outputs(out: Path) -> dict[str, str]:
        storage = open_storage(f"{bucket_uri}/{out.name}")
        return {
            key: hashlib.sha256(storage.read_bytes(key)).hexdigest()[:16]
            for key in storage.list()
            if not key.endswith(".lock")
        }

    return Stage("map-s3", lambda out: [*mapping, "--out", f"{bucket_uri}/{out.name}/map.tif"], outputs, s3=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--stages", default="synth,ingest,validate,train,export,map-local,map-s3")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    wanted = set(args.stages.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-kills-") as folder, s3_server() as (bucket_uri, multipart):
        work = Path(folder)
        results = {}
        for stage in stages(work, bucket_uri if "map-s3" in wanted else None):
            if stage.name in wanted:
                tally = measure(stage, work, args.points, rng, multipart)
                results[stage.name] = tally.__dict__
                print(json.dumps({stage.name: {k: v for k, v in tally.__dict__.items() if k != "details"}}))
    save("kills", {"points_per_stage": args.points, "seed": args.seed, "stages": results})


@contextmanager
def s3_server() -> Iterator[tuple[str, Callable[[], int]]]:
    """A moto S3 server on loopback with one bucket; yields its bucket URI and an open-multipart counter."""
    import socket

    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        keys = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "CLOUDLULC_S3_ENDPOINT_URL": endpoint,
        }
        ENV.update(keys)
        os.environ.update(keys)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="kills")

        def multipart() -> int:
            return len(client.list_multipart_uploads(Bucket="kills").get("Uploads", []))

        yield "s3://kills", multipart
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    main()
