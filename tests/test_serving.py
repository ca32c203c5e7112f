"""The Triton model repository, the real local Triton, the gRPC client and promotion with rollback."""

import contextlib
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cloudlulc.errors import ServingError
from cloudlulc.export import export_onnx, onnxruntime_runner, torch_runner
from cloudlulc.serving import (
    ONNX_MODEL,
    TENSORRT_MODEL,
    GoldenSample,
    LocalTarget,
    LocalTriton,
    ModelRepository,
    RepositoryTarget,
    RetryPolicy,
    TritonClient,
    promote,
    render_config,
)
from cloudlulc.tracking import GateConfig, Registry, TrackingSettings, run_gate_stage, run_train_stage
from cloudlulc.training.config import load_train_config
from cloudlulc.training.evaluation import load_trained_model

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onnx_export(trained_checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkpoint, dataset = trained_checkpoint
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(load_trained_model(str(checkpoint)), out, str(dataset), parity_count=2)
    return out


def _golden(seed: int = 0) -> GoldenSample:
    rng = np.random.default_rng(seed)
    return GoldenSample(rng.random((1, 12, 64, 64), dtype=np.float32), rng.random((1, 2, 64, 64), dtype=np.float32),
                        rng.random((1, 6, 64, 64), dtype=np.float32))  # fmt: skip


@pytest.mark.parametrize("model", [TENSORRT_MODEL, ONNX_MODEL])
def test_committed_templates_match_the_code_and_parse_as_triton_configs(model: str):
    committed = (REPO_ROOT / "triton_models" / model / "config.pbtxt").read_text()
    assert committed == render_config(model), "triton_models/ is out of date: re-render it"
    config = text_format.Parse(committed, model_config_pb2.ModelConfig())  # Triton's own schema
    assert config.name == model and config.max_batch_size == 8
    assert [i.name for i in config.input] == ["optical", "sar"] and list(config.input[0].dims) == [12, -1, -1]
    assert [o.name for o in config.output] == ["probs"] and list(config.output[0].dims) == [6, -1, -1]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0 and config.version_policy.latest.num_versions == 2
    assert config.platform == {"cloudlulc": "tensorrt_plan", "cloudlulc_onnx": "onnxruntime_onnx"}[model]


@pytest.mark.parametrize("backend", ["folder", "s3"])
def test_repository_versions_are_whole_numbered_and_never_shared(backend: str, tmp_path: Path, request):
    root = f"s3://{request.getfixturevalue('s3_bucket')}/models" if backend == "s3" else str(tmp_path / "models")
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(b"onnx bytes v1")
    repository = ModelRepository(root)
    assert repository.versions(ONNX_MODEL) == []
    assert repository.publish(ONNX_MODEL, model_file, _golden(1), {"note": "first"}) == 1
    # A second publisher that still believes the next number is 2 while a third one already took it.
    rival = ModelRepository(root)
    assert rival.publish(ONNX_MODEL, model_file, _golden(2), {}) == 2
    assert repository.publish(ONNX_MODEL, model_file, _golden(3), {}) == 3
    assert repository.versions(ONNX_MODEL) == [1, 2, 3]
    assert repository.storage.read_bytes(f"{ONNX_MODEL}/config.pbtxt").decode() == render_config(ONNX_MODEL)
    facts = json.loads(repository.storage.read_bytes(f"{ONNX_MODEL}/1/model.json"))
    assert facts == {"note": "first", "model": ONNX_MODEL, "version": 1}
    np.testing.assert_array_equal(repository.golden(ONNX_MODEL, 2).expected, _golden(2).expected)
    repository.remove_version(ONNX_MODEL, 2)
    assert repository.versions(ONNX_MODEL) == [1, 3]
    assert not any(key.startswith(f"{ONNX_MODEL}/2/") for key in repository.storage.list(ONNX_MODEL))
    assert repository.publish(ONNX_MODEL, model_file, _golden(4), {}) == 4
    if backend == "folder":
        assert not (tmp_path / "models" / ONNX_MODEL / "2").exists(), "an empty folder would read as a version"


def test_local_triton_serves_the_export_like_onnxruntime(onnx_export: Path, tmp_path: Path):
    blocker = socket.socket()
    with contextlib.suppress(OSError):  # already taken by something else is the same situation
        blocker.bind(("127.0.0.1", 8001))  # the default gRPC port taken: the server must pick another
    with LocalTriton(tmp_path / "triton") as server:
        state = server.start(str(onnx_export), 7)
        assert state.grpc_port != 8001 and state.version == 7
        with TritonClient(state.grpc_url) as client:
            metadata = client.check_contract(TENSORRT_MODEL, "7")
            assert metadata["versions"] == ["7"]
            rng = np.random.default_rng(5)
            optical = rng.random((3, 12, 64, 96), dtype=np.float32)
            sar = rng.standard_normal((3, 2, 64, 96), dtype=np.float32)
            served = client.infer(TENSORRT_MODEL, optical, sar, "7")
            np.testing.assert_allclose(served, onnxruntime_runner(onnx_export)(optical, sar), atol=1e-5)
            with pytest.raises(ServingError, match="version 8 is not found"):
                client.infer(TENSORRT_MODEL, optical, sar, "8")
    blocker.close()
    assert server.state() is None and not (tmp_path / "triton" / "server.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(state.pid, 0)


def test_unreachable_server_fails_with_the_url_after_retries():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    policy = RetryPolicy(attempts=3, base_s=0.05, deadline_s=5, request_timeout_s=2)
    with TritonClient(f"127.0.0.1:{port}", retry=policy) as client, pytest.raises(ServingError) as error:
        client.check_contract(TENSORRT_MODEL)
    assert f"127.0.0.1:{port}" in str(error.value) and "after 3 attempt(s)" in str(error.value)


class StaleLocalTarget(LocalTarget):
    """A server that did not pick up the new version: it keeps answering with the previous model file."""

    def activate(self, repository: ModelRepository, version: int) -> str:
        stale = repository.model_uri(self.repository_model, repository.versions(self.repository_model)[-2])
        server = LocalTriton(self.state_dir)
        server.stop()
        return server.start(stale, version).grpc_url


def test_promotion_serves_the_champion_and_rolls_back_a_bad_version(trained_checkpoint, tmp_path: Path):
    dataset = str(trained_checkpoint[1])
    settings = TrackingSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="promotion")
    registry = Registry(settings.tracking_uri, settings.registered_model)

    def train_champion(name: str, seed: int) -> str:
        config = load_train_config(None, [f"dataset={dataset}", f"output_dir={tmp_path / name}", "epochs=1",
                                          "batch_size=4", "crop_size=64", f"seed={seed}"])  # fmt: skip
        version = run_train_stage(config, settings, progress=False).version
        if registry.alias_version("champion") is None:
            assert run_gate_stage(dataset, settings, GateConfig(first_min_miou=0, first_min_oa=0)).promote
        else:  # an operator's manual choice, through the registry API
            registry.client.set_registered_model_alias(settings.registered_model, "champion", version)
        assert registry.alias_version("champion") == version
        return version

    repository = ModelRepository(str(tmp_path / "repository"))
    target = LocalTarget(tmp_path / "triton")
    first_version = train_champion("first", 1)
    try:
        first = promote(settings, repository, dataset, target)
        assert (first.served_version, first.registered_version) == (1, first_version)
        assert first.export_parity.passed and first.golden_parity.passed
        tags = registry.client.get_model_version(settings.registered_model, first_version).tags
        assert tags["serving.status"] == "served" and tags["serving.version"] == "1"
        assert registry.client.get_registered_model(settings.registered_model).tags["served_version"] == "1"

        # A second champion whose new version the server does not really serve: the golden check catches it.
        second_version = train_champion("second", 2)
        with pytest.raises(ServingError, match=r"rolled back \(version 1 serves again\)"):
            promote(settings, repository, dataset, StaleLocalTarget(tmp_path / "triton"))
        assert repository.versions(ONNX_MODEL) == [1]
        tags = registry.client.get_model_version(settings.registered_model, second_version).tags
        assert tags["serving.status"].startswith("rolled back") and "golden sample" in tags["serving.status"]
        state = LocalTriton(tmp_path / "triton").state()
        assert state is not None and state.version == 1
        with TritonClient(state.grpc_url) as client:
            golden = repository.golden(ONNX_MODEL, 1)
            served = client.infer(TENSORRT_MODEL, golden.optical, golden.sar, "1")
            np.testing.assert_allclose(served, golden.expected, atol=1e-4)

            # The production path's requests against a real Triton: explicit load of the published folder.
            # This bundled Triton has no ONNX Runtime backend, so the load fails and promotion must roll back.
            production = RepositoryTarget(state.grpc_url, served_model=ONNX_MODEL, repository_model=ONNX_MODEL)
            with pytest.raises(ServingError, match="loading 'cloudlulc_onnx' failed"):
                promote(settings, repository, dataset, production)
            assert repository.versions(ONNX_MODEL) == [1], "the unloadable version is removed again"
            assert client.server_ready(), "the serving model survives a failed load"
            reference = torch_runner(load_trained_model(str(tmp_path / "first" / "checkpoints" / "epoch_0001.pt")))
            np.testing.assert_allclose(client.infer(TENSORRT_MODEL, golden.optical, golden.sar, "1"),
                                       reference(golden.optical, golden.sar), atol=1e-4)  # fmt: skip
    finally:
        LocalTriton(tmp_path / "triton").stop()


def _scene(folder: Path) -> tuple[Path, Path]:
    """A small seeded Sentinel-2 / Sentinel-1 pair on one UTM grid (the mapping tests cover other CRSs)."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from cloudlulc import schema
    from cloudlulc.io.rasters import RasterProfile, write_raster

    rng = np.random.default_rng(11)
    crs, transform = CRS.from_epsg(32632), from_origin(700_000.0, 5_000_000.0, 10, 10)
    optical = folder / "s2.tif"
    dn = (1000 + 2000 * rng.random((12, 200, 260))).astype(np.uint16)
    write_raster(str(optical), dn, RasterProfile(crs, transform, nodata=0, descriptions=schema.S2_BANDS))
    sar = folder / "s1.tif"
    with rasterio.open(sar, "w", driver="GTiff", width=260, height=200, count=2, dtype="float32", crs=crs,
                       transform=transform, nodata=float("nan")) as dataset:  # fmt: skip
        dataset.write((-15 + 3 * rng.standard_normal((2, 200, 260))).astype(np.float32))
        dataset.descriptions = schema.S1_POLARISATIONS
        dataset.units = ("dB", "dB")
    return optical, sar


def test_map_command_through_the_local_triton_equals_in_process(onnx_export: Path, tmp_path: Path):
    import subprocess
    import sys

    from cloudlulc.io.rasters import read_raster

    cli = [str(Path(sys.executable).with_name("cloudlulc"))]
    optical, sar = _scene(tmp_path)
    common = ["map", "--optical", str(optical), "--sar", str(sar), "--tile", "128", "--overlap", "32"]
    with LocalTriton(tmp_path / "triton") as server:
        server.start(str(onnx_export), 1)
        served = subprocess.run([*cli, *common, "--out", str(tmp_path / "triton_map.tif"), "--local-dir",
                                 str(tmp_path / "triton")], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert served.returncode == 0, served.stderr[-2000:]
    assert "quicklook:" in served.stdout and (tmp_path / "triton_map_quicklook.png").exists()
    assert json.loads((tmp_path / "triton_map_areas.json").read_text())
    local = subprocess.run([*cli, *common, "--out", str(tmp_path / "onnx_map.tif"), "--onnx", str(onnx_export)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert local.returncode == 0, local.stderr[-2000:]
    through_triton, in_process = (
        read_raster(str(tmp_path / "triton_map.tif")),
        read_raster(str(tmp_path / "onnx_map.tif")),
    )
    assert np.mean(through_triton == in_process) >= 0.999

    # No server: a one-line error naming where it looked, exit 6, no map written.
    missing = subprocess.run([*cli, *common, "--out", str(tmp_path / "none.tif"), "--local-dir", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 6 and "no local Triton running" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "none.tif").exists()
