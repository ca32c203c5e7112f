"""Races: concurrent creators of one key, two runs into one output, concurrent gates moving ``champion``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_mapping import scene_pair  # noqa: F401  (fixture)

from cloudlulc import schema
from cloudlulc.errors import OutputBusyError
from cloudlulc.io.claim import claim_output
from cloudlulc.io.storage import open_storage
from cloudlulc.mapping import map_scene
from cloudlulc.mapping.options import MapOptions

CLI = [str(Path(sys.executable).with_name("cloudlulc"))]


def create_concurrently(root: str, key: str, count: int) -> tuple[list[bool], bytes]:
    """``count`` threads create ``key`` at once, each with its own payload; their answers and the object."""
    barrier = threading.Barrier(count)

    def create(index: int) -> bool:
        storage = open_storage(root)
        barrier.wait()
        return storage.write_bytes(key, f"payload {index}".encode(), if_absent=True)

    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(create, range(count)))
    return answers, open_storage(root).read_bytes(key)


@pytest.mark.parametrize("backend", ["s3", "local"])
def test_32_creators_of_one_key_one_winner_31_clean_refusals(backend: str, request, tmp_path: Path):
    root = f"s3://{request.getfixturevalue('s3_bucket')}/race" if backend == "s3" else str(tmp_path)
    answers, stored = create_concurrently(root, "claims/one.json", 32)
    assert answers.count(True) == 1 and answers.count(False) == 31
    assert stored == f"payload {answers.index(True)}".encode()
    assert open_storage(root).list("claims") == ["claims/one.json"]


def constant_model(klass: int, delay_s: float = 0.15):
    """A predictor that puts every pixel in ``klass``, slowly enough for two runs to overlap."""

    def predict(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        time.sleep(delay_s)
        probabilities = np.full((len(optical), schema.NUM_CLASSES, *optical.shape[2:]), 0.1, np.float32)
        probabilities[:, klass] = 0.5
        return probabilities

    return predict


def test_two_maps_into_one_output_one_runs_the_other_is_refused(scene_pair, tmp_path: Path):  # noqa: F811
    optical, sar = scene_pair
    out = tmp_path / "map.tif"
    barrier = threading.Barrier(2)

    def run(klass: int) -> str:
        barrier.wait()
        try:
            map_scene(
                str(optical),
                str(sar),
                str(out),
                constant_model(klass),
                options=MapOptions(tile=64, overlap=16),
                progress=False,
                model_id=f"model-{klass}",
            )
        except OutputBusyError as error:
            return f"refused: {error}"
        return f"model-{klass}"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(run, [1, 3]))
    winners = [o for o in outcomes if not o.startswith("refused")]
    refusals = [o for o in outcomes if o.startswith("refused")]
    assert len(winners) == 1 and len(refusals) == 1, outcomes
    assert f"{out}: output in use by pid {os.getpid()} on " in refusals[0] and "\n" not in refusals[0]
    with rasterio.open(out) as dataset:
        classes = dataset.read(1)
        assert dataset.tags()["CLOUDLULC_MODEL"] == winners[0]
    mapped = classes[classes != schema.IGNORE_INDEX]
    assert mapped.size and (mapped == int(winners[0][-1])).all(), "the whole map is the winner's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif", "map_areas.json", "map_quicklook.png"]


def test_two_synth_runs_into_one_folder_one_is_refused_with_exit_4(tmp_path: Path):
    out = tmp_path / "set"
    command = [*CLI, "synth", "--out", str(out), "--n", "120", "--size", "128"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=120), run.stderr.read() if run.stderr else "") for run in runs]
    assert sorted(code for code, _ in results) == [0, 4], results
    refused = next(stderr for code, stderr in results if code == 4)
    lines = [line for line in refused.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}: output in use by pid "), refused
    winner = next(run for run in runs if run.returncode == 0)
    assert f"pid {winner.pid} on " in lines[0] and "cloudlulc synth" in lines[0]
    assert len(list((out / "split").glob("*.csv"))) == 3 and not (tmp_path / "set.lock").exists()


@pytest.mark.parametrize(
    ("host", "beat_age_s", "taken_over"),
    [("here", 0, True), ("elsewhere", 600, True), ("elsewhere", 1, False)],
    ids=["dead-pid-on-this-host", "other-host-silent", "other-host-beating"],
)
def test_s3_claims_of_gone_holders_are_taken_over(s3_bucket: str, host: str, beat_age_s: float, taken_over: bool):
    from cloudlulc.io.claim import Holder

    uri, storage = f"s3://{s3_bucket}/maps/map.tif", open_storage(f"s3://{s3_bucket}")
    finished = subprocess.Popen(["true"])
    finished.wait()
    hostname = os.uname().nodename if host == "here" else "another-pod"
    dead = Holder(finished.pid, hostname, "2026-01-01T00:00:00Z", "cloudlulc map", "t", time.time() - beat_age_s)
    storage.write_bytes("maps/map.tif.lock", dead.dumps())
    if not taken_over:
        with pytest.raises(OutputBusyError, match=rf"in use by pid {finished.pid} on another-pod since"):
            claim_output(uri).__enter__()
        return
    with (
        claim_output(uri) as me,
        pytest.raises(OutputBusyError, match=rf"output in use by pid {me.pid} on "),
        claim_output(uri),
    ):
        pass
    assert not storage.exists("maps/map.tif.lock")


def test_a_live_s3_holder_keeps_its_claim_fresh(s3_bucket: str, monkeypatch: pytest.MonkeyPatch):
    from cloudlulc.io.claim import Holder

    monkeypatch.setenv("CLOUDLULC_CLAIM_STALE_S", "0.6")  # a beat every 0.1 s
    uri, storage = f"s3://{s3_bucket}/set", open_storage(f"s3://{s3_bucket}")
    with claim_output(uri) as me:
        time.sleep(1.0)  # longer than the stale time: only the beats keep the claim
        stored = Holder.parse(storage.read_bytes("set.lock"))
        assert stored is not None and stored.token == me.token and stored.beat > me.beat
        with pytest.raises(OutputBusyError, match=f"pid {me.pid}"), claim_output(uri):
            pass
    assert not storage.exists("set.lock")


def test_64_gates_moving_champion_exactly_one_moves(mlflow_server: str):
    from mlflow import MlflowClient

    from cloudlulc.tracking.registry import CHAMPION, ChampionMovedError, Registry

    name = "race-model"
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    client.create_registered_model(name)
    versions = [client.create_model_version(name, f"s3://models/race/{i}").version for i in range(3)]
    client.set_registered_model_alias(name, CHAMPION, versions[0])
    barrier = threading.Barrier(64)

    def gate(index: int) -> str:
        registry = Registry(mlflow_server, name)
        target = str(versions[1 + index % 2])
        barrier.wait()
        try:
            registry.move_champion(str(versions[0]), target)
        except ChampionMovedError as error:
            return f"refused: {error}"
        return f"moved to {target}"

    with ThreadPoolExecutor(64) as pool:
        outcomes = list(pool.map(gate, range(64)))
    moves = [o for o in outcomes if o.startswith("moved")]
    assert len(moves) == 1, moves
    assert all(f"champion of {name}" in o for o in outcomes if o.startswith("refused"))
    assert moves[0] == f"moved to {Registry(mlflow_server, name).alias_version(CHAMPION)}"
    assert [m.name for m in client.search_registered_models()].count(name) == 1
    assert not [m.name for m in client.search_registered_models(f"name LIKE '{name}.%'")], "claims are removed"
