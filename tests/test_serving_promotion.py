"""Promotion against the real local Triton: publish n+1, load it beside n, check n+1 exactly, keep or roll back."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_serving import golden_sample

from cloudlulc.errors import ServingError
from cloudlulc.serving import CPU_MODEL, LocalTarget, LocalTriton, ModelRepository, TritonClient, publish_and_serve
from cloudlulc.serving.regional import pinned_version


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A repository and the state folder of a local Triton on it; the server is stopped afterwards."""
    monkeypatch.delenv("TRITON_REPOSITORY_KEY", raising=False)
    repository = ModelRepository(str(tmp_path / "repository"))
    yield repository, LocalTarget(tmp_path / "triton")
    LocalTriton(tmp_path / "triton").stop()


def _answers(url: str, version: str, golden) -> np.ndarray:
    with TritonClient(url) as client:
        return client.infer(CPU_MODEL, golden.optical, golden.sar, version)


def test_first_and_second_promotion_pin_the_checked_version(onnx_export: Path, local):
    repository, target = local
    golden = golden_sample(0, onnx_export)
    first = publish_and_serve(repository, target, onnx_export, golden, {"note": "first"})
    assert (first.version, first.previous) == (1, None) and first.golden_parity.passed
    assert repository.served_version(CPU_MODEL) == 1
    second = publish_and_serve(repository, target, onnx_export, golden, {"note": "second"})
    assert (second.version, second.previous) == (2, 1) and repository.served_version(CPU_MODEL) == 2
    with TritonClient(second.grpc_url, repository_key=LocalTriton(target.state_dir).key()) as client:
        assert client.ready_versions(CPU_MODEL) == [1, 2], "n stays loaded for the maps still pinned to it"
        assert pinned_version(client, CPU_MODEL, repository.uri) == "2"
        assert pinned_version(client, CPU_MODEL, None) == "1", "without the repository: the lowest loaded"
    np.testing.assert_allclose(_answers(second.grpc_url, "2", golden), golden.expected, atol=1e-4)


def test_corrupt_version_is_rolled_back_while_the_served_one_answers(onnx_export: Path, local, tmp_path: Path):
    repository, target = local
    golden = golden_sample(0, onnx_export)
    served = publish_and_serve(repository, target, onnx_export, golden, {})
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(onnx_export.read_bytes()[:4096])
    with pytest.raises(ServingError) as error:
        publish_and_serve(repository, target, corrupt, golden, {})
    message = str(error.value)
    assert message.startswith(f"{CPU_MODEL} version 2 rolled back (version 1 serves)") and "\n" not in message
    assert repository.versions(CPU_MODEL) == [1] and repository.served_version(CPU_MODEL) == 1
    # A golden sample the model does not reproduce: loaded, checked on version 2 (the number is free again), refused.
    wrong = golden_sample(1)  # random expected output
    with pytest.raises(
        ServingError, match=r"version 2 rolled back \(version 1 serves\): golden sample check failed on version 2"
    ):
        publish_and_serve(repository, target, onnx_export, wrong, {})
    assert repository.versions(CPU_MODEL) == [1]
    with TritonClient(served.grpc_url) as client:
        assert client.server_ready(), "the served version and the server stay ready"
    np.testing.assert_allclose(_answers(served.grpc_url, "1", golden), golden.expected, atol=1e-4)


