import math

import numpy as np
import pytest
import torch

from cloudlulc.models import build_model, model_config
from cloudlulc.models.networks import ModelOutput
from cloudlulc.training import CloudLULCLoss, LossWeights, MetricAccumulator, confusion_matrix, scores
from cloudlulc.training.losses import anchor_loss, dice_loss


def test_confusion_matrix_and_scores_against_hand_computation():
    reference = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    prediction = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    matrix = confusion_matrix(prediction, reference, num_classes=3)
    # rows = reference, columns = prediction; the 255 pixel is skipped
    assert matrix.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    result = scores(matrix)
    assert result.overall_accuracy == pytest.approx(4 / 7)
    # IoU: class 0: 1/(1+1+1)=1/3; class 1: 2/(2+1+1)=1/2; class 2: 1/(1+1+1)=1/3
    assert result.iou == pytest.approx([1 / 3, 1 / 2, 1 / 3])
    # F1: class 0: 2/(2+1+1)=1/2; class 1: 4/(4+1+1)=2/3; class 2: 2/(2+1+1)=1/2
    assert result.f1 == pytest.approx([1 / 2, 2 / 3, 1 / 2])
    assert result.miou == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert result.macro_f1 == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert result.pixels == 7


def test_absent_class_is_left_out_of_means_and_false_alarms_score_zero():
    reference = torch.tensor([0, 0, 1, 1])
    perfect = scores(confusion_matrix(reference, reference, num_classes=4))
    assert math.isnan(perfect.iou[2]) and math.isnan(perfect.iou[3])
    assert perfect.miou == 1.0 and perfect.macro_f1 == 1.0
    false_alarm = scores(confusion_matrix(torch.tensor([0, 0, 1, 3]), reference, num_classes=4))
    assert false_alarm.iou[3] == 0.0 and math.isnan(false_alarm.iou[2])
    assert false_alarm.miou == pytest.approx((1 + 0.5 + 0) / 3)


def test_metrics_match_numpy_and_torchmetrics_on_random_labels_with_ignored_pixels():
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

    rng = np.random.default_rng(7)
    reference = rng.integers(0, 5, (3, 40, 40))  # 5: only predicted (a false alarm), 6: nowhere
    reference[rng.random(reference.shape) < 0.2] = 255
    prediction = np.where(rng.random(reference.shape) < 0.6, reference % 255, rng.integers(0, 6, reference.shape))
    prediction[prediction == 4] = 3  # class 4 never predicted
    matrix = confusion_matrix(torch.from_numpy(prediction), torch.from_numpy(reference), num_classes=7)
    keep = reference != 255
    expected = np.zeros((7, 7), np.int64)
    np.add.at(expected, (reference[keep], prediction[keep]), 1)  # independent count
    np.testing.assert_array_equal(matrix, expected)
    result = scores(matrix)
    assert result.pixels == int(keep.sum())
    assert result.overall_accuracy == pytest.approx((reference[keep] == prediction[keep]).mean())
    truth, guess = torch.from_numpy(reference), torch.from_numpy(prediction)
    options = {"num_classes": 7, "ignore_index": 255}
    assert math.isnan(result.iou[6]) and math.isnan(result.f1[6])  # undefined: left out of the means
    for average, iou, f1 in (("none", result.iou, result.f1), ("macro", result.miou, result.macro_f1)):
        jaccard = MulticlassJaccardIndex(average=average, **options)(guess, truth)  # undefined scores 0 here
        f_score = MulticlassF1Score(average=average, **options)(guess, truth)
        np.testing.assert_allclose(np.nan_to_num(iou), jaccard.numpy(), rtol=1e-6)
        np.testing.assert_allclose(np.nan_to_num(f1), f_score.numpy(), rtol=1e-6)
    accuracy = MulticlassAccuracy(average="micro", **options)(guess, truth)
    assert result.overall_accuracy == pytest.approx(float(accuracy), rel=1e-6)


def test_reference_values_outside_the_class_set_are_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), num_classes=6)


def test_accumulator_splits_by_cloud_bin():
    accumulator = MetricAccumulator(num_classes=2)
    reference = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [1, 1]]])
    prediction = torch.tensor([[[0, 1], [1, 1]], [[1, 1], [1, 1]]])
    accumulator.update(prediction, reference, cloud_cover=[0.05, 0.95])
    result = accumulator.result()
    assert result["overall"].overall_accuracy == pytest.approx(6 / 8)
    assert set(result["bins"]) == {"0-10%", "90-100%"}
    assert result["bins"]["0-10%"].overall_accuracy == 1.0
    assert result["bins"]["90-100%"].overall_accuracy == 0.5
    assert np.array(result["confusion"]).sum() == 8


def test_dice_and_anchor_losses_reward_the_right_answer():
    labels = torch.tensor([[[0, 0, 1, 1]] * 4])
    right = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float() * 10
    assert float(dice_loss(right, labels)) < 0.01 < float(dice_loss(-right, labels))
    separated = torch.stack([torch.ones(4, 4), torch.zeros(4, 4)])[None]
    separated[0, 0, :, 2:], separated[0, 1, :, 2:] = 0, 1
    mixed = torch.ones(1, 2, 4, 4)
    labels_at_embedding = torch.tensor([[[0, 0, 1, 1]] * 4])
    assert float(anchor_loss(separated, labels_at_embedding, 0.5, 2)) < 1e-6
    assert float(anchor_loss(mixed, labels_at_embedding, 0.5, 2)) > 0.2


def test_combined_loss_terms_follow_the_architecture():
    optical, sar = torch.rand(2, 12, 64, 64), torch.rand(2, 2, 64, 64)
    labels = torch.randint(0, 6, (2, 64, 64))
    labels[:, :4] = 255
    mask = torch.randint(0, 4, (2, 64, 64), dtype=torch.uint8)
    loss = CloudLULCLoss(LossWeights(anchor=0.1))
    network = build_model(model_config("cloudlulc_net", "tiny", use_usmt=True))
    full = loss(network.forward_features(optical, sar), labels, cloud_mask=mask)
    assert set(full) == {"cross_entropy", "dice", "anchor", "reliability", "semantic", "total"}
    assert all(torch.isfinite(v) for v in full.values())
    recon = build_model(model_config("reconstruction_first", "tiny")).forward_features(optical, sar)
    assert "reconstruction" in loss(recon, labels, clear=optical)
    with pytest.raises(ValueError, match="needs Opt_S2_clear"):
        loss(recon, labels)
    assert "anchor" not in CloudLULCLoss()(recon, labels, clear=optical), "anchors are off by default"


def test_all_ignored_batch_gives_finite_loss():
    output = ModelOutput(torch.randn(1, 6, 8, 8, requires_grad=True), torch.randn(1, 4, 2, 2))
    terms = CloudLULCLoss()(output, torch.full((1, 8, 8), 255))
    assert torch.isfinite(terms["total"])
    terms["total"].backward()
