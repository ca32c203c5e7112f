"""The Triton model repository, the Python-backend model, the real local Triton and the gRPC client."""

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cloudlulc.errors import ServingError
from cloudlulc.export import onnxruntime_runner
from cloudlulc.serving import (
    CPU_MODEL,
    ONNX_MODEL,
    TENSORRT_MODEL,
    GoldenSample,
    LocalTriton,
    ModelRepository,
    RetryPolicy,
    TritonClient,
    render_config,
)
from cloudlulc.serving.model_config import SERVED_MODELS, ServingSettings, build_config, parse_config
from cloudlulc.serving.python_backend import VersionFiles, load_runner, run_requests
from cloudlulc.serving.regional import loopback_key

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("cloudlulc"))


def golden_sample(seed: int = 0, onnx: Path | None = None) -> GoldenSample:
    rng = np.random.default_rng(seed)
    optical, sar = rng.random((1, 12, 64, 64), dtype=np.float32), rng.random((1, 2, 64, 64), dtype=np.float32)
    expected = onnxruntime_runner(onnx)(optical, sar) if onnx else rng.random((1, 6, 64, 64), dtype=np.float32)
    return GoldenSample(optical, sar, expected)


@pytest.mark.parametrize("model", SERVED_MODELS)
def test_committed_templates_match_the_code_and_parse_as_triton_configs(model: str):
    committed = (REPO_ROOT / "triton_models" / model / "config.pbtxt").read_text()
    assert committed == render_config(model), "triton_models/ is out of date: re-render it"
    config = text_format.Parse(committed, model_config_pb2.ModelConfig())  # Triton's own schema
    assert config.name == model and config.max_batch_size == 8
    assert [i.name for i in config.input] == ["optical", "sar"] and list(config.input[0].dims) == [12, -1, -1]
    assert [o.name for o in config.output] == ["probs"] and list(config.output[0].dims) == [6, -1, -1]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0 and config.version_policy.latest.num_versions == 2
    assert config.instance_group[0].count >= 1
    warmup = config.model_warmup[0]
    assert warmup.batch_size == 1 and {k: v.input_data_file for k, v in warmup.inputs.items()} == {
        "optical": "optical",
        "sar": "sar",
    }
    runtime = {"cloudlulc": "tensorrt_plan", "cloudlulc_onnx": "onnxruntime_onnx", "cloudlulc_cpu": ""}[model]
    assert config.platform == runtime and config.backend == ("python" if model == CPU_MODEL else "")


@pytest.mark.parametrize("model", SERVED_MODELS)
def test_a_written_config_parses_back_into_the_same_model_config(model: str, tmp_path: Path):
    settings = ServingSettings(max_batch_size=4, preferred_batch_sizes=(2, 4), python_threads=3, delay_s=0.25)
    repository = ModelRepository(str(tmp_path / "models"))
    repository.write_config(model, golden_sample(), settings)
    parsed = parse_config(repository.storage.read_bytes(f"{model}/config.pbtxt").decode())
    assert parsed == build_config(model, settings)
    assert list(parsed.dynamic_batching.preferred_batch_size) == [2, 4]
    if model == CPU_MODEL:
        assert {k: v.string_value for k, v in parsed.parameters.items()} == {
            "onnx_threads": "3",
            "model_file": "model.onnx",
            "delay_s": "0.25",
        }


