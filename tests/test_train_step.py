"""The Kubeflow train step as operators meet it, against a real MLflow server.

A retried attempt resumes (the component killed with SIGKILL after an epoch, then run again with the
same task's artifact URIs, as Kubeflow's retry does), and the registered model is usable the way
MLflow users use it (pyfunc in a fresh process, any tile size, pinned requirements, small example).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 3

DRIVER = f"""
import sys
from kfp import dsl
from components.train import train_model

dataset_uri, work, tracking_uri, kfp_run_id = sys.argv[1:5]
train_model.python_func(
    dataset=dsl.Dataset(uri=dataset_uri, metadata=dict(uri=dataset_uri)),
    epochs={EPOCHS}, batch_size=4, crop_size=64, learning_rate=0.001, architecture="cloudlulc_net",
    model_size="tiny", init="", tracking_uri=tracking_uri,
    model=dsl.Model(uri=work + "/model"), metrics=dsl.Metrics(uri=work + "/metrics"), kfp_run_id=kfp_run_id,
)
"""


def _start(dataset: Path, task: Path, tracking_uri: str, kfp_run_id: str) -> subprocess.Popen[bytes]:
    """One attempt of the train step: the component's function with this task's artifact URIs."""
    task.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", DRIVER, str(dataset), str(task), tracking_uri, kfp_run_id]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen[bytes]) -> None:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output.decode()[-3000:]


def _final_weights(task: Path) -> dict[str, torch.Tensor]:
    path = task / "model.work" / "checkpoints" / f"epoch_{EPOCHS:04d}.pt"
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def train_steps(mlflow_server: str, synthetic_set, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two train tasks on one dataset: one uninterrupted, one SIGKILLed after its first epoch and retried."""
    dataset = synthetic_set(16, 4)
    root = tmp_path_factory.mktemp("train-steps")
    _finish(_start(dataset, root / "unbroken", mlflow_server, "run-unbroken"))

    killed = _start(dataset, root / "retried", mlflow_server, "run-retried")
    first = root / "retried" / "model.work" / "checkpoints" / "epoch_0001.pt"
    deadline = time.monotonic() + 600
    while not first.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, "the attempt ended before it could be killed"
    saved = sorted(p.name for p in first.parent.iterdir())
    assert saved[-1] != f"epoch_{EPOCHS:04d}.pt", saved
    record = json.loads((root / "retried" / "model.work" / "run.json").read_text())
    _finish(_start(dataset, root / "retried", mlflow_server, "run-retried"))
    (root / "killed_run_id").write_text(record["mlflow_run_id"])
    return {"unbroken": root / "unbroken", "retried": root / "retried", "root": root}


def test_a_retried_train_step_resumes_to_the_same_weights_in_one_mlflow_run(mlflow_server: str, train_steps):
    from mlflow import MlflowClient

    unbroken, retried = _final_weights(train_steps["unbroken"]), _final_weights(train_steps["retried"])
    assert unbroken.keys() == retried.keys()
    assert all(torch.equal(unbroken[name], retried[name]) for name in unbroken)

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("cloudlulc")
    runs = client.search_runs([experiment.experiment_id], "tags.`kubeflow.run_id` = 'run-retried'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == (train_steps["root"] / "killed_run_id").read_text()
    assert run.info.status == "FINISHED" and "resumed_from_epoch" in run.data.tags
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_miou")] == list(range(1, EPOCHS + 1))
    step = json.loads((train_steps["retried"] / "model").read_text())
    assert step["run_id"] == run.info.run_id
    assert step["mlflow_run_url"] == f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"


def test_runs_carry_their_dataset_code_version_and_kubeflow_run(mlflow_server: str, train_steps):
    import mlflow
    from mlflow import MlflowClient

    import cloudlulc

    step = json.loads((train_steps["unbroken"] / "model").read_text())
    run = MlflowClient(mlflow_server).get_run(step["run_id"])
    tags = run.data.tags
    assert tags["kubeflow.run_id"] == "run-unbroken" and tags["cloudlulc.version"] == cloudlulc.__version__
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert tags["mlflow.source.git.commit"] == commit.strip()
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == run.data.params["data_version"]
    assert json.loads(dataset_input.dataset.source)["uri"].endswith("set")
    assert [tag.value for tag in dataset_input.tags if tag.key == "mlflow.data.context"] == ["training"]
    mlflow.set_tracking_uri(mlflow_server)


PREDICT = """
import sys
import mlflow
import numpy as np

model = mlflow.pyfunc.load_model(sys.argv[1])
for side in (128, 512):
    probabilities = model.predict(np.random.default_rng(side).random((1, 14, side, side), dtype=np.float32))
    assert probabilities.shape == (1, 6, side, side), probabilities.shape
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    print(side, "ok")
"""


def test_the_registered_model_predicts_any_tile_size_through_pyfunc_in_a_fresh_process(mlflow_server: str, train_steps):
    from importlib.metadata import version

    import mlflow

    step = json.loads((train_steps["unbroken"] / "model").read_text())
    uri = f"models:/cloudlulc/{step['registered_version']}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", PREDICT, uri], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["128", "ok", "512", "ok"]

    mlflow.set_tracking_uri(mlflow_server)
    folder = Path(mlflow.artifacts.download_artifacts(uri))
    requirements = (folder / "requirements.txt").read_text().split()
    assert requirements and all("==" in line for line in requirements), requirements
    for line in requirements:  # every pin is what this environment, which loads the model, has installed
        name, pinned = line.split("==")
        assert version(name).split("+")[0] == pinned, line
    assert not any(line.startswith("cloudlulc") for line in requirements)
    examples = sum(p.stat().st_size for p in folder.iterdir() if "example" in p.name)
    # was 5.8 MB; the floor is torch.export's 2 x 14 x 64 x 64 trace, which MLflow writes twice (once indented)
    assert 0 < examples < 2_500_000, examples
