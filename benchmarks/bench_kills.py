"""Kill anywhere, lose nothing: every stage SIGKILLed at random points, rerun, and compared.

For each stage, one uninterrupted run gives the reference output and its duration T. Then, per point,
the stage is started in its own session, SIGKILLed (the whole process group) after a uniform random
fraction of T, checked, rerun to success and compared with the reference:

- partial: a file visible at a final path of the killed run that differs from the reference's file of
  that name (a half-written output; temporary names and lock files do not count);
- invalid COG: a map at its final path that fails strict COG validation;
- different: the rerun's outputs differ from the reference (bytes, or for training the weights);
- multipart: multipart uploads left open on the S3 server after the rerun.

The promote stage (``cloudlulc promote`` on the local Triton) is measured against a real MLflow server
(SQLite, free loopback port) whose registered model's ``champion`` is a small model trained here. Each run
starts from a copy of a repository where a first promotion serves version 1, with the local Triton
already serving it (free ports: promote has no port options, so it runs with the local Triton's
preferred ports 8000-8002 patched to free ones; its throwaway canary Triton would take them otherwise).
The reference run publishes, checks and serves version 2. What counts, per point:

- partial (read right after the kill): a version folder whose files differ from a complete version's
  (version 1's, or the reference's version 2: golden.npz compared by its arrays, model.json and
  served.json without their version number and time), a file outside the version folders matching
  neither the starting nor the reference repository, a file config.pbtxt makes Triton read that is
  missing (warmup inputs, each version's model file and model.py), served.json naming no complete
  version, or MLflow aliases moved;
- different (after the rerun): the served version's files differ from the reference's, another file
  differs, a version is left that was never marked served (Triton's "latest 2" policy loads it), the
  local Triton's READY versions are not the latest two checked ones, MLflow aliases or serving tags
  differ, or the rerun failed. The served number must be 2 as in the reference, unless the killed run
  had already marked its version served (it died while tagging MLflow or exiting): promote is not
  idempotent, so the rerun promotes again as the next number, and that consumed number, a checked
  version equal to the reference's, is not counted as different;
- stale_locks: the promotion lock a killed run left, which the rerun must break itself (its holder ran
  on this host and is gone; the benchmark leaves it in place, so a rerun waiting for it fails as different);
- tags_lagging: repository serves a version MLflow's serving tags do not name yet (a window, not counted);
- canaries_outliving_kill: processes of the killed run's throwaway canary Triton still running 30 s after
  the kill (it runs under ``setpriv --pdeathsig TERM``, so the kernel stops it with its promoter);
- orphans: Triton servers or Python-backend stubs of the point still running once its local Triton is
  stopped after the rerun (a killed run's canary would pile up otherwise); they are killed.

Not compared: ``__pycache__`` in version folders (Triton's Python stub writes it when it loads a version,
despite the PYTHONDONTWRITEBYTECODE=1 the local Triton sets; its header stamps the source's time).

Usage: python benchmarks/bench_kills.py [--points 20] [--stages synth,ingest,...] [--seed 0]
(the issue's figure is --points 20; each point costs about one run of its stage plus a kill at 0.05-0.95
of it: the estimate per stage is printed once its reference run is timed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from common import free_port, mlflow_server, save

if TYPE_CHECKING:
    from mlflow import MlflowClient

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
    reference_s: float = 0.0
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)


@dataclass
class PromoteTally(Tally):
    """The promote stage's counts: the generic ones plus what a killed promotion can leave behind."""

    stale_locks: int = 0
    tags_lagging: int = 0
    orphans: int = 0
    canaries_outliving_kill: int = 0
    """Canary Triton processes still running 30 s after their promoter was killed (they used to run on)."""


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


def announce(name: str, reference_s: float, points: int, setup_s: float = 0.0) -> None:
    """Print what the stage will cost: per point, its setup, a kill at 0.05-0.95 T (0.5 T on average), a rerun."""
    per_point = setup_s + 1.5 * reference_s
    print(
        f"{name}: reference run {reference_s:.1f} s, about {per_point:.0f} s per point: "
        f"~{points * per_point / 60:.1f} min for {points} points, ~{20 * per_point / 60:.1f} min for 20",
        file=sys.stderr,
        flush=True,
    )


def measure(stage: Stage, work: Path, points: int, rng: random.Random, multipart: Callable[[], int]) -> Tally:
    started = time.perf_counter()
    reference = work / f"{stage.name}-reference"
    stage.prepare(reference)
    duration = run(stage.command(reference))
    expected = stage.outputs(reference)
    tally = Tally(reference_s=round(duration, 1))
    announce(stage.name, duration, points)
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
    tally.seconds = round(time.perf_counter() - started, 1)
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