@pytest.mark.parametrize("backend", ["folder", "s3"])
def test_repository_versions_are_whole_numbered_and_never_shared(backend: str, tmp_path: Path, request):
    root = f"s3://{request.getfixturevalue('s3_bucket')}/models" if backend == "s3" else str(tmp_path / "models")
    model_file = tmp_path / "model.onnx"
    model_file.write_bytes(b"onnx bytes v1")
    repository = ModelRepository(root)
    assert repository.versions(ONNX_MODEL) == []
    assert repository.publish(ONNX_MODEL, model_file, golden_sample(1), {"note": "first"}) == 1
    # A second publisher that still believes the next number is 2 while a third one already took it.
    rival = ModelRepository(root)
    assert rival.publish(ONNX_MODEL, model_file, golden_sample(2), {}) == 2
    assert repository.publish(ONNX_MODEL, model_file, golden_sample(3), {}) == 3
    assert repository.versions(ONNX_MODEL) == [1, 2, 3]
    assert repository.storage.read_bytes(f"{ONNX_MODEL}/config.pbtxt").decode() == render_config(ONNX_MODEL)
    warmup = np.frombuffer(repository.storage.read_bytes(f"{ONNX_MODEL}/warmup/optical"), np.float32)
    np.testing.assert_array_equal(warmup.reshape(12, 256, 256)[:, :64, :64], golden_sample(1).optical[0])
    facts = json.loads(repository.storage.read_bytes(f"{ONNX_MODEL}/1/model.json"))
    assert facts == {"note": "first", "model": ONNX_MODEL, "version": 1}
    np.testing.assert_array_equal(repository.golden(ONNX_MODEL, 2).expected, golden_sample(2).expected)
    repository.remove_version(ONNX_MODEL, 2)
    assert repository.versions(ONNX_MODEL) == [1, 3]
    assert not any(key.startswith(f"{ONNX_MODEL}/2/") for key in repository.storage.list(ONNX_MODEL))
    assert repository.publish(ONNX_MODEL, model_file, golden_sample(4), {}) == 4
    if backend == "folder":
        assert not (tmp_path / "models" / ONNX_MODEL / "2").exists(), "an empty folder would read as a version"
    # The CPU platform carries the Python backend's adapter in every version.
    assert repository.publish(CPU_MODEL, model_file, golden_sample(5), {}) == 1
    adapter = repository.storage.read_bytes(f"{CPU_MODEL}/1/model.py").decode()
    assert "class TritonPythonModel" in adapter and "cloudlulc.serving.python_backend" in adapter
    assert repository.served_version(CPU_MODEL) is None
    repository.mark_served(CPU_MODEL, 1, {"note": "checked"})
    assert repository.served_version(CPU_MODEL) == 1
    assert repository.check() == [CPU_MODEL, ONNX_MODEL]


def test_python_backend_library_batches_requests_and_names_a_bad_file(onnx_export: Path, tmp_path: Path):
    config = {"name": CPU_MODEL, "parameters": {"onnx_threads": {"string_value": "1"}}}
    args = {"model_config": json.dumps(config), "model_repository": str(onnx_export.parent), "model_version": "1"}
    files = VersionFiles.from_triton_args(args)
    assert files == VersionFiles(onnx_export.parent / "1" / "model.onnx", 1, 0.0)
    run = load_runner(VersionFiles(onnx_export, 1))
    rng = np.random.default_rng(2)
    requests = [
        (rng.random((b, 12, side, side), dtype=np.float32), rng.random((b, 2, side, side), dtype=np.float32))
        for b, side in ((2, 64), (1, 96), (3, 64))
    ]
    calls: list[tuple[int, ...]] = []

    def counting(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        calls.append(optical.shape)
        return run(optical, sar)

    answers = run_requests(counting, requests)
    assert sorted(calls) == [(1, 12, 96, 96), (5, 12, 64, 64)], "same-size requests share one call"
    for (optical, sar), probs in zip(requests, answers, strict=True):
        np.testing.assert_allclose(probs, run(optical, sar), atol=1e-5)
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ServingError, match=f"{bad}: .*not a loadable ONNX model"):
        load_runner(VersionFiles(bad, 1))
    with pytest.raises(ServingError, match="model file of this version not found"):
        load_runner(VersionFiles(tmp_path / "none.onnx", 1))