def test_two_promoters_racing_take_turns(onnx_export: Path, local):
    repository, target = local
    golden = golden_sample(0, onnx_export)
    publish_and_serve(repository, target, onnx_export, golden, {})
    outcomes: list[object] = []

    def promoter() -> None:
        try:
            outcomes.append(publish_and_serve(repository, target, onnx_export, golden, {}).version)
        except Exception as error:  # collected for the assertion below
            outcomes.append(error)

    threads = [threading.Thread(target=promoter) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(outcomes) == [2, 3], outcomes  # type: ignore[type-var]
    assert repository.served_version(CPU_MODEL) == 3 and repository.versions(CPU_MODEL) == [1, 2, 3]
    assert not any(key.endswith(".promotion.lock") for key in repository.storage.list(""))


def test_a_killed_promotions_lock_and_unchecked_version_are_cleared_by_the_next(onnx_export: Path, local):
    """What a SIGKILLed promote leaves (its lock, a published version never checked) does not outlive it."""
    import json
    import socket
    import subprocess

    repository, target = local
    golden = golden_sample(0, onnx_export)
    publish_and_serve(repository, target, onnx_export, golden, {})
    holder = subprocess.Popen(["true"])
    holder.wait()  # the killed promoter: a pid on this host that is gone
    lock = {"host": socket.gethostname(), "pid": holder.pid, "since": time.time()}
    leftover = repository.publish(CPU_MODEL, onnx_export, golden, {"note": "killed before its check"})
    assert repository.unchecked_versions(CPU_MODEL) == [leftover] == [2]
    repository.storage.write_bytes(f".{CPU_MODEL}.promotion.lock", json.dumps(lock).encode())
    started = time.monotonic()
    served = publish_and_serve(repository, target, onnx_export, golden, {"note": "rerun"})
    assert time.monotonic() - started < 120, "the dead holder's lock was broken, not waited out"
    assert (
        served.version == 2
        and repository.versions(CPU_MODEL) == [1, 2]
        and not repository.unchecked_versions(CPU_MODEL)
    )
    assert json.loads(repository.storage.read_bytes(f"{CPU_MODEL}/2/model.json"))["note"] == "rerun"
    with TritonClient(served.grpc_url, repository_key=LocalTriton(target.state_dir).key()) as client:
        assert client.ready_versions(CPU_MODEL) == [1, 2], "only checked versions are loaded"


class CanaryKiller(threading.Thread):
    """Ends the first ``times`` throwaway Triton processes while they start (SIGTERM to the group, as a crash would)."""

    def __init__(self, state_dir: Path, times: int) -> None:
        super().__init__(daemon=True)
        self.state_file, self.times, self.killed = state_dir / "canary" / "server.json", times, []
        self.ports: set[int] = set()
        self.done = threading.Event()

    def run(self) -> None:
        import json
        import os
        import signal

        while not self.done.is_set() and len(self.killed) < self.times:
            try:
                pid = json.loads(self.state_file.read_text())["pid"]
            except (OSError, ValueError):
                pid = None
            if pid is not None and pid not in self.killed:
                self.ports.update(json.loads(self.state_file.read_text())[f"{n}_port"] for n in ("grpc", "http"))
                os.killpg(pid, signal.SIGTERM)
                self.killed.append(pid)
            time.sleep(0.005)

    def __enter__(self) -> "CanaryKiller":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


def test_a_throwaway_triton_that_exits_once_while_starting_does_not_roll_back_a_good_version(
    onnx_export: Path, local, caplog: pytest.LogCaptureFixture
):
    repository, target = local
    golden = golden_sample(0, onnx_export)
    publish_and_serve(repository, target, onnx_export, golden, {})
    with CanaryKiller(target.state_dir, times=1) as killer:
        served = publish_and_serve(repository, target, onnx_export, golden, {})
    assert len(killer.killed) == 1
    assert killer.ports and not killer.ports & {8000, 8001, 8002}, "the throwaway Triton takes no usual port"
    assert "while starting" in caplog.text and "; starting it once more" in caplog.text
    assert served.version == 2 and repository.served_version(CPU_MODEL) == 2


def test_a_throwaway_triton_that_exits_twice_refuses_the_version_and_names_the_log(onnx_export: Path, local):
    repository, target = local
    golden = golden_sample(0, onnx_export)
    publish_and_serve(repository, target, onnx_export, golden, {})
    with CanaryKiller(target.state_dir, times=2) as killer, pytest.raises(ServingError) as error:
        publish_and_serve(repository, target, onnx_export, golden, {})
    message = str(error.value)
    assert len(killer.killed) == 2 and "\n" not in message
    assert message.startswith(f"{CPU_MODEL} version 2 rolled back (version 1 serves): version 2 of {CPU_MODEL}")
    assert "brought a throwaway Triton down twice" in message and "canary/server.log" in message
    assert repository.versions(CPU_MODEL) == [1] and repository.served_version(CPU_MODEL) == 1


class RestartingTarget(LocalTarget):
    """The server restarts between publishing n+1 and loading it (a crash or a rollout mid-promotion)."""

    def load(self, repository: ModelRepository, version: int | None) -> str:
        server = LocalTriton(self.state_dir)
        server.stop()
        server.start(repository.uri)  # the latest-2 policy loads n beside the unchecked n+1
        return super().load(repository, version)


def test_server_restarted_mid_promotion_still_serves_only_checked_versions(onnx_export: Path, local):
    repository, target = local
    golden = golden_sample(0, onnx_export)
    publish_and_serve(repository, target, onnx_export, golden, {})
    served = publish_and_serve(repository, RestartingTarget(target.state_dir), onnx_export, golden, {})
    assert served.version == 2 and repository.served_version(CPU_MODEL) == 2
    np.testing.assert_allclose(_answers(served.grpc_url, "2", golden), golden.expected, atol=1e-4)


def test_requests_during_a_promotion_are_all_answered_by_the_checked_version(onnx_export: Path, local):
    repository, target = local
    golden = golden_sample(0, onnx_export)
    first = publish_and_serve(repository, target, onnx_export, golden, {})
    answered: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with TritonClient(first.grpc_url) as client:
            version = pinned_version(client, CPU_MODEL, repository.uri)  # pinned once, like a map
            while not stop.is_set():
                try:
                    result = client._client.infer(CPU_MODEL, _inputs(golden), model_version=version)
                    answered.append(result.get_response().model_version)
                except Exception as error:  # every failure counts
                    failures.append(str(error))

    worker = threading.Thread(target=client_loop)
    worker.start()
    try:
        time.sleep(0.5)
        second = publish_and_serve(repository, target, onnx_export, golden, {})
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert second.version == 2 and not failures, failures[:3]
    assert answered and set(answered) == {"1"}, "a pinned client never reaches the version under check"


def _inputs(golden):
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, array in (("optical", golden.optical), ("sar", golden.sar)):
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def test_promote_serves_the_mlflow_champion_and_tags_a_rollback(trained_checkpoint, local, tmp_path: Path):
    from cloudlulc.serving import ExportedModel, promote
    from cloudlulc.tracking import GateConfig, Registry, TrackingSettings, run_gate_stage, run_train_stage
    from cloudlulc.training.config import load_train_config

    repository, target = local
    dataset = str(trained_checkpoint[1])
    settings = TrackingSettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="promotion")
    registry = Registry(settings.tracking_uri, settings.registered_model)
    config = load_train_config(
        None,
        [f"dataset={dataset}", f"output_dir={tmp_path / 'run'}", "epochs=1", "batch_size=4", "crop_size=64", "seed=1"],
    )
    champion = run_train_stage(config, settings, progress=False).version
    assert run_gate_stage(dataset, settings, GateConfig(first_min_miou=0, first_min_oa=0)).promote
    result = promote(settings, repository, dataset, target)
    assert (result.served_version, result.registered_version, result.served_model) == (1, champion, CPU_MODEL)
    assert result.export_parity.passed and result.golden_parity.passed
    tags = registry.client.get_model_version(settings.registered_model, champion).tags
    assert tags["serving.status"] == "served" and tags["serving.version"] == "1"
    assert registry.client.get_registered_model(settings.registered_model).tags["served_version"] == "1"
    corrupt = tmp_path / "model.onnx"
    corrupt.write_bytes(b"truncated")
    exported = ExportedModel(corrupt, champion, result.export_parity)
    with pytest.raises(ServingError, match=r"cloudlulc_cpu version 2 rolled back \(version 1 serves\)"):
        promote(settings, repository, dataset, target, exported=exported)
    tags = registry.client.get_model_version(settings.registered_model, champion).tags
    assert tags["serving.status"].startswith("rolled back") and repository.served_version(CPU_MODEL) == 1


