"""Pipeline parameters: their defaults, types and ranges, checked before any step runs.

The models are the single source of the pipelines' defaults. ``cloudlulc pipelines submit`` and the
local runner check values against them before anything is sent, and each pipeline's first step
(``components.checks``) checks them again for runs started from the Kubeflow UI. A bad value is refused
with the parameter's name and what it must be.
"""

from collections.abc import Callable
from datetime import date
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloudlulc.errors import CloudLULCError
from cloudlulc.ingest.options import ChipOptions
from cloudlulc.mapping.options import MapOptions
from cloudlulc.models.config import Architecture, SizeName
from cloudlulc.options import describe, field_help, field_like
from cloudlulc.products.options import ProductOptions
from cloudlulc.tracking.options import GateConfig
from cloudlulc.training.config import TrainConfig
from cloudlulc.validation.thresholds import Thresholds


class ParameterError(CloudLULCError):
    """A pipeline parameter of the wrong type or out of range."""

    exit_code = 2


class PipelineParams(BaseModel):
    """What both pipelines take: where and when to look, how to label and validate, where Triton is."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    catalog: str = Field(
        "https://earth-search.aws.element84.com/v1",
        min_length=1,
        description="STAC API URL or static catalog (folder, s3://, http).",
    )
    bbox: str = Field("4.27,45.05,4.41,45.15", description="Area of interest: west,south,east,north (degrees).")
    start: str = Field("2026-06-01", description="First acquisition day, YYYY-MM-DD.")
    end: str = Field("2026-06-30", description="Last acquisition day, YYYY-MM-DD, included.")
    max_cloud: float = Field(80.0, ge=0, le=100, description="Largest Sentinel-2 scene cloud cover, percent.")
    s1_collection: str = Field(
        "sentinel-1-grd", min_length=1, description="Calibrated, geocoded Sentinel-1 backscatter collection."
    )
    labels: str = Field("", description="Reference land-cover raster that labels the data ('' = none).")
    label_table: str = Field("worldcover", min_length=1, description="Remap table of labels: name or CSV.")
    max_nodata: float = field_like(Thresholds, "max_nodata_fraction")
    local_dir: str = Field("", description="State folder of a local Triton (one-machine runs only).")
    triton_url: str = Field("", description="Triton gRPC host:port ('' = TRITON_GRPC_URL from the settings).")

    relative_dates: ClassVar[bool] = False
    """Whether ``start``/``end`` may be empty, resolved per run by ``cloudlulc.products.schedule``."""

    @field_validator("bbox")
    @classmethod
    def _bbox(cls, value: str) -> str:
        from cloudlulc.ingest.stac import parse_bbox

        parse_bbox(value)  # raises DataError("bbox", ...) with what is wrong
        return value

    @field_validator("start", "end")
    @classmethod
    def _day(cls, value: str) -> str:
        if not value and cls.relative_dates:
            return value
        try:
            date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"must be a date YYYY-MM-DD, got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "PipelineParams":
        if self.start and self.end and date.fromisoformat(self.start) > date.fromisoformat(self.end):
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class TrainingParams(PipelineParams):
    """Parameters of the training pipeline (ingest -> validate -> train -> gate -> compile -> promote)."""

    data_uri: str = Field(
        "s3://cloudlulc/data/CloudLULC-Set", min_length=1, description="CloudLULC-Set prefix new chips are added to."
    )
    labels: str = Field(
        "s3://cloudlulc/reference/worldcover.vrt",
        min_length=1,
        description="Reference land-cover raster that labels new chips.",
    )
    chip_size: int = field_like(ChipOptions, "chip_size")
    epochs: int = field_like(TrainConfig, "epochs", default=30, le=1000)
    batch_size: int = field_like(TrainConfig, "batch_size", le=1024, description="Per-GPU batch size.")
    crop_size: int = field_like(TrainConfig, "crop_size", le=4096)
    learning_rate: float = field_like(TrainConfig, "learning_rate", le=1)
    architecture: Architecture = Field("cloudlulc_net", description="CloudLULC-Net or a baseline.")
    model_size: SizeName = Field("base", description="Named model size.")
    init: str = Field("", description="Fine-tune from models:/name@alias or a checkpoint; '' = retrain.")
    tracking_uri: str = Field("", description="MLflow URI ('' = MLFLOW_TRACKING_URI from the settings).")
    # the gate's thresholds: defaults and descriptions from the library's GateConfig
    min_gain: float = field_like(GateConfig, "min_miou_gain")
    max_bin_regression: float = field_like(GateConfig, "max_bin_regression")
    first_min_miou: float = field_like(GateConfig, "first_min_miou")
    first_min_oa: float = field_like(GateConfig, "first_min_oa")
    repository: str = Field("s3://cloudlulc/triton-models", min_length=1, description="Triton model repository.")
    tensorrt: bool = Field(True, description="Compile and serve a TensorRT plan (GPU) instead of ONNX.")

    @model_validator(mode="after")
    def _crop_fits(self) -> "TrainingParams":
        if self.crop_size > self.chip_size:
            raise ValueError(f"crop_size {self.crop_size} is larger than chip_size {self.chip_size}")
        return self


class MappingParams(PipelineParams):
    """Parameters of the regional-mapping pipeline (ingest scenes -> validate -> map through Triton).

    Its dates may be empty so that a recurring run maps the newest date rather than the dates it was
    created with; ``start``/``end`` given pin the run to them.
    """

    relative_dates: ClassVar[bool] = True

    start: str = Field("", description="First acquisition day, YYYY-MM-DD ('' = end - window_days).")
    end: str = Field(
        "",
        description="Last acquisition day, included, and the product's date, YYYY-MM-DD "
        "('' = the day the run is scheduled for, UTC; today for a manual run).",
    )
    scenes_uri: str = Field("s3://cloudlulc/data/scenes", min_length=1, description="Scene stacks prefix.")
    maps_uri: str = Field("s3://cloudlulc/maps", min_length=1, description="Where maps are published.")
    region: str = Field("region", min_length=1, pattern=r"^[A-Za-z0-9_-]+$", description="Region name in paths.")
    model_name: str = Field("cloudlulc", min_length=1, description="Served model name.")
    tile: int = field_like(MapOptions, "tile")
    overlap: int = field_like(MapOptions, "overlap")
    batch_size: int = field_like(MapOptions, "batch_size")
    window_days: int = field_like(ProductOptions, "window_days")
    min_change_confidence: float = field_like(ProductOptions, "min_change_confidence")
    reference: str = Field("", description="Reference land-cover raster to measure the product's agreement with.")
    s2_only: bool = Field(
        False,
        description="Also map Sentinel-2 scenes with no Sentinel-1 partner, from "
        "Sentinel-2 alone (serve a model trained with modality dropout).",
    )

    @model_validator(mode="after")
    def _tiles_fit(self) -> "MappingParams":
        self.map_options()  # the library's rules, as `cloudlulc map` applies them
        return self

    def map_options(self) -> MapOptions:
        """The mapping stage's options these parameters set; ValueError naming the parameter if they break a rule."""
        try:
            return MapOptions(tile=self.tile, overlap=self.overlap, batch_size=self.batch_size)
        except ValidationError as error:
            raise ValueError(describe(error, {name: name for name in MapOptions.model_fields})) from None


