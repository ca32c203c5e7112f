"""Calibrated confidence: the temperature fit, the calibration error, and the temperature in every predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cloudlulc.models.config import model_config
from cloudlulc.models.networks import build_model
from cloudlulc.training.calibration import ReliabilityHistogram, calibration_error, fit_temperature


def overconfident(true_temperature: float, pixels: int = 40_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose labels were drawn from softmax(logits / T): the best temperature is T."""
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(pixels, 6, generator=generator)
    labels = torch.multinomial(torch.softmax(logits / true_temperature, dim=1), 1, generator=generator)[:, 0]
    return logits, labels


def test_fit_recovers_the_temperature_and_lowers_the_calibration_error():
    logits, labels = overconfident(2.5)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.5, rel=0.06)
    before, after = calibration_error(logits, labels, 1.0), calibration_error(logits, labels, temperature)
    assert before > 0.1 and after < 0.02, (before, after)


def test_ece_of_a_perfectly_calibrated_histogram_is_zero_and_of_a_wrong_one_is_the_gap():
    histogram = ReliabilityHistogram()
    histogram.add(np.full(1000, 0.75), np.r_[np.ones(750), np.zeros(250)])
    assert histogram.ece() == pytest.approx(0.0, abs=1e-12)
    wrong = ReliabilityHistogram()
    wrong.add(np.full(1000, 0.95), np.r_[np.ones(500), np.zeros(500)])
    assert wrong.ece() == pytest.approx(0.45)
    assert wrong.as_dict()["bin_count"][14] == 1000


def test_weights_saved_before_calibration_load_as_uncalibrated():
    network = build_model(model_config("cloudlulc_net", "tiny"))
    old_weights = {k: v for k, v in network.state_dict().items() if k != "temperature"}
    network.temperature.fill_(3.0)
    network.load_state_dict(old_weights)
    assert float(network.temperature) == 1.0


def test_training_calibrates_and_every_predictor_applies_the_temperature(
    trained_checkpoint: tuple[Path, Path], tmp_path: Path
):
    from cloudlulc.export.onnx import onnxruntime_runner, write_onnx_graph
    from cloudlulc.training.checkpoints import load_checkpoint
    from cloudlulc.training.evaluation import load_trained_model

    state = load_checkpoint(trained_checkpoint[0])
    figures = state["calibration"]
    assert figures["fitted_temperature"] != 1.0 and figures["val_ece"] <= figures["val_ece_uncalibrated"] + 1e-9
    assert figures["temperature"] in (figures["fitted_temperature"], 1.0), "kept only where it lowers the val ECE"
    network = load_trained_model(str(trained_checkpoint[0]))
    assert float(network.temperature) == pytest.approx(figures["temperature"])
    network.temperature.fill_(2.5)  # whatever was kept, every predictor must apply the stored temperature
    optical, sar = torch.rand(1, 12, 64, 64), torch.rand(1, 2, 64, 64)
    with torch.no_grad():
        calibrated = torch.softmax(network(optical, sar) / 2.5, dim=1)
        np.testing.assert_allclose(network.probabilities(optical, sar).numpy(), calibrated.numpy(), atol=1e-6)
    write_onnx_graph(network, tmp_path / "model.onnx")
    exported = onnxruntime_runner(tmp_path / "model.onnx")(optical.numpy(), sar.numpy())
    np.testing.assert_allclose(exported, calibrated.numpy(), atol=1e-4)
