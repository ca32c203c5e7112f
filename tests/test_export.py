"""ONNX export under the serving contract, its parity gate, and the TensorRT path's clear refusal."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from cloudlulc.errors import ExportError
from cloudlulc.export import check_parity, export_onnx, parity_samples, torch_runner
from cloudlulc.training.evaluation import load_trained_model

CLI = [str(Path(sys.executable).with_name("cloudlulc"))]


def test_onnx_export_matches_pytorch_and_keeps_the_contract(trained_checkpoint, tmp_path: Path):
    checkpoint, dataset = trained_checkpoint
    out = tmp_path / "serving" / "model.onnx"
    result = subprocess.run(
        [*CLI, "export", "onnx", "--checkpoint", str(checkpoint), "--dataset", str(dataset), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sidecar = json.loads(out.with_suffix(".onnx.json").read_text())
    assert sidecar["parity"]["passed"] and sidecar["parity"]["max_abs_diff"] <= 1e-4
    assert sidecar["parity"]["argmax_agreement"] >= 0.999 and sidecar["source"] == str(checkpoint)

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1]) for i in session.get_inputs()] == [("optical", 12), ("sar", 2)]
    assert [(o.name, o.shape[1]) for o in session.get_outputs()] == [("probs", 6)]
    # Another batch and a non-square size than the export example: the axes are dynamic.
    rng = np.random.default_rng(0)
    optical = rng.random((3, 12, 96, 160), dtype=np.float32)
    sar = rng.standard_normal((3, 2, 96, 160), dtype=np.float32)
    probs = session.run(["probs"], {"optical": optical, "sar": sar})[0]
    expected = torch_runner(load_trained_model(str(checkpoint)))(optical, sar)
    assert probs.shape == (3, 6, 96, 160)
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_failed_parity_refuses_the_export_and_leaves_no_file(trained_checkpoint, tmp_path: Path):
    checkpoint, dataset = trained_checkpoint
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="parity check failed"):
        # Exact equality of float32 probabilities across two runtimes is not achievable: the check must refuse.
        export_onnx(load_trained_model(str(checkpoint)), out, str(dataset), max_abs_diff=0.0)
    assert list(tmp_path.iterdir()) == []


def test_parity_check_measures_difference_and_agreement(trained_checkpoint):
    checkpoint, dataset = trained_checkpoint
    reference = torch_runner(load_trained_model(str(checkpoint)))

    def flipped(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        probs = reference(optical, sar)
        probs[:, :, :, : probs.shape[3] // 2] = probs[:, ::-1, :, : probs.shape[3] // 2]  # half the image wrong
        return probs

    same = check_parity(reference, reference, parity_samples(str(dataset), 2))
    assert same.passed and same.max_abs_diff == 0.0 and same.argmax_agreement == 1.0 and same.samples == 2
    broken = check_parity(reference, flipped, parity_samples(str(dataset), 2))
    assert not broken.passed and broken.argmax_agreement <= 0.5 + 1e-9 and broken.max_abs_diff > 1e-3


def test_tensorrt_refusal_is_a_clear_message_not_a_crash(trained_checkpoint, tmp_path: Path):
    dataset = trained_checkpoint[1]
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not used: the GPU check comes first")
    result = subprocess.run(
        [
            *CLI,
            "export",
            "tensorrt",
            "--onnx",
            str(onnx),
            "--dataset",
            str(dataset),
            "--out",
            str(tmp_path / "model.plan"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr
    if not torch.cuda.is_available():
        assert "TensorRT compile needs an NVIDIA GPU" in result.stderr
    else:  # no tensorrt package, or TensorRT refusing the bogus file: either way named, exit 5
        assert "TensorRT" in result.stderr
    assert not (tmp_path / "model.plan").exists()


def test_int8_export_passes_its_gate_per_cloud_bin_and_keeps_the_contract(
    onnx_export: Path, trained_checkpoint, tmp_path
):
    """Static INT8: convolutions get QDQ pairs; the gate's figures per cloud bin land beside the file."""
    import onnx

    dataset = trained_checkpoint[1]
    out = tmp_path / "int8" / "model_int8.onnx"
    command = [*CLI, "export", "int8", "--onnx", str(onnx_export), "--dataset", str(dataset), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    gate = json.loads(out.with_suffix(".onnx.json").read_text())["quantization"]
    assert gate["passed"] and gate["bins"], gate
    for figures in gate["bins"].values():
        assert figures["agreement"] >= 0.98 and figures["miou_fp32"] - figures["miou_int8"] <= 0.01
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    rng = np.random.default_rng(0)
    optical, sar = rng.random((1, 12, 128, 128), dtype=np.float32), rng.random((1, 2, 128, 128), dtype=np.float32)
    probs = ort.InferenceSession(str(out)).run(["probs"], {"optical": optical, "sar": sar})[0]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_int8_export_failing_its_gate_leaves_no_file(onnx_export: Path, trained_checkpoint, tmp_path):
    from cloudlulc.export.quantize import quantize_onnx

    out = tmp_path / "model_int8.onnx"
    with pytest.raises(ExportError, match=r"INT8 export refused: cloud bin .*mIoU drop"):
        # INT8 would have to score 1.0 mIoU above FP32 in every bin: no model can.
        quantize_onnx(onnx_export, out, str(trained_checkpoint[1]), max_miou_drop=-1.0)
    assert list(tmp_path.iterdir()) == []
