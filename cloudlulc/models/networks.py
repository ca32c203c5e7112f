"""CloudLULC-Net and the baselines, assembled from encoders, stage fusion, USMT and the decoder.

Every network takes ``(optical [B,12,H,W], sar [B,2,H,W])`` and returns logits [B,K,H,W] from
``forward``, so serving, evaluation and export treat them alike. ``forward_features`` returns the
training-only extras (embedding, reliability maps, semantic logits, reconstruction). Forward passes
hold no data-dependent Python control flow: which modules run is fixed at construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cloudlulc import schema
from cloudlulc.models.blocks import Encoder
from cloudlulc.models.config import ModelConfig
from cloudlulc.models.decoder import SkipDecoder
from cloudlulc.models.fusion import InputReliability, StageFusion
from cloudlulc.models.usmt import SemanticMappingTransformer

OPTICAL_CHANNELS = len(schema.S2_BANDS)
SAR_CHANNELS = len(schema.S1_POLARISATIONS)
SIZE_MULTIPLE = schema.SIZE_MULTIPLE


@dataclass
class ModelOutput:
    """Logits plus what the training losses need; inference uses ``logits`` only."""

    logits: torch.Tensor
    embedding: torch.Tensor
    reliability: list[torch.Tensor] = field(default_factory=list)
    """ORM's maps in (0, 1): at input resolution first, then one per encoder stage (empty without ORM)."""
    semantic_logits: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None


class SegmentationNetwork(nn.Module):
    """Common face of all architectures.

    ``temperature`` is the calibration of the class probabilities (fitted on the validation split
    after training, 1 until then). It is a buffer, so it travels with the weights into checkpoints,
    registered models and exports, and every predictor divides the logits by it through
    :meth:`probabilities`; ``forward`` keeps returning raw logits (the argmax does not change).
    """

    config: ModelConfig
    temperature: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.ones(()))

    def forward_features(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        """Logits and training extras."""
        raise NotImplementedError

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return self.forward_features(optical, sar).logits

    def probabilities(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """Calibrated class probabilities [B,K,H,W]: softmax of the logits over the temperature."""
        return torch.softmax(self(optical, sar) / self.temperature, dim=1)

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: object) -> None:
        # Weights saved before calibration existed have no temperature: they load as uncalibrated (1).
        state_dict.setdefault(f"{prefix}temperature", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args)


class CloudLULCNet(SegmentationNetwork):
    """Two encoders, ORM + HIAA fusion per stage, USMT at the coarse stages, a skip decoder.

    With ORM, SHOI, CHOI and USMT all off it is the dual-stream fusion baseline. ORM's reliability
    is predicted at input resolution, used by every stage and handed to the decoder's detail branch
    as an extra channel, so fine detail is drawn from the optics only where they can be trusted.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.reliability = InputReliability(OPTICAL_CHANNELS + SAR_CHANNELS) if config.use_orm else None
        self.optical_encoder = Encoder(OPTICAL_CHANNELS, config.widths, config.depths)
        self.sar_encoder = Encoder(SAR_CHANNELS, config.widths, config.depths)
        self.fusion = nn.ModuleList(
            StageFusion(
                w,
                use_orm=config.use_orm,
                use_shoi=config.use_shoi,
                use_choi=config.use_choi,
                shoi_order=config.shoi_order,
            )
            for w in config.widths
        )
        self.usmt = (
            SemanticMappingTransformer(
                config.widths[2],
                config.widths[3],
                config.usmt_dim,
                config.usmt_layers,
                config.usmt_heads,
                config.num_classes,
            )
            if config.use_usmt
            else None
        )
        detail = OPTICAL_CHANNELS + SAR_CHANNELS + int(config.use_orm) if config.detail else None
        self.decoder = SkipDecoder(
            config.widths, config.decoder_width, config.embedding_dim, config.num_classes, detail
        )

    def forward_features(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        input_logits = self.reliability(optical, sar) if self.reliability is not None else None
        reliability = [torch.sigmoid(input_logits)] if input_logits is not None else []
        fused: list[torch.Tensor] = []
        for stage_fusion, optical_features, sar_features in zip(
            self.fusion, self.optical_encoder(optical), self.sar_encoder(sar), strict=True
        ):
            features, stage_reliability = stage_fusion(optical_features, sar_features, input_logits)
            fused.append(features)
            if stage_reliability is not None:
                reliability.append(stage_reliability)
        semantic = None
        if self.usmt is not None:
            fused[2], fused[3], semantic = self.usmt(fused[2], fused[3])
        image = torch.cat([optical, sar, *reliability[:1]], dim=1) if self.config.detail else None
        embedding, logits = self.decoder(fused, image)
        return ModelOutput(logits, embedding, reliability, semantic)


class SingleStream(SegmentationNetwork):
    """One encoder on optical only, SAR only, or both stacked (early fusion, 14 channels)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.inputs = {"optical_only": "optical", "sar_only": "sar", "early_fusion": "both"}[config.architecture]
        channels = {"optical": OPTICAL_CHANNELS, "sar": SAR_CHANNELS, "both": OPTICAL_CHANNELS + SAR_CHANNELS}
        self.encoder = Encoder(channels[self.inputs], config.widths, config.depths)
        self.decoder = SkipDecoder(
            config.widths,
            config.decoder_width,
            config.embedding_dim,
            config.num_classes,
            channels[self.inputs] if config.detail else None,
        )

    def forward_features(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        if self.inputs == "optical":
            x = optical
        elif self.inputs == "sar":
            x = sar
        else:
            x = torch.cat([optical, sar], dim=1)
        embedding, logits = self.decoder(self.encoder(x), x)
        return ModelOutput(logits, embedding)


class ReconstructionFirst(SegmentationNetwork):
    """A SAR-guided cloud-removal net (trained against Opt_S2_clear), then a segmenter on its output.

    The segmenter sees the reconstruction with gradients stopped, so the reconstruction is learned
    for its own sake, as in the two-step approach it stands for.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.restore_encoder = Encoder(OPTICAL_CHANNELS + SAR_CHANNELS, config.widths, config.depths)
        both = OPTICAL_CHANNELS + SAR_CHANNELS
        self.restore_decoder = SkipDecoder(
            config.widths, config.decoder_width, config.embedding_dim, OPTICAL_CHANNELS, both if config.detail else None
        )
        self.segmenter = SingleStream(config.model_copy(update={"architecture": "optical_only"}))

    def forward_features(self, optical: torch.Tensor, sar: torch.Tensor) -> ModelOutput:
        both = torch.cat([optical, sar], dim=1)
        _, correction = self.restore_decoder(self.restore_encoder(both), both)
        reconstruction = torch.clamp(optical + correction, 0.0, 1.0)
        segmented = self.segmenter.forward_features(reconstruction.detach(), sar)
        return ModelOutput(segmented.logits, segmented.embedding, reconstruction=reconstruction)


def build_model(config: ModelConfig) -> SegmentationNetwork:
    """The network a config describes."""
    if config.architecture in {"cloudlulc_net", "dual_stream"}:
        return CloudLULCNet(config)
    if config.architecture == "reconstruction_first":
        return ReconstructionFirst(config)
    return SingleStream(config)


def check_input_size(height: int, width: int) -> None:
    """Raise when a tile cannot pass the encoder (kept out of ``forward`` for export)."""
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(f"input size {height}x{width} must be a multiple of {SIZE_MULTIPLE} pixels")