REGISTERED = "cloudlulc"
"""The registered model ``cloudlulc promote`` serves by default (its ``champion`` alias)."""
FREE_PORTS = {"grpc": 0, "http": 0, "metrics": 0}
PROMOTE = [
    sys.executable,
    "-c",
    "import cloudlulc.serving.local_triton as t; t.DEFAULT_PORTS.update(grpc=0, http=0, metrics=0); "
    "from cloudlulc.cli import main; main()",
    "promote",
]
"""``cloudlulc promote`` with free ports instead of Triton's 8000-8002 for any local Triton it starts."""


def triton_processes(root: Path) -> list[int]:
    """Triton servers and Python-backend stubs whose command line names ``root`` (this benchmark's only)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:  # ended while being read
            continue
        if str(root).encode() in command and (b"bin/tritonserver" in command or b"python_backend_stub" in command):
            found.append(int(entry.name))
    return found


CANARY_GRACE_S = 30.0
"""How long a killed promoter's throwaway Triton may take to stop (it gets SIGTERM; Triton waits up to 20 s)."""


def outlasting(root: Path, grace_s: float) -> list[int]:
    """The Triton processes under ``root`` still running ``grace_s`` seconds from now (returns once none are)."""
    deadline = time.monotonic() + grace_s
    while (found := triton_processes(root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def stop_tritons(root: Path) -> int:
    """Stop every local Triton recorded under ``root``, then SIGKILL what is left of them; how many were left."""
    from cloudlulc.serving.local_triton import LocalTriton

    for state_file in root.rglob("server.json"):
        LocalTriton(state_file.parent).stop()
    return kill_left(root)


def kill_left(root: Path) -> int:
    """SIGKILL the Triton and stub processes of ``root`` still running; how many there were."""
    left = triton_processes(root)
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(left)


@dataclass
class PromoteState:
    """What a reader sees after a promotion: the repository, the served version, Triton's and MLflow's view."""

    files: dict[str, str]
    """Repository file -> digest of its meaning (see :func:`repository_files`)."""
    served: int | None
    ready: list[int]
    mlflow: dict[str, str]
    """Aliases, and the serving tags with this run's served version and repository as placeholders."""


def repository_files(root: Path) -> dict[str, str]:
    """Files at final names with the digest of what they mean.

    golden.npz by its arrays (its zip stamps the write time); model.json and served.json without their
    version number and time (the version is compared as a number, and may legitimately shift). Left out:
    the ``__pycache__`` Triton's Python stub writes into each version folder it loads (it stamps the time,
    and whether it is there yet depends on when the server loaded the version, not on the promotion).
    """
    import numpy as np

    found = {name: value for name, value in final_files(root).items() if "__pycache__/" not in name}
    for name in found:
        path = root / name
        try:
            if path.name == "golden.npz":
                with np.load(path) as archive:
                    found[name] = (
                        "npz "
                        + hashlib.sha256(b"".join(archive[k].tobytes() for k in sorted(archive))).hexdigest()[:16]
                    )
            elif path.name == "model.json" or name.endswith(".served.json"):
                record = {k: v for k, v in json.loads(path.read_bytes()).items() if k not in ("version", "since")}
                found[name] = "json " + hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
        except (OSError, ValueError, EOFError) as error:  # a torn file: what this benchmark looks for
            found[name] = f"unreadable: {type(error).__name__}"
    return found


def version_numbers(files: dict[str, str]) -> list[int]:
    from cloudlulc.serving.model_config import CPU_MODEL

    parts = [name.split("/") for name in files]
    return sorted({int(p[1]) for p in parts if len(p) >= 3 and p[0] == CPU_MODEL and p[1].isdigit()})


def version_files(files: dict[str, str], number: int | None) -> dict[str, str]:
    from cloudlulc.serving.model_config import CPU_MODEL

    prefix = f"{CPU_MODEL}/{number}/"
    return {name.removeprefix(prefix): value for name, value in files.items() if name.startswith(prefix)}


def shared_files(files: dict[str, str]) -> dict[str, str]:
    """The files outside version folders (config, warmup inputs, served.json)."""
    return {name: value for name, value in files.items() if not (name.count("/") >= 2 and name.split("/")[1].isdigit())}


def config_gaps(repository: Path) -> list[str]:
    """Files config.pbtxt makes Triton read that are missing: warmup inputs, each version's model file and model.py."""
    from cloudlulc.serving.model_config import ADAPTER_FILE, CPU_MODEL, WARMUP_FOLDER, parse_config

    folder = repository / CPU_MODEL
    versions = [p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    if not (folder / "config.pbtxt").is_file():
        return ["config.pbtxt missing"] if versions else []
    config = parse_config((folder / "config.pbtxt").read_text())
    needed = [f"{WARMUP_FOLDER}/{i.input_data_file}" for w in config.model_warmup for i in w.inputs.values()]
    model_file = config.parameters["model_file"].string_value
    needed += [f"{v}/{name}" for v in versions for name in (model_file, ADAPTER_FILE)]
    return [f"{CPU_MODEL}/{name} missing" for name in needed if not (folder / name).is_file()]


@dataclass
class Promotion:
    """What every promote run shares: the dataset, the MLflow server, the champion's registered version."""

    dataset: Path
    url: str
    version: str

    @cached_property
    def client(self) -> MlflowClient:
        """One client of the MLflow server for the whole stage."""
        from mlflow import MlflowClient

        return MlflowClient(self.url, registry_uri=self.url)

    def command(self, out: Path) -> list[str]:
        """``cloudlulc promote`` into ``out/repository``, the local Triton's state in ``out/triton``."""
        repository, local = str(out / "repository"), str(out / "triton")
        return [
            *PROMOTE,
            "--repository",
            repository,
            "--dataset",
            str(self.dataset),
            "--tracking-uri",
            self.url,
            "--local-dir",
            local,
        ]

    def prepare(self, out: Path, base: Path) -> float:
        """A copy of the base repository (version 1 served), the local Triton serving it, MLflow tags as after it."""
        from cloudlulc.serving.local_triton import LocalTriton

        started = time.perf_counter()
        shutil.copytree(base, out / "repository")
        LocalTriton(out / "triton").start(str(out / "repository"), ports=FREE_PORTS)
        tags = {"serving.status": "served", "serving.version": "1", "serving.repository": str(out / "repository")}
        for key, value in tags.items():
            self.client.set_model_version_tag(REGISTERED, self.version, key, value)
        self.client.set_registered_model_tag(REGISTERED, "served_version", "1")
        return time.perf_counter() - started

    def read(self, out: Path) -> PromoteState:
        """What a reader of ``out`` sees now."""
        from cloudlulc.errors import ServingError
        from cloudlulc.serving import ModelRepository
        from cloudlulc.serving.model_config import CPU_MODEL

        repository = out / "repository"
        try:
            served = ModelRepository(str(repository)).served_version(CPU_MODEL)
        except ServingError:
            served = -1  # an unreadable served.json: never a complete version
        return PromoteState(repository_files(repository), served, self.ready(out), self.mlflow(str(repository), served))

    def ready(self, out: Path) -> list[int]:
        """Versions the point's local Triton reports READY ([] when it is not running)."""
        from cloudlulc.errors import ServingError
        from cloudlulc.serving import LocalTriton, TritonClient
        from cloudlulc.serving.model_config import CPU_MODEL

        server = LocalTriton(out / "triton")
        state = server.state()
        if state is None:
            return []
        try:
            with TritonClient(state.grpc_url, repository_key=server.key()) as triton:
                return triton.ready_versions(CPU_MODEL)
        except ServingError:  # unreachable: nothing is served, which the comparison counts
            return []

    def mlflow(self, repository: str, served: int | None) -> dict[str, str]:
        """Aliases and serving tags; the served version and the repository as placeholders (they vary per run)."""
        model = self.client.get_registered_model(REGISTERED)
        tags = dict(self.client.get_model_version(REGISTERED, self.version).tags)
        tags["served_version"] = model.tags.get("served_version", "")
        view = {f"alias {alias}": str(version) for alias, version in model.aliases.items()}
        placeholders = {str(served): "<served>", repository: "<repository>"}
        view.update(
            {k: placeholders.get(v, v) for k, v in tags.items() if k.startswith("serving.") or k == "served_version"}
        )
        return view


def torn(seen: PromoteState, before: PromoteState, reference: PromoteState, repository: Path) -> list[str]:
    """What a reader of a killed promotion sees that no complete run leaves (the 'partial' count)."""
    problems = []
    new = version_files(reference.files, reference.served)
    for number in version_numbers(seen.files):
        complete = version_files(before.files, number) if number in version_numbers(before.files) else new
        if version_files(seen.files, number) != complete:
            problems.append(f"version {number} is not a complete version")
    start, end = shared_files(before.files), shared_files(reference.files)
    problems += [
        f"{name} differs"
        for name, value in shared_files(seen.files).items()
        if value not in (start.get(name), end.get(name))
    ]
    if seen.served not in (None, *version_numbers(seen.files)):
        problems.append(f"served.json names version {seen.served}, not a complete version")
    problems += config_gaps(repository)
    aliases = {k: v for k, v in seen.mlflow.items() if k.startswith("alias")}
    if aliases != {k: v for k, v in before.mlflow.items() if k.startswith("alias")}:
        problems.append(f"aliases moved: {aliases}")
    return problems


def differences(
    seen: PromoteState, before: PromoteState, reference: PromoteState, killed_served: int | None
) -> list[str]:
    """How a rerun's outcome differs from the uninterrupted reference (the 'different' count)."""
    consumed = killed_served if killed_served not in (None, before.served) else None
    expected_served = reference.served if consumed is None else consumed + 1
    problems = [] if seen.served == expected_served else [f"version {seen.served} serves, not {expected_served}"]
    if version_files(seen.files, seen.served) != version_files(reference.files, reference.served):
        problems.append(f"served version {seen.served}'s files differ from the reference's")
    checked = {before.served, consumed, seen.served}
    for number in version_numbers(seen.files):
        if number not in checked:
            problems.append(f"version {number} left, never checked")
        elif number == consumed and version_files(seen.files, number) != version_files(
            reference.files, reference.served
        ):
            problems.append(f"version {number} (served before the kill) differs from the reference's")
        elif number == before.served and version_files(seen.files, number) != version_files(reference.files, number):
            problems.append(f"version {number} changed")
    shared, expected = shared_files(seen.files), shared_files(reference.files)
    problems += [
        f"{name} differs" for name in sorted(set(shared) | set(expected)) if shared.get(name) != expected.get(name)
    ]
    ready = sorted(n for n in version_numbers(seen.files) if n in checked)[-2:]
    if seen.ready != ready:
        problems.append(f"Triton has versions {seen.ready} ready, not {ready}")
    problems += [
        f"MLflow {k}: {seen.mlflow.get(k)!r}, not {v!r}" for k, v in reference.mlflow.items() if seen.mlflow.get(k) != v
    ]
    return problems


@dataclass
class PointResult:
    """What one killed promotion left and how its rerun ended."""

    killed: bool
    partial: list[str]
    different: list[str]
    stale_lock: bool
    lagging: bool
    orphans: int
    canaries_after_kill: int
    served_after_kill: int | None
    seconds: float = 0.0


def promote_point(
    promotion: Promotion, out: Path, at: float, expected: tuple[PromoteState, PromoteState]
) -> PointResult:
    """Kill one promotion ``at`` seconds in, read what it left, rerun it, compare, stop its servers."""
    from cloudlulc.serving.local_triton import LocalTriton
    from cloudlulc.serving.model_config import CPU_MODEL

    before, reference = expected
    killed = kill_after(promotion.command(out), at)
    seen = promotion.read(out)
    half = torn(seen, before, reference, out / "repository")
    lock = out / "repository" / f".{CPU_MODEL}.promotion.lock"
    stale = lock.exists()  # left for the rerun to break
    canaries = len(outlasting(out / "triton" / "canary", CANARY_GRACE_S))
    try:
        run(promotion.command(out), timeout=300)
        different = differences(promotion.read(out), before, reference, seen.served)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        different = [f"rerun failed: {str(error)[-300:]}"]
    lagging = seen.served not in (None, -1) and seen.mlflow.get("served_version") != "<served>"
    LocalTriton(out / "triton").stop()  # the serving one: anything of the point left after it is an orphan
    orphans = kill_left(out)
    stop_tritons(out)
    return PointResult(killed, half, different, stale, lagging, orphans, canaries, seen.served)


def base_repository(promotion: Promotion, work: Path) -> Path:
    """A first promotion into an empty repository (its local Triton started by promote): version 1 serves."""
    base = work / "promote-base"
    (base / "repository").mkdir(parents=True)
    seconds = run(promotion.command(base))
    stop_tritons(base)
    print(f"promote: first promotion {seconds:.1f} s", file=sys.stderr, flush=True)
    return base / "repository"


def measure_promote(work: Path, dataset: Path, points: int, rng: random.Random) -> PromoteTally:
    """The promote stage against a real MLflow server; every Triton of it stopped at the end, errors included."""
    started = time.perf_counter()
    for environment in (ENV, os.environ):  # the key comes from the local Triton's key file, as in production
        environment.pop("TRITON_REPOSITORY_KEY", None)
    with mlflow_server(work / "mlflow", ENV) as url:
        try:
            promotion = Promotion(dataset, url, register_champion(work, dataset, url))
            base = base_repository(promotion, work)
            reference = work / "promote-reference"
            setup = promotion.prepare(reference, base)
            before = promotion.read(reference)
            duration = run(promotion.command(reference))
            served_at = (
                (reference / "repository" / "cloudlulc_cpu.served.json").stat().st_mtime - time.time() + duration
            )
            print(f"promote: reference marked version 2 served {served_at:.1f} s in", file=sys.stderr, flush=True)
            expected = (before, promotion.read(reference))
            tally = PromoteTally(reference_s=round(duration, 1), orphans=stop_tritons(reference))
            announce("promote", duration, points, setup_s=setup + 2)
            for point in range(points):
                out, point_started = work / f"promote-{point}", time.perf_counter()
                promotion.prepare(out, base)
                at = rng.uniform(0.05, 0.95) * duration
                found = promote_point(promotion, out, at, expected)
                found.seconds = time.perf_counter() - point_started
                tally_point(tally, point, at, found)
                shutil.rmtree(out, ignore_errors=True)
            tally.orphans += kill_left(work)  # every point stopped its servers: anything left is an orphan
        finally:
            stop_tritons(work)
    tally.seconds = round(time.perf_counter() - started, 1)
    return tally


def tally_point(tally: PromoteTally, point: int, at: float, found: PointResult) -> None:
    """Add one point's findings to the tally, with a detail line for every point."""
    tally.points += 1
    tally.killed_before_end += found.killed
    tally.partial += bool(found.partial)
    tally.different += bool(found.different)
    tally.stale_locks += found.stale_lock
    tally.tags_lagging += found.lagging
    tally.orphans += found.orphans
    tally.canaries_outliving_kill += found.canaries_after_kill
    line = f"point {point} ({found.seconds:.0f} s): killed at {at:.1f} s, version {found.served_after_kill} served"
    notes = [f"partial {found.partial[:3]}"] if found.partial else []
    notes += [f"differs {found.different[:3]}"] if found.different else []
    notes += ["stale lock"] if found.stale_lock else []
    notes += ["tags lagging"] if found.lagging else []
    late = found.canaries_after_kill
    notes += [f"{late} canary processes running {CANARY_GRACE_S:.0f} s after the kill"] if late else []
    notes += [f"{found.orphans} orphans"] if found.orphans else []
    tally.details.append(f"{line}; {'; '.join(notes) or 'clean'}")


def register_champion(work: Path, dataset: Path, url: str) -> str:
    """Train a small model tracked on ``url`` (registered as challenger) and point ``champion`` at it."""
    from mlflow import MlflowClient

    output = f"output_dir={work / 'promote-trained'}"
    settings = ["epochs=1", "batch_size=8", "crop_size=64", "calibrate=false"]
    run([*CLI, "train", "--tracking-uri", url, f"dataset={dataset}", output, *settings])
    client = MlflowClient(url, registry_uri=url)
    version = str(client.get_model_version_by_alias(REGISTERED, "challenger").version)
    client.set_registered_model_alias(REGISTERED, "champion", version)
    return version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--stages", default="synth,ingest,validate,train,export,map-local,map-s3,promote")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    wanted = set(args.stages.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-kills-") as folder, s3_server() as (bucket_uri, multipart):
        work = Path(folder)
        results = {}
        measured: list[tuple[str, Callable[[], Tally]]] = []
        if wanted - {"promote"}:
            for stage in stages(work, bucket_uri if "map-s3" in wanted else None):
                if stage.name in wanted:
                    measured.append((stage.name, lambda s=stage: measure(s, work, args.points, rng, multipart)))
        if "promote" in wanted:
            measured.append(("promote", lambda: measure_promote(work, small_set(work), args.points, rng)))
        for name, measure_stage in measured:
            tally = measure_stage()
            results[name] = tally.__dict__
            print(json.dumps({name: {k: v for k, v in tally.__dict__.items() if k != "details"}}), flush=True)
    save("kills", {"points_per_stage": args.points, "seed": args.seed, "stages": results})


def small_set(work: Path) -> Path:
    """The small synthetic set of :func:`stages` (made here when only promote runs)."""
    dataset = work / "set"
    if not dataset.exists():
        run([*CLI, "synth", "--out", str(dataset), "--n", "24", "--size", "64", "--seed", "3"])
    return dataset


@contextmanager
def s3_server() -> Iterator[tuple[str, Callable[[], int]]]:
    """A moto S3 server on loopback with one bucket; yields its bucket URI and an open-multipart counter."""
    import boto3

    port = free_port()
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
