"""Short guards of the serving reliability figures (benchmarks/bench_triton_reliability.py), on the real Triton."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serving import CLI, _scene, cpu_repository, golden_sample

from cloudlulc.errors import ServingError
from cloudlulc.serving import (
    CPU_MODEL,
    LocalTarget,
    LocalTriton,
    ModelRepository,
    ServerState,
    ServingSettings,
    TritonClient,
    publish_and_serve,
    reliability,
)
from cloudlulc.serving.reliability import Readiness, TileLoad

Served = tuple[ModelRepository, LocalTarget, ServerState, str]


@pytest.fixture(scope="module")
def served(onnx_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A local Triton serving version 1 (marked served), with its key; stopped afterwards."""
    folder = tmp_path_factory.mktemp("reliability")
    repository = cpu_repository(folder / "repository", onnx_export)
    repository.mark_served(CPU_MODEL, 1, {})
    target = LocalTarget(folder / "triton")
    with pytest.MonkeyPatch.context() as patch, LocalTriton(target.state_dir) as server:
        patch.delenv("TRITON_REPOSITORY_KEY", raising=False)
        yield repository, target, server.start(repository.uri), server.key()


def _served_version(repository: ModelRepository) -> str:
    return str(repository.served_version(CPU_MODEL))


def test_keyless_repository_calls_are_refused_over_grpc_and_http_while_inference_goes_on(served: Served):
    _, _, state, _ = served
    with TileLoad(state.grpc_url, CPU_MODEL, 2, 64, lambda: "1") as load:
        refused = reliability.keyless_repository_calls(state.grpc_url, f"127.0.0.1:{state.http_port}", CPU_MODEL)
    assert all(refused.values()), refused
    assert {name.split()[0] for name in refused} == {"grpc", "http"}
    figures = reliability.latency_summary(load.answers)
    assert figures["requests"] and figures["failed"] == 0, figures


def test_promotion_under_load_fails_no_request_and_the_model_stays_ready(served: Served, onnx_export: Path):
    repository, target, state, _ = served
    with (
        Readiness(state.grpc_url, model=CPU_MODEL) as readiness,
        TileLoad(state.grpc_url, CPU_MODEL, 4, 64, lambda: _served_version(repository)) as load,
    ):
        publish_and_serve(repository, target, onnx_export, golden_sample(0, onnx_export), {})
        promoted = len(load.answers)
        while len(load.answers) < promoted + 8:
            time.sleep(0.05)  # a few requests after the promotion
    figures = reliability.latency_summary(load.answers)
    assert figures["failed"] == 0 and figures["versions"] == ["1", "2"], figures
    assert readiness.summary()["model_ready_share"] == 1.0, "the probe of the k8s Deployment asks this"


def test_a_version_that_raises_inside_triton_never_reaches_the_serving_server(served: Served, onnx_export: Path):
    repository, target, state, _ = served
    served_version = _served_version(repository)
    with (
        Readiness(state.grpc_url, model=CPU_MODEL) as readiness,
        TileLoad(state.grpc_url, CPU_MODEL, 4, 64, lambda: _served_version(repository)) as load,
        pytest.raises(ServingError, match=r"failed to load in a throwaway Triton: .*fails only inside the server"),
    ):
        publish_and_serve(repository, reliability.BrokenInServerTarget(target), onnx_export, golden_sample(0), {})
    figures = reliability.latency_summary(load.answers)
    assert figures["requests"] and figures["failed"] == 0 and figures["versions"] == [served_version], figures
    assert readiness.summary()["ready_share"] == 1.0 and readiness.summary()["model_ready_share"] == 1.0
    assert _served_version(repository) == served_version and LocalTriton(target.state_dir).state() == state


def test_a_version_refused_by_the_precheck_leaves_n_answering_and_the_server_ready(served: Served, tmp_path: Path):
    repository, target, state, _ = served
    served_version = _served_version(repository)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07" + bytes(4000))
    with (
        Readiness(state.grpc_url) as readiness,
        TileLoad(state.grpc_url, CPU_MODEL, 4, 64, lambda: _served_version(repository)) as load,
        pytest.raises(ServingError, match="rolled back"),
    ):
        publish_and_serve(repository, target, corrupt, golden_sample(0), {})
    figures = reliability.latency_summary(load.answers)
    assert figures["failed"] == 0 and figures["versions"] == [served_version], figures
    # the refusal takes well under the sampling interval: the sampler's first and last answers bracket it
    assert readiness.summary()["samples"] >= 2 and readiness.summary()["ready_share"] == 1.0, readiness.summary()


def test_load_unload_soak_keeps_server_memory_flat(served: Served):
    _, _, state, key = served
    with TritonClient(state.grpc_url, repository_key=key) as client:
        figures = reliability.soak(client, CPU_MODEL, 20, state.pid)
        assert client.ready_versions(CPU_MODEL), "the model is loaded again after the soak"
    assert float(figures["growth_mb"]) <= 100, figures  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def slow(onnx_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Triton whose model takes 3 s per request."""
    folder = tmp_path_factory.mktemp("slow")
    repository = ModelRepository(str(folder / "repository"))
    repository.publish(CPU_MODEL, onnx_export, golden_sample(0, onnx_export), {}, ServingSettings(delay_s=3.0))
    with LocalTriton(folder / "triton") as server:
        yield server.start(repository.uri).grpc_url


def test_a_one_second_deadline_ends_in_deadline_exceeded_within_1_5_s(slow: str):
    status, seconds = reliability.deadline_probe(slow, CPU_MODEL, "1", 1.0)
    assert status == "DEADLINE_EXCEEDED" and seconds <= 1.5, (status, seconds)


def test_a_client_killed_mid_request_leaves_the_server_live_and_ready(slow: str):
    figures = reliability.kill_client_mid_request(slow, CPU_MODEL, "1", 1.0)
    assert figures["killed_mid_request"] and figures["live"] and figures["ready"], figures


def test_map_against_a_slow_server_retries_then_exits_6_naming_server_model_and_version(slow: str, tmp_path: Path):
    optical, sar = _scene(tmp_path)
    mapped = subprocess.run(
        [
            CLI,
            "map",
            "--optical",
            str(optical),
            "--sar",
            str(sar),
            "--out",
            str(tmp_path / "map.tif"),
            "--triton-url",
            slow,
            "--model",
            CPU_MODEL,
            "--model-version",
            "1",
            "--request-timeout",
            "1",
            "--attempts",
            "2",
            "--tile",
            "128",
            "--overlap",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    message = mapped.stderr.strip().splitlines()[-1]  # after the progress bar
    assert mapped.returncode == 6 and message.startswith("error: ") and "Traceback" not in mapped.stderr, message
    assert slow in message and f"'{CPU_MODEL}' version 1" in message and "after 2 attempt(s)" in message, message
    assert not (tmp_path / "map.tif").exists()
