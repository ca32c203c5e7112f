import pytest
import torch
from pydantic import ValidationError
from torch.export import Dim, export

from cloudlulc.models import (
    ARCHITECTURES,
    build_model,
    check_input_size,
    gflops_per_patch,
    model_config,
    parameter_count,
)
from cloudlulc.models.config import ALL_MODULES
from cloudlulc.models.fusion import (
    ChannelHighOrder,
    InputReliability,
    OpticalReliability,
    SpatialHighOrder,
    StageFusion,
)
from cloudlulc.models.usmt import SemanticMappingTransformer


def _inputs(batch: int = 2, height: int = 64, width: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, 12, height, width, generator=generator), torch.rand(
        batch, 2, height, width, generator=generator
    )


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_maps_inputs_to_class_logits(architecture: str):
    model = build_model(model_config(architecture, "tiny"))
    optical, sar = _inputs()
    output = model.forward_features(optical, sar)
    assert output.logits.shape == (2, 6, 64, 96)
    assert output.embedding.shape == (2, 32, 16, 24)
    assert torch.equal(model.eval()(optical, sar), model.forward_features(optical, sar).logits)
    if architecture == "reconstruction_first":
        assert output.reconstruction is not None and output.reconstruction.shape == optical.shape


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_exports_with_dynamic_batch_and_size(architecture: str):
    """No data-dependent control flow: torch.export with dynamic shapes, checked against eager at another size."""
    model = build_model(model_config(architecture, "tiny")).eval()
    batch, rows, cols = Dim("batch", min=1, max=64), Dim("rows", min=1, max=64), Dim("cols", min=1, max=64)
    dims = {0: batch, 2: 32 * rows, 3: 32 * cols}
    exported = export(model, _inputs(), dynamic_shapes={"optical": dims, "sar": dims})
    optical, sar = _inputs(3, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(optical, sar), model(optical, sar), atol=1e-5, rtol=1e-5)


def test_cloudlulc_net_modules_and_their_switches():
    full = build_model(model_config("cloudlulc_net", "tiny", **ALL_MODULES))
    output = full.forward_features(*_inputs())
    assert [tuple(r.shape[-2:]) for r in output.reliability] == [(64, 96), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert all(0 <= float(r.detach().min()) <= float(r.detach().max()) <= 1 for r in output.reliability)
    assert output.semantic_logits is not None and output.semantic_logits.shape == (2, 6, 2, 3)
    names = {type(m).__name__ for m in full.modules()}
    assert {
        "InputReliability",
        "OpticalReliability",
        "SpatialHighOrder",
        "ChannelHighOrder",
        "SemanticMappingTransformer",
        "DetailRefinement",
    } <= names
    ablated = build_model(model_config("cloudlulc_net", "tiny", **{**ALL_MODULES, "use_orm": False, "use_usmt": False}))
    ablated_output = ablated.forward_features(*_inputs())
    assert ablated_output.reliability == [] and ablated_output.semantic_logits is None
    assert parameter_count(ablated) < parameter_count(full)
    dual = build_model(model_config("dual_stream", "tiny"))
    assert not {"OpticalReliability", "SpatialHighOrder", "ChannelHighOrder", "SemanticMappingTransformer"} & {
        type(m).__name__ for m in dual.modules()
    }


def test_sar_only_ignores_optics_and_optical_only_ignores_sar():
    optical, sar = _inputs()
    sar_only = build_model(model_config("sar_only", "tiny")).eval()
    optical_only = build_model(model_config("optical_only", "tiny")).eval()
    with torch.no_grad():
        assert torch.equal(sar_only(optical, sar), sar_only(torch.zeros_like(optical), sar))
        assert torch.equal(optical_only(optical, sar), optical_only(optical, torch.zeros_like(sar)))
        fused = build_model(model_config("cloudlulc_net", "tiny")).eval()
        assert not torch.equal(fused(optical, sar), fused(optical, torch.zeros_like(sar)))


def test_blocks_behave():
    optical, sar = torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4)
    input_logits = InputReliability(14)(torch.rand(1, 12, 16, 16), torch.rand(1, 2, 16, 16))
    assert input_logits.shape == (1, 1, 16, 16)
    assert float(torch.sigmoid(input_logits).detach().mean()) > 0.8, "ORM starts by trusting the optics"
    score = OpticalReliability(8, 8)(optical, sar, input_logits)
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.sigmoid(input_logits), (4, 4))
    assert score.shape == (1, 1, 4, 4)
    torch.testing.assert_close(score, pooled, msg="the stage correction starts at zero")
    assert SpatialHighOrder(16, 8, order=3)(optical, sar).shape == (1, 8, 4, 4)
    assert ChannelHighOrder(8)(optical).shape == optical.shape
    refined3, refined4, semantic = SemanticMappingTransformer(8, 16, 32, 1, 2, 6)(
        torch.rand(2, 8, 4, 6), torch.rand(2, 16, 2, 3)
    )
    assert refined3.shape == (2, 8, 4, 6) and refined4.shape == (2, 16, 2, 3) and semantic.shape == (2, 6, 2, 3)


