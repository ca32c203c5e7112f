"""Data-parallel training: two CPU replicas under torchrun (gloo), launched by `cloudlulc train --processes 2`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from cloudlulc.data.layout import DatasetLayout
from cloudlulc.training.checkpoints import list_checkpoints, load_checkpoint
from cloudlulc.training.distributed import Replica, process_count, replica_from_environment


@pytest.fixture(scope="module")
def ddp_set(synthetic_set) -> Path:
    return synthetic_set(30, 5)


def test_two_replicas_train_one_tracked_run(ddp_set: Path, tmp_path: Path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable,
        "-m",
        "cloudlulc",
        "train",
        "--processes",
        "2",
        f"dataset={ddp_set}",
        f"output_dir={tmp_path / 'run'}",
        "device=cpu",
        "epochs=2",
        "batch_size=3",
        "crop_size=64",
        "learning_rate=0.003",
        "warmup_steps=2",
    ]
    # cpu forces auto to 1 process, so the explicit --processes 2 is what starts torchrun.
    finished = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "training with 2 data-parallel processes" in finished.stderr
    assert finished.stdout.count("registered cloudlulc version 1 as challenger") == 1, finished.stdout

    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2]
    # Every training sample is seen once per epoch, half by each replica (the sampler pads an odd count by one).
    train_count = len(DatasetLayout(str(ddp_set)).read_records(("train",)))
    assert all(record["train_samples"] == train_count + train_count % 2 for record in history), history
    assert all(torch.isfinite(torch.tensor(record["train_total"])) for record in history)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["epoch_0001.pt", "epoch_0002.pt"]
    state = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert not any(key.startswith(("module.", "network.")) for key in state["model"]), "unwrapped weights"

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'outputs' / 'mlflow' / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 1, "only rank 0 logs"
    assert len(mlflow.MlflowClient().search_model_versions("name='cloudlulc'")) == 1


def test_replica_and_process_count_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert replica_from_environment() == Replica()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    replica = replica_from_environment()
    assert replica == Replica(rank=3, local_rank=1, world_size=4) and not replica.is_main and replica.distributed
    assert process_count("auto", "cpu") == 1
    assert process_count("3", "cpu") == 3
    for bad in ("0", "two"):
        with pytest.raises(ValueError, match="--processes"):
            process_count(bad, "auto")
