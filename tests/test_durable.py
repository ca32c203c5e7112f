"""Durable work of a training step on the real S3-compatible server, and the provenance tags."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cloudlulc.io.storage import open_storage
from cloudlulc.training.checkpoints import KEEP, save_checkpoint
from cloudlulc.training.durable import DurableWork, read_run_record, write_run_record


def _state(epoch: int) -> dict[str, object]:
    return {"epoch": epoch, "model": {"w": torch.full((2,), float(epoch))}, "network": {}}


def test_checkpoints_and_run_record_survive_the_pod_on_s3(s3_bucket: str, tmp_path: Path):
    uri = f"s3://{s3_bucket}/root/run-1/train-model/model.work"
    first_pod = DurableWork(uri, tmp_path / "pod-1")
    assert first_pod.restore() == 0 and read_run_record(first_pod.output_dir) == {}
    write_run_record(first_pod.output_dir, {"mlflow_run_id": "abc"})
    first_pod.save_record()
    for epoch in range(1, KEEP + 3):
        save_checkpoint(first_pod.output_dir, epoch, _state(epoch))
        first_pod.save_newest()
    stored = open_storage(uri).list("checkpoints/")
    assert stored == [f"checkpoints/epoch_{e:04d}.pt" for e in range(3, KEEP + 3)], "older ones pruned"

    second_pod = DurableWork(uri, tmp_path / "pod-2")
    assert second_pod.restore() == KEEP + 2
    assert read_run_record(second_pod.output_dir) == {"mlflow_run_id": "abc"}
    restored = second_pod.output_dir / "checkpoints" / f"epoch_{KEEP + 2:04d}.pt"
    assert restored.read_bytes() == (first_pod.output_dir / "checkpoints" / restored.name).read_bytes()
    assert not [p for p in second_pod.output_dir.rglob("*") if p.is_file() and "tmp" in p.name]


def test_the_step_keeps_its_work_beside_its_artifact_and_says_when_it_cannot():
    from components.runtime import durable_work_uri

    assert durable_work_uri("s3://b/root/run/train-model/model") == "s3://b/root/run/train-model/model.work"
    assert durable_work_uri("/local/root/run/train-model/model/") == "/local/root/run/train-model/model.work"
    assert durable_work_uri("minio://mlpipeline/v2/artifacts/model") is None


def test_provenance_tags_name_version_commit_and_kubeflow_run(monkeypatch: pytest.MonkeyPatch):
    import cloudlulc
    from cloudlulc.tracking.provenance import GIT_COMMIT_ENV, KFP_RUN_ID_ENV, provenance_tags, run_url

    monkeypatch.setenv(GIT_COMMIT_ENV, "0123abc")
    monkeypatch.setenv(KFP_RUN_ID_ENV, "run-7")
    assert provenance_tags() == {
        "cloudlulc.version": cloudlulc.__version__,
        "mlflow.source.git.commit": "0123abc",
        "kubeflow.run_id": "run-7",
    }
    monkeypatch.setenv(GIT_COMMIT_ENV, "unknown")  # an image built without REVISION: the checkout's, or none
    monkeypatch.delenv(KFP_RUN_ID_ENV)
    assert provenance_tags().get("mlflow.source.git.commit") != "unknown"
    assert run_url("sqlite:///x.db", "1", "r") is None
    assert run_url("http://mlflow:5000/", "1", "r") == "http://mlflow:5000/#/experiments/1/runs/r"