def _running_in_group(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies waiting for a reaper do not)."""
    running = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and fields[0] != "Z" and int(fields[2]) == pgid:
            running.append(int(entry.name))
    return running


def test_a_killed_promoters_throwaway_triton_stops_with_it(onnx_export: Path, local):
    """SIGKILL the promoter while its throwaway Triton starts: the kernel stops that server too."""
    import json
    import os
    import signal
    import subprocess
    import sys

    repository, target = local
    repository.publish(CPU_MODEL, onnx_export, golden_sample(0, onnx_export), {})
    canary = target.state_dir / "canary"
    script = (
        "import sys; from cloudlulc.serving.promotion import canary_load; "
        "from cloudlulc.serving import ModelRepository; "
        f"canary_load(ModelRepository(sys.argv[1]), {CPU_MODEL!r}, 1, __import__('pathlib').Path(sys.argv[2]))"
    )
    promoter = subprocess.Popen([sys.executable, "-c", script, repository.uri, str(canary)])
    try:
        deadline = time.monotonic() + 120
        while not (canary / "server.json").exists() and promoter.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        server = json.loads((canary / "server.json").read_text())["pid"]
        os.kill(promoter.pid, signal.SIGKILL)
        promoter.wait()
        deadline = time.monotonic() + 60  # Triton's own exit timeout is 20 s
        while _running_in_group(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _running_in_group(server) == [], "the throwaway Triton outlived its killed promoter"
    finally:
        promoter.kill()
        LocalTriton(canary).stop()
