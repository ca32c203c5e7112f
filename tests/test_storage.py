import os
from pathlib import Path

import pytest

from cloudlulc.errors import StorageError
from cloudlulc.io.storage import LocalStorage, S3Storage, open_storage, staged_output


def test_local_atomic_write_leaves_no_temporary_files(tmp_path: Path):
    storage = open_storage(tmp_path / "root")
    assert isinstance(storage, LocalStorage)
    storage.write_bytes("a/b.txt", b"one")
    storage.write_bytes("a/b.txt", b"two")
    assert storage.read_bytes("a/b.txt") == b"two"
    assert storage.list() == ["a/b.txt"]
    assert sorted(os.listdir(tmp_path / "root" / "a")) == ["b.txt"]


def test_failed_staged_write_keeps_the_previous_file(tmp_path: Path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"good")

    def write_then_die() -> None:
        with staged_output(str(target)) as temp_path:
            temp_path.write_bytes(b"half")
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_then_die()
    assert target.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_create_only_write_refuses_to_replace(tmp_path: Path):
    storage = open_storage(tmp_path)
    assert storage.write_bytes("lock", b"first", if_absent=True)
    assert not storage.write_bytes("lock", b"second", if_absent=True)
    assert storage.read_bytes("lock") == b"first"
    assert storage.list() == ["lock"]


def test_missing_local_file_is_named(tmp_path: Path):
    with pytest.raises(StorageError, match=r"nothing\.txt"):
        open_storage(tmp_path).read_bytes("nothing.txt")


def test_s3_storage_behaves_like_a_folder(s3_bucket: str, tmp_path: Path):
    storage = open_storage(f"s3://{s3_bucket}/prefix")
    assert isinstance(storage, S3Storage)
    assert not storage.exists("x/y.txt")
    storage.write_bytes("x/y.txt", b"hello")
    assert storage.exists("x/y.txt")
    assert storage.read_bytes("x/y.txt") == b"hello"
    local = tmp_path / "f.bin"
    local.write_bytes(b"\x00" * 1000)
    storage.upload_file(local, "x/z.bin")
    assert storage.list() == ["x/y.txt", "x/z.bin"]
    assert storage.list("x/z") == ["x/z.bin"]
    assert storage.join("x/y.txt") == f"s3://{s3_bucket}/prefix/x/y.txt"


def test_s3_create_only_write_uses_a_condition(s3_bucket: str):
    storage = open_storage(f"s3://{s3_bucket}")
    assert storage.write_bytes("lock", b"first", if_absent=True)
    assert not storage.write_bytes("lock", b"second", if_absent=True)
    assert storage.read_bytes("lock") == b"first"


def test_s3_missing_object_and_bucket_are_named(s3_bucket: str):
    with pytest.raises(StorageError, match=f"s3://{s3_bucket}/absent.txt"):
        open_storage(f"s3://{s3_bucket}").read_bytes("absent.txt")
    with pytest.raises(StorageError, match="no-such-bucket"):
        open_storage("s3://no-such-bucket").write_bytes("k", b"v")


def test_s3_without_credentials_names_the_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        open_storage("s3://bucket/prefix")


def test_unreachable_s3_endpoint_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    from conftest import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    endpoint = f"http://127.0.0.1:{free_port()}"
    storage = S3Storage("s3://bucket", endpoint_url=endpoint)
    with pytest.raises(StorageError, match=f"endpoint {endpoint}"):
        storage.read_bytes("key")


def test_a_holder_is_gone_when_its_process_here_died_or_when_it_fell_silent():
    import socket
    import subprocess
    import time

    from cloudlulc.io.storage import holder_gone

    here, now = socket.gethostname(), time.time()
    finished = subprocess.Popen(["true"])
    finished.wait()
    assert holder_gone(here, finished.pid, now, 600), "a dead process on this host: gone at once"
    assert not holder_gone(here, os.getpid(), now, 600)
    assert not holder_gone("another-host", finished.pid, now, 600), "elsewhere only silence tells"
    assert holder_gone("another-host", 1, now - 601, 600) and holder_gone(here, os.getpid(), now - 601, 600)
    assert not holder_gone(here, "not a pid", now, 600), "a record without a pid is judged by its age"
