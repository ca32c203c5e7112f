"""Triton's restricted model-repository protocol (as deployed by k8s/): the client sends the key, or is refused."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudlulc.errors import ServingError
from cloudlulc.serving import TritonClient, free_port
from cloudlulc.serving.client import RetryPolicy, repository_headers

KEY = "not-a-real-key"


@pytest.fixture(scope="module")
def restricted_triton() -> Iterator[str]:
    port = free_port(18901)
    script = str(Path(__file__).with_name("restricted_triton.py"))
    process = subprocess.Popen([sys.executable, script, str(port), KEY], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        with TritonClient(url) as client:
            while not client.server_ready():
                assert process.poll() is None, "the restricted Triton exited while starting"
                assert time.monotonic() < deadline, "the restricted Triton did not start in 120 s"
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_repository_calls_carry_the_key(restricted_triton: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRITON_REPOSITORY_KEY_NAME", "triton-access-token")  # pytriton's key name
    quick = RetryPolicy(attempts=1)
    with (
        TritonClient(restricted_triton, retry=quick, repository_key="") as client,
        pytest.raises(ServingError, match="restricted"),
    ):
        client.ready_versions("echo")
    with TritonClient(restricted_triton, retry=quick, repository_key=KEY) as client:
        client.ready_versions("echo")  # refused without the header
    monkeypatch.setenv("TRITON_REPOSITORY_KEY", KEY)
    with TritonClient(restricted_triton, retry=quick) as client:  # from the environment, as in the promote step
        client.ready_versions("echo")


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
