"""Triton's restricted model-repository protocol (as deployed by k8s/): the client sends the key, or is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_serving import cpu_repository

from cloudlulc.errors import ServingError
from cloudlulc.serving import CPU_MODEL, LocalTriton, TritonClient
from cloudlulc.serving.client import RetryPolicy, repository_headers

KEY = "not-a-real-key"


@pytest.fixture(scope="module")
def restricted_triton(onnx_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local Triton with the key from a file, as an operator would give it."""
    folder = tmp_path_factory.mktemp("restricted")
    repository = cpu_repository(folder / "repository", onnx_export)
    (folder / "key").write_text(KEY + "\n")
    with pytest.MonkeyPatch.context() as patch, LocalTriton(folder / "triton") as server:
        patch.delenv("TRITON_REPOSITORY_KEY", raising=False)
        yield server.start(repository.uri, key_file=str(folder / "key")).grpc_url


def test_repository_calls_carry_the_key(restricted_triton: str, monkeypatch: pytest.MonkeyPatch):
    quick = RetryPolicy(attempts=1)
    monkeypatch.delenv("TRITON_REPOSITORY_KEY", raising=False)
    with (
        TritonClient(restricted_triton, retry=quick, repository_key="") as client,
        pytest.raises(ServingError, match="restricted"),
    ):
        client.ready_versions(CPU_MODEL)
    with TritonClient(restricted_triton, retry=quick, repository_key=KEY) as client:
        assert client.ready_versions(CPU_MODEL) == [1]
        assert client.serving_versions(CPU_MODEL) == [1], "metadata stays open"
    monkeypatch.setenv("TRITON_REPOSITORY_KEY", KEY)
    with TritonClient(restricted_triton, retry=quick) as client:  # from the environment, as in the promote step
        client.ready_versions(CPU_MODEL)


def test_repository_headers_follow_the_deployed_key_name(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TRITON_REPOSITORY_KEY", raising=False)
    monkeypatch.delenv("TRITON_REPOSITORY_KEY_NAME", raising=False)
    assert repository_headers() is None
    assert repository_headers("k") == {"triton-grpc-protocol-admin-key": "k"}


def test_every_replica_address_behind_a_name_is_found():
    from cloudlulc.serving.promotion import replica_urls

    assert "127.0.0.1:8001" in replica_urls("localhost:8001")
    with pytest.raises(ServingError, match="cannot resolve"):
        replica_urls("no-such-host.invalid:8001")