def test_configs_reject_unknown_and_inconsistent_keys():
    with pytest.raises(ValidationError, match="widhts"):
        model_config("cloudlulc_net", "tiny", widhts=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="unknown architecture 'unet'; choose from cloudlulc_net"):
        model_config("unet")
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        model_config("cloudlulc_net", "huge")
    with pytest.raises(ValidationError, match="divisible by usmt_heads"):
        model_config("cloudlulc_net", "tiny", usmt_dim=30, usmt_heads=4)
    with pytest.raises(ValidationError, match="dual_stream is CloudLULC-Net without"):
        model_config("dual_stream", "tiny", use_orm=True)
    with pytest.raises(ValueError, match="multiple of 32"):
        check_input_size(500, 512)
    check_input_size(512, 256)


def test_sizes_report_parameters_and_gflops():
    tiny = build_model(model_config("cloudlulc_net", "tiny"))
    base = build_model(model_config("cloudlulc_net", "base"))
    assert 0.5e6 < parameter_count(tiny) < 5e6
    assert parameter_count(base) > 10 * parameter_count(tiny)
    tiny_flops = gflops_per_patch(tiny, 128)
    assert tiny_flops == pytest.approx(gflops_per_patch(tiny, 256) / 4, rel=0.05), "FLOPs scale with area"


def test_orm_gates_fusion_towards_sar_where_optics_are_unreliable():
    """Reliability 0 leaves the SAR-only projection; the optics then cannot reach the fused features."""
    fusion = StageFusion(8, use_orm=True, use_shoi=False, use_choi=False, shoi_order=3).eval()
    optical, sar = torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4)
    opaque = torch.full((1, 1, 16, 16), -30.0)
    with torch.no_grad():
        fused, reliability = fusion(optical, sar, opaque)
        assert reliability is not None and float(reliability.max()) < 1e-3
        other, _ = fusion(torch.rand(1, 8, 4, 4) * 5, sar, opaque)
        torch.testing.assert_close(fused, other, atol=1e-2, rtol=0)
        clear, _ = fusion(optical, sar, torch.full((1, 1, 16, 16), 30.0))
        assert not torch.allclose(clear, fused, atol=1e-2)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_detail_branch_starts_as_the_coarse_model_and_can_draw_single_pixels(architecture: str):
    """Zero-initialised, the correction changes nothing; once it learns, a one-pixel change reaches the logits."""
    torch.manual_seed(0)
    with_detail = build_model(model_config(architecture, "tiny")).eval()
    coarse = build_model(model_config(architecture, "tiny", detail=False)).eval()
    state = {k: v for k, v in with_detail.state_dict().items() if ".detail." not in k}
    coarse.load_state_dict(state)
    optical, sar = _inputs(1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(with_detail(optical, sar), coarse(optical, sar))
        for module in with_detail.modules():
            if type(module).__name__ == "DetailRefinement":
                torch.nn.init.normal_(module.correction.weight)  # type: ignore[union-attr]
        nudged_optical, nudged_sar = optical.clone(), sar.clone()
        nudged_optical[..., 40, 40] += 0.5
        nudged_sar[..., 40, 40] += 0.5
        change = (with_detail(nudged_optical, nudged_sar) - with_detail(optical, sar)).abs().sum(dim=1)[0]
    near = float(change[38:43, 38:43].max())
    assert near > 5 * float(change[40, 44]) > 0, "the change stays within two pixels of the changed pixel"


def test_defaults_keep_only_the_modules_that_measurably_help():
    """docs/benchmarks.md: ORM and the detail branch earned their place; SHOI, CHOI, USMT and anchors did not."""
    from cloudlulc.training.losses import LossWeights

    default = model_config("cloudlulc_net", "tiny")
    assert (default.use_orm, default.detail) == (True, True)
    assert (default.use_shoi, default.use_choi, default.use_usmt, LossWeights().anchor) == (False, False, False, 0)
    names = {type(m).__name__ for m in build_model(default).modules()}
    assert {"InputReliability", "OpticalReliability", "DetailRefinement"} <= names
    assert not {"SpatialHighOrder", "ChannelHighOrder", "SemanticMappingTransformer"} & names