TRAINING_DEFAULTS = TrainingParams()
MAPPING_DEFAULTS = MappingParams()


def checked(model: type[PipelineParams], values: dict[str, Any]) -> PipelineParams:
    """``values`` as ``model``, or a ParameterError naming every bad parameter and what it must be."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = f"not a parameter of this pipeline (known: {', '.join(model.model_fields)})"
            name = ".".join(str(part) for part in item["loc"])
            problems.append(f"parameter {name!r}: {message}" if name else f"parameters: {message}")
        raise ParameterError("; ".join(problems)) from None
    except CloudLULCError as error:  # a validator that reuses a library parser (bbox)
        raise ParameterError(f"parameter {str(error).split(':')[0]!r}: {error}") from None


F = TypeVar("F", bound=Callable[..., Any])


def documented(model: type[PipelineParams]) -> Callable[[F], F]:
    """Give a pipeline function an ``Args:`` section written from ``model``'s fields.

    KFP compiles a pipeline docstring's ``Args:`` into each parameter's description in the IR, which
    the Kubeflow UI shows beside the field; writing it from the model keeps one text per parameter.
    Apply below ``@dsl.pipeline`` (decorators run bottom-up).
    """

    def attach(func: F) -> F:
        lines = [f"    {name}: {field_help(info)}" for name, info in model.model_fields.items()]
        func.__doc__ = f"{(func.__doc__ or '').strip()}\n\nArgs:\n" + "\n".join(lines) + "\n"
        return func

    return attach
