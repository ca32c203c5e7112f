"""Shared fixtures: small synthetic datasets, real Sentinel samples, and a real S3 server on loopback."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cloudlulc.data.synthetic import SynthConfig, generate_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("CLOUDLULC_REALDATA", REPO_ROOT.parent / "shared" / "realdata"))

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture(autouse=True)
def _tracking_uri_restored() -> Iterator[None]:
    """MLflow keeps the tracking URI in a global and exports it as MLFLOW_TRACKING_URI to every child
    process: a test that points it at a server must not send later tests' runs there."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if os.environ.get("MLFLOW_TRACKING_URI") != before:
        import mlflow

        mlflow.set_tracking_uri(before)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Folder of the small real Sentinel-1/2 and WorldCover files (see its README for provenance)."""
    if not (REALDATA / "README.md").exists():
        raise FileNotFoundError(f"real sample folder not found at {REALDATA}; set CLOUDLULC_REALDATA")
    return REALDATA


SyntheticSetFactory = Callable[[int, int], Path]


@pytest.fixture(scope="session")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSetFactory:
    """Read-only synthetic sets of 64 px patches, made once per (n, seed) in a session."""
    made: dict[tuple[int, int], Path] = {}

    def make(n: int, seed: int) -> Path:
        if (n, seed) not in made:
            root = tmp_path_factory.mktemp(f"set-{n}-{seed}") / "set"
            generate_dataset(str(root), SynthConfig(n=n, size=64, seed=seed), progress=False)
            made[n, seed] = root
        return made[n, seed]

    return make


@pytest.fixture(scope="session")
def trained_checkpoint(
    synthetic_set: SyntheticSetFactory, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """(checkpoint, dataset): a tiny CloudLULC-Net trained for two epochs, for export and serving tests."""
    from cloudlulc.training.config import load_train_config
    from cloudlulc.training.trainer import train

    dataset = synthetic_set(16, 4)
    output = tmp_path_factory.mktemp("trained")
    config = load_train_config(
        None,
        [
            f"dataset={dataset}",
            f"output_dir={output}",
            "epochs=2",
            "batch_size=4",
            "crop_size=64",
            "learning_rate=0.003",
        ],
    )
    result = train(config, progress=False)
    assert result.checkpoint is not None
    return result.checkpoint, dataset


@pytest.fixture(scope="session")
def onnx_export(trained_checkpoint: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tiny model exported to ONNX (parity-checked), shared by the serving tests."""
    from cloudlulc.export import export_onnx
    from cloudlulc.training.evaluation import load_trained_model

    checkpoint, dataset = trained_checkpoint
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(load_trained_model(str(checkpoint)), out, str(dataset), parity_count=2)
    return out


@pytest.fixture(scope="session")
def synthetic_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic CloudLULC-Set made once per session; copy it before modifying."""
    root = tmp_path_factory.mktemp("synthetic") / "CloudLULC-Set"
    generate_dataset(str(root), SynthConfig(n=12, size=64, seed=7), progress=False)
    return root


@pytest.fixture
def dataset_copy(synthetic_master: Path, tmp_path: Path) -> Path:
    """A private copy of the session dataset that a test may break."""
    target = tmp_path / "CloudLULC-Set"
    shutil.copytree(synthetic_master, target)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"server on port {port} not up after {timeout} s")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real S3-compatible server (moto server mode) on loopback; stopped at the end of the session."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3_bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the loopback S3 server, with credentials and endpoint in the environment."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("CLOUDLULC_S3_ENDPOINT_URL", moto_server)
    for name in ("AWS_HTTPS", "AWS_VIRTUAL_HOSTING"):
        monkeypatch.delenv(name, raising=False)
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"test-{slug}"
    boto3.client("s3", endpoint_url=moto_server).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend, proxied artifacts) on loopback; stopped afterwards."""
    from servers import running_mlflow_server

    folder = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow_server(folder, free_port(), f"sqlite:///{folder / 'mlflow.db'}") as url:
        yield url
