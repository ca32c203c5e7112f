"""Kills leave nothing behind: worker pools die with their parent, a rerun removes a killed run's temporary files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
from test_mapping import scene_pair  # noqa: F401  (fixture)

from cloudlulc.data.synthetic import SynthConfig, generate_dataset
from cloudlulc.mapping import map_scene
from cloudlulc.mapping.options import MapOptions

CLI = [str(Path(sys.executable).with_name("cloudlulc"))]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_parent_and_count_orphans(command: list[str], workers: int, ready: Path | None = None) -> int:
    """Start ``command`` in its own session, SIGKILL only its top process once ``workers`` children run (and
    ``ready`` exists), and return how many of those children are still alive 5 s later."""
    process = subprocess.Popen(
        command, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            children = psutil.Process(process.pid).children(recursive=True)
            if len(children) >= workers and (ready is None or ready.exists()):
                break
            time.sleep(0.02)
        assert process.poll() is None and len(children) >= workers, "the command ended before its workers ran"
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(c.pid) for c in children):
            time.sleep(0.05)
        return sum(_alive(c.pid) for c in children)
    finally:
        for child in children:  # never leak processes into the rest of the suite
            if _alive(child.pid):
                child.kill()


def test_killed_synth_leaves_no_worker_behind(tmp_path: Path):
    out = tmp_path / "set"
    command = [*CLI, "synth", "--out", str(out), "--n", "160", "--size", "128", "--workers", "2"]
    assert kill_parent_and_count_orphans(command, 2, ready=out / "synth.json") == 0
    # The rerun takes over the dead run's claim and finishes; nothing temporary is left.
    rerun = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name or p.name.endswith(".lock")]


def test_killed_validate_leaves_no_worker_behind(tmp_path: Path):
    dataset = tmp_path / "set"
    generate_dataset(str(dataset), SynthConfig(n=96, size=128, seed=3), workers=2, progress=False)
    command = [*CLI, "validate", str(dataset), "--report-dir", str(tmp_path / "report"), "--workers", "2"]
    assert kill_parent_and_count_orphans(command, 2) == 0


CHILD = """
import sys, time
import numpy as np
import cloudlulc.io.rasters as rasters
from cloudlulc.mapping import map_scene
from cloudlulc.mapping.options import MapOptions

def hang(path):  # called on the finished COG under its temporary name: the kill lands mid-publish
    open(sys.argv[4], "w").close()
    time.sleep(600)

rasters.validate_cog = hang
predict = lambda optical, sar: np.full((len(optical), 6, 64, 64), 1 / 6, np.float32)
map_scene(sys.argv[1], sys.argv[2], sys.argv[3], predict, options=MapOptions(tile=64, overlap=16), progress=False)
"""


def test_rerun_after_a_kill_leaves_no_temporary_file_beside_the_map(scene_pair, tmp_path: Path):  # noqa: F811
    optical, sar = scene_pair
    out, ready = tmp_path / "maps" / "map.tif", tmp_path / "publishing"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    process = subprocess.Popen([sys.executable, str(script), str(optical), str(sar), str(out), str(ready)], env=ENV)
    deadline = time.monotonic() + 60
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    left = sorted(p.name for p in out.parent.iterdir())
    assert any(".tmp-" in name for name in left), f"the kill should leave a temporary COG: {left}"

    def predict(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        return np.full((len(optical), 6, 64, 64), 1 / 6, np.float32)

    map_scene(str(optical), str(sar), str(out), predict, options=MapOptions(tile=64, overlap=16), progress=False)
    assert sorted(p.name for p in out.parent.iterdir()) == ["map.tif", "map_areas.json", "map_quicklook.png"]
    with rasterio.open(out) as dataset:
        assert dataset.width > 0


@pytest.mark.parametrize("alive", [True, False])
def test_a_live_writers_temporary_file_is_kept(tmp_path: Path, alive: bool):
    from cloudlulc.io.storage import _owner_tag, remove_stale_temporaries

    if alive:
        name = f".x.tmp-{_owner_tag()}.tif"  # this process: alive
    else:
        finished = subprocess.Popen(["true"])
        finished.wait()
        name = f".x.tmp-{finished.pid}-{_owner_tag().split('-')[1]}-abcdef12.tif"
    (tmp_path / name).write_bytes(b"partial")
    (tmp_path / ".y.tmp-deadbeef.tif").write_bytes(b"no owner recorded: kept")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == ([] if alive else [name])
    assert (tmp_path / ".y.tmp-deadbeef.tif").exists()