def cpu_repository(root: Path, onnx: Path, versions: int = 1) -> ModelRepository:
    """A repository holding ``versions`` versions of ``onnx`` as ``cloudlulc_cpu``."""
    repository = ModelRepository(str(root))
    for _ in range(versions):
        repository.publish(CPU_MODEL, onnx, golden_sample(0, onnx), {})
    return repository


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_local_triton_serves_the_repository_like_onnxruntime(
    onnx_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.delenv("TRITON_REPOSITORY_KEY", raising=False)
    repository = cpu_repository(tmp_path / "repository", onnx_export)
    blocker = socket.socket()
    with contextlib.suppress(OSError):  # already taken by something else is the same situation
        blocker.bind(("127.0.0.1", 8001))  # the default gRPC port taken: the server must pick another
    with LocalTriton(tmp_path / "triton") as server:
        state = server.start(repository.uri)
        assert state.grpc_port != 8001 and state.models == [CPU_MODEL] and state.key_generated
        key_file = Path(str(state.key_file))
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(server.key()) == 64
        with TritonClient(state.grpc_url) as client:
            metadata = client.check_contract(CPU_MODEL, "1")
            assert metadata["versions"] == ["1"] and metadata["platform"] == "python"
            rng = np.random.default_rng(5)
            optical = rng.random((3, 12, 64, 96), dtype=np.float32)
            sar = rng.standard_normal((3, 2, 64, 96), dtype=np.float32)
            served = client.infer(CPU_MODEL, optical, sar, "1")
            np.testing.assert_allclose(served, onnxruntime_runner(onnx_export)(optical, sar), atol=1e-5)
            with pytest.raises(ServingError, match="version 8 is not found"):
                client.infer(CPU_MODEL, optical, sar, "8")
            quick = RetryPolicy(attempts=1)
            # The restricted repository API: refused without the key, or with a wrong one; served with it.
            for key in ("", "wrong-key"):
                with (
                    TritonClient(state.grpc_url, retry=quick, repository_key=key) as keyless,
                    pytest.raises(ServingError, match="restricted"),
                ):
                    keyless.unload_model(CPU_MODEL)
            with TritonClient(state.grpc_url, repository_key=server.key()) as admin:
                assert admin.ready_versions(CPU_MODEL) == [1]
                # System shared memory: same answers, a region per thread grown for a larger batch, freed at close.
                with TritonClient(state.grpc_url, repository_key=server.key(), shared_memory=True) as shm_client:
                    np.testing.assert_array_equal(shm_client.infer(CPU_MODEL, optical, sar, "1"), served)
                    # another batch size: the same up to float rounding (ONNX Runtime's vectorised exp treats a
                    # tensor's tail apart, so a bit may differ with its length)
                    np.testing.assert_allclose(
                        shm_client.infer(CPU_MODEL, optical[:1], sar[:1], "1"), served[:1], rtol=0, atol=1e-6
                    )
                    bigger = np.concatenate([optical, optical]), np.concatenate([sar, sar])
                    np.testing.assert_allclose(shm_client.infer(CPU_MODEL, *bigger, "1")[3:], served, rtol=0, atol=1e-6)
                    assert len(admin.shared_memory_regions()) == 1, "one region per thread, grown in place"
                assert admin.shared_memory_regions() == [], "the client unregisters its regions when closed"
                assert not [p for p in Path("/dev/shm").glob(f"cloudlulc_{os.getpid()}_*")], "and frees them"
            with TritonClient(state.grpc_url, retry=quick, repository_key="", shared_memory=True) as keyless:
                np.testing.assert_array_equal(keyless.infer(CPU_MODEL, optical, sar, "1"), served)
            assert "registering shared memory" in caplog.text and "restricted" in caplog.text
            assert "inside the gRPC messages instead" in caplog.text, "a keyless client falls back, saying why"
            assert loopback_key(state.grpc_url, tmp_path / "triton") == server.key()
            assert loopback_key(f"10.0.0.7:{state.grpc_port}", tmp_path / "triton") is None, "not on this host"
            stubs = subprocess.run(["pgrep", "-g", str(state.pid)], capture_output=True, text=True).stdout.split()
            assert len(stubs) >= 2, "the server and its Python-backend stub share the process group"
    blocker.close()
    assert server.state() is None and not (tmp_path / "triton" / "server.json").exists()
    assert group_gone(state.pid), "a Python-backend stub outlived the server"


def test_bad_repositories_fail_in_one_line_naming_the_path(
    onnx_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("TRITON_REPOSITORY_KEY", "test-key")
    server = LocalTriton(tmp_path / "triton")
    with pytest.raises(ServingError, match=f"{tmp_path / 'missing'}: model repository is not a readable folder"):
        server.start(str(tmp_path / "missing"))
    no_config = tmp_path / "no-config"
    (no_config / CPU_MODEL / "1").mkdir(parents=True)
    (no_config / CPU_MODEL / "1" / "model.onnx").write_bytes(onnx_export.read_bytes())
    with pytest.raises(ServingError, match=f"{no_config / CPU_MODEL}: model folder without config.pbtxt"):
        server.start(str(no_config))
    repository = cpu_repository(tmp_path / "named", onnx_export)
    (tmp_path / "named" / CPU_MODEL / "latest").mkdir()
    (tmp_path / "named" / CPU_MODEL / "latest" / "model.onnx").write_bytes(b"x")
    with pytest.raises(ServingError, match=f"{tmp_path / 'named' / CPU_MODEL / 'latest'}: version folder is not"):
        server.start(repository.uri)
    broken = cpu_repository(tmp_path / "broken", onnx_export)
    (tmp_path / "broken" / CPU_MODEL / "1" / "model.py").write_text("raise RuntimeError('adapter broken')\n")
    with pytest.raises(ServingError) as error:
        server.start(broken.uri, timeout_s=60)
    assert f"{tmp_path / 'broken' / CPU_MODEL / '1'}: version 1 of {CPU_MODEL} failed to load" in str(error.value)
    assert "adapter broken" in str(error.value) and "\n" not in str(error.value)
    assert server.state() is None, "a server that failed to start is stopped"


def test_serve_command_runs_until_sigterm_and_stops_its_stubs(onnx_export: Path, tmp_path: Path):
    repository = cpu_repository(tmp_path / "repository", onnx_export)
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_REPOSITORY_KEY"}
    process = subprocess.Popen(
        [CLI, "serve", "--repository", repository.uri, "--local-dir", str(tmp_path / "t")],
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        deadline = time.monotonic() + 120
        while (state := LocalTriton(tmp_path / "t").state()) is None or not TritonClient(state.grpc_url).server_ready():
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.3)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "repository API key (generated" in stderr and state.grpc_url in stderr
    assert group_gone(state.pid) and LocalTriton(tmp_path / "t").state() is None
    broken = subprocess.run(
        [CLI, "serve", "--repository", str(tmp_path / "none"), "--local-dir", str(tmp_path / "t")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert broken.returncode == 6 and "model repository is not a readable folder" in broken.stderr
    assert "Traceback" not in broken.stderr and len(broken.stderr.strip().splitlines()) == 1


def test_unreachable_server_fails_with_the_url_after_retries():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    policy = RetryPolicy(attempts=3, first_delay_s=0.05, deadline_s=5, timeout_s=2)
    with TritonClient(f"127.0.0.1:{port}", retry=policy) as client, pytest.raises(ServingError) as error:
        client.check_contract(TENSORRT_MODEL)
    assert f"127.0.0.1:{port}" in str(error.value) and "after 3 attempt(s)" in str(error.value)


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
    with rasterio.open(
        sar,
        "w",
        driver="GTiff",
        width=260,
        height=200,
        count=2,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=float("nan"),
    ) as dataset:
        dataset.write((-15 + 3 * rng.standard_normal((2, 200, 260))).astype(np.float32))
        dataset.descriptions = schema.S1_POLARISATIONS
        dataset.units = ("dB", "dB")
    return optical, sar


def test_map_command_through_the_local_triton_equals_in_process(onnx_export: Path, tmp_path: Path):
    from cloudlulc.io.rasters import read_raster

    optical, sar = _scene(tmp_path)
    repository = cpu_repository(tmp_path / "repository", onnx_export, versions=2)
    repository.mark_served(CPU_MODEL, 1, {})  # version 2 loaded but unchecked: maps must not reach it
    common = ["map", "--optical", str(optical), "--sar", str(sar), "--tile", "128", "--overlap", "32"]
    with LocalTriton(tmp_path / "triton") as server:
        server.start(repository.uri)
        served = subprocess.run(
            [CLI, *common, "--out", str(tmp_path / "triton_map.tif"), "--local-dir", str(tmp_path / "triton")],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert served.returncode == 0, served.stderr[-2000:]
    assert "quicklook:" in served.stdout and (tmp_path / "triton_map_quicklook.png").exists()
    assert json.loads((tmp_path / "triton_map_areas.json").read_text())
    import rasterio

    with rasterio.open(tmp_path / "triton_map.tif") as mapped:
        tags = json.dumps(mapped.tags())
    assert f"triton:{CPU_MODEL}:1" in tags and f"triton:{CPU_MODEL}:1,2" not in tags
    local = subprocess.run(
        [CLI, *common, "--out", str(tmp_path / "onnx_map.tif"), "--onnx", str(onnx_export)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert local.returncode == 0, local.stderr[-2000:]
    through_triton = read_raster(str(tmp_path / "triton_map.tif"))
    in_process = read_raster(str(tmp_path / "onnx_map.tif"))
    assert np.mean(through_triton == in_process) >= 0.999

    # No server: a one-line error naming where it looked, exit 6, no map written.
    missing = subprocess.run(
        [CLI, *common, "--out", str(tmp_path / "none.tif"), "--local-dir", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 6 and "no local Triton running" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "none.tif").exists()


def test_a_killed_server_leaves_stubs_that_the_next_start_reaps(onnx_export: Path, tmp_path: Path):
    from cloudlulc.serving.local_triton import _stubs_in_group

    repository = cpu_repository(tmp_path / "repository", onnx_export)
    server = LocalTriton(tmp_path / "triton")
    state = server.start(repository.uri, ports={"grpc": 0, "http": 0, "metrics": 0})
    stubs = _stubs_in_group(state.pid)
    assert stubs, "the Python backend runs the model in a stub process of the server's group"
    os.kill(state.pid, signal.SIGKILL)  # the server alone, as an OOM kill or a crash would
    deadline = time.monotonic() + 10
    while server.state() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.state() is None and _stubs_in_group(state.pid) == stubs, "the stubs outlive their server"
    try:
        restarted = server.start(repository.uri, ports={"grpc": 0, "http": 0, "metrics": 0})
        assert _stubs_in_group(state.pid) == [], "orphaned stubs left after the next start"
        assert TritonClient(restarted.grpc_url).server_ready()
    finally:
        server.stop()
    assert group_gone(restarted.pid)


def test_an_exit_while_starting_quotes_this_starts_log_not_an_earlier_ones(tmp_path: Path):
    from cloudlulc.serving.local_triton import _last_error

    log = tmp_path / "server.log"
    earlier = 'E1201 15:00:00.000001 11 main.cc:245] "failed to start GRPC service: Socket in use"\n'
    log.write_text(earlier)
    start = log.stat().st_size
    with log.open("a") as appended:
        appended.write('E1201 15:01:00.000001 12 server.cc:241] "CudaDriverHelper has not been initialized."\n')
        appended.write('I1201 15:01:00.000002 12 server.cc:674] "loaded"\n\nError: Failed to initialize NVML\n')
    assert _last_error(log, start) == (
        f"no error logged, its last line: Error: Failed to initialize NVML (see {log})"
    ), "what every start without a GPU writes is not the error"
    with log.open("a") as appended:
        appended.write('I1201 15:01:01.000001 12 grpc_server.cc:2558] "Started GRPCInferenceService"\n')
    assert _last_error(log, start) == (f'no error logged, its last line: "Started GRPCInferenceService" (see {log})'), (
        "an exit with no error line is quoted by its last line"
    )
    with log.open("a") as appended:
        appended.write("Signal (11) received.\n 0# 0x000056520BA0252D in tritonserver\n")
    assert _last_error(log, start) == f"Signal (11) received. (see {log})"
    assert _last_error(log) == f"Signal (11) received. (see {log})"
    assert _last_error(tmp_path / "missing.log") == f"see {tmp_path / 'missing.log'}"
