"""Both pipelines on one machine with ``kfp.local``, and the main job built from them.

The embedded defaults stand in for the cluster: local folders for S3, a SQLite MLflow store, the real
Triton server bundled in nvidia-pytriton on the model repository (``cloudlulc_cpu``: ONNX Runtime in
the Python backend) for the Triton deployment, CPU training of the tiny model. The
steps are the same components the cluster runs, executed as subprocesses of this Python.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from kfp import local

from cloudlulc.errors import CloudLULCError
from components.parameters import MappingParams, TrainingParams, checked
from pipelines.regional_mapping import regional_mapping
from pipelines.training import training

TRAINING_DATES = ("2026-06-01", "2026-06-30")
MAPPING_DATES = (("2026-06-01", "2026-06-30"), ("2026-07-01", "2026-07-31"))
"""Two target dates of the demo region: the second product has a change map against the first."""


def init_local(pipeline_root: Path) -> None:
    """Run components as subprocesses of this interpreter (no venv, no pip: offline and fast)."""
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))


class PipelineStepError(CloudLULCError):
    """A step of a local pipeline run failed; its log is above (exit 1, like a failed validation)."""

    exit_code = 1


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _run_local(pipeline: Callable[..., Any], params: dict[str, Any], pipeline_root: Path) -> None:
    local_runs_without_schedule_time()
    init_local(pipeline_root)
    try:
        pipeline(**params)
    except RuntimeError as error:  # what kfp.local raises, and only raises, for a failed step (raise_on_error)
        raise PipelineStepError(_ANSI.sub("", str(error))) from error


def local_runs_without_schedule_time() -> None:
    """Let ``kfp.local`` run this pipeline: the schedule-time placeholder becomes "" (no schedule) there.

    kfp.local's placeholder resolution takes ``{{$.pipeline_job_schedule_time_utc}}`` for an input path
    and fails with an IndexError (kubeflow/pipelines#13424; fix proposed in #13426). Only that failure
    is caught, so a kfp that resolves the placeholder keeps its own value; the dates of a local run then
    come from ``start``/``end``, or today (``cloudlulc.products.schedule``). Only kfp.local is changed:
    the compiled pipeline, and so Kubeflow, still get the placeholder.
    """
    from kfp import dsl
    from kfp.local import placeholder_utils

    original = placeholder_utils.resolve_individual_placeholder
    if getattr(original, "without_schedule_time", False):
        return

    def resolve(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except IndexError:
            element = kwargs.get("element", args[0] if args else None)
            if not isinstance(element, str) or dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER not in element:
                raise
            if "element" in kwargs:
                kwargs["element"] = element.replace(dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER, "")
            else:
                args = (element.replace(dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER, ""), *args[1:])
            return original(*args, **kwargs)

    resolve.without_schedule_time = True  # type: ignore[attr-defined]
    placeholder_utils.resolve_individual_placeholder = resolve


def run_training(params: dict[str, Any], pipeline_root: Path) -> None:
    """Check ``params`` (refused before any step, naming the parameter), then run the training pipeline."""
    checked(TrainingParams, params)
    _run_local(training, params, pipeline_root)


def run_mapping(params: dict[str, Any], pipeline_root: Path) -> None:
    """Check ``params``, then run the regional-mapping pipeline."""
    checked(MappingParams, params)
    _run_local(regional_mapping, params, pipeline_root)


def latest_run(pipeline_root: Path, pipeline_name: str) -> Path:
    """The newest local run folder of a pipeline (``kfp.local`` names them ``<name>-<timestamp>``)."""
    runs = sorted(pipeline_root.glob(f"{pipeline_name}-*"), key=lambda path: path.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"no local run of {pipeline_name} under {pipeline_root}")
    return runs[-1]


@dataclass(frozen=True)
class MainJobLayout:
    """Where the main job keeps everything, under one folder."""

    root: Path

    @property
    def catalog(self) -> Path:
        """Synthetic STAC catalog."""
        return self.root / "catalog"

    @property
    def dataset(self) -> Path:
        """CloudLULC-Set chips the training pipeline ingests."""
        return self.root / "data" / "CloudLULC-Set"

    @property
    def scenes(self) -> Path:
        """Scene stacks the mapping pipeline ingests."""
        return self.root / "data" / "scenes"

    @property
    def maps(self) -> Path:
        """Published maps."""
        return self.root / "maps"

    @property
    def mlflow_db(self) -> Path:
        """SQLite MLflow store (artifacts beside it)."""
        return self.root / "mlflow" / "mlflow.db"

    @property
    def repository(self) -> Path:
        """Triton model repository."""
        return self.root / "model-repository"

    @property
    def triton(self) -> Path:
        """State folder of the local Triton."""
        return self.root / "triton"

    @property
    def pipeline_root(self) -> Path:
        """kfp.local runs: every step's artifacts."""
        return self.root / "pipeline-runs"

    @property
    def tracking_uri(self) -> str:
        """MLflow URI of the store."""
        return f"sqlite:///{self.mlflow_db}"


@dataclass(frozen=True)
class MainJobConfig:
    """The embedded defaults of the main job: small enough for two CPU cores in a few minutes."""

    scene_size: int = 1024
    chip_size: int = 128
    epochs: int = 20
    batch_size: int = 4
    learning_rate: float = 0.003
    seed: int = 0
    tile: int = 256
    first_min_miou: float = 0.2
    first_min_oa: float = 0.4
    """Test mIoU and OA the first model needs to become champion (and be served)."""


def write_catalog(layout: MainJobLayout, config: MainJobConfig) -> Any:
    """Synthetic acquisitions of one place: a June pair to train on and a cloudier July pair to map."""
    from cloudlulc.ingest.synthetic import S1Spec, S2Spec, SyntheticCatalogConfig, write_synthetic_catalog

    catalog_config = SyntheticCatalogConfig(
        size=config.scene_size,
        seed=config.seed,
        s2=(S2Spec("2026-06-10", cloud_cover=0.3), S2Spec("2026-07-15", cloud_cover=0.5)),
        s1=(S1Spec("2026-06-08"), S1Spec("2026-07-13")),
    )
    return write_synthetic_catalog(str(layout.catalog), catalog_config)


def training_params(layout: MainJobLayout, config: MainJobConfig, catalog: Any) -> dict[str, Any]:
    """The training pipeline's parameters on the embedded defaults."""
    west, south, east, north = catalog.bbox_wgs84
    return {
        "catalog": catalog.catalog_href,
        "bbox": f"{west},{south},{east},{north}",
        "start": TRAINING_DATES[0],
        "end": TRAINING_DATES[1],
        "max_cloud": 100.0,
        "data_uri": str(layout.dataset),
        "labels": str(catalog.landcover_uri),
        "chip_size": config.chip_size,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "crop_size": config.chip_size,
        "learning_rate": config.learning_rate,
        "model_size": "tiny",
        "tracking_uri": layout.tracking_uri,
        "first_min_miou": config.first_min_miou,
        "first_min_oa": config.first_min_oa,
        "repository": str(layout.repository),
        "tensorrt": False,
        "local_dir": str(layout.triton),
    }


def mapping_params(
    layout: MainJobLayout, config: MainJobConfig, catalog: Any, dates: tuple[str, str]
) -> dict[str, Any]:
    """The regional-mapping pipeline's parameters on the embedded defaults: the product of ``dates[1]``."""
    from cloudlulc.serving.model_config import CPU_MODEL

    west, south, east, north = catalog.bbox_wgs84
    return {
        "catalog": catalog.catalog_href,
        "bbox": f"{west},{south},{east},{north}",
        "start": dates[0],
        "end": dates[1],
        "window_days": (date.fromisoformat(dates[1]) - date.fromisoformat(dates[0])).days,
        "max_cloud": 100.0,
        "scenes_uri": str(layout.scenes),
        "maps_uri": str(layout.maps),
        "region": "demo",
        "tile": config.tile,
        "local_dir": str(layout.triton),
        "model_name": CPU_MODEL,
    }


def ensure_serving(layout: MainJobLayout) -> str:
    """The local Triton's gRPC URL, starting it on the model repository if it is not running.

    A gate refusal promotes nothing, so the champion served by an earlier run maps the region.
    """
    from cloudlulc.errors import ServingError
    from cloudlulc.serving import CPU_MODEL, LocalTriton, ModelRepository

    server = LocalTriton(layout.triton)
    state = server.state()
    if state is not None:
        return state.grpc_url
    if ModelRepository(str(layout.repository)).served_version(CPU_MODEL) is None:
        raise ServingError(
            f"no model served from {layout.repository}: the gate refused every model so far "
            "(see the gate line above); train longer, e.g. `cloudlulc demo --epochs 40`"
        )
    return server.start(str(layout.repository), models=[CPU_MODEL]).grpc_url


@dataclass(frozen=True)
class MainJobResult:
    """Where each result of the main job is."""

    layout: MainJobLayout
    catalog: str
    acquisitions: Any
    """The synthetic catalog written (``cloudlulc.ingest.synthetic.SyntheticCatalog``)."""
    validation_reports: list[Path]
    run_id: str
    champion: str
    gate: str
    served: str
    maps: list[Path]
    products: list[Path]
    """STAC items of the region's products, one per target date (``<maps>/demo/<item>/<item>.json``)."""
    map_agreement: float | None
    seconds: float

    def summary(self) -> str:
        """Lines a user reads at the end: every result and how to open it."""
        root = self.layout.root
        lines = [
            f"finished in {self.seconds / 60:.1f} min; everything is under {root}",
            f"acquisitions:  {self.catalog} (synthetic STAC catalog)",
            f"training data: {self.layout.dataset} (CloudLULC-Set chips)",
            f"scene stacks:  {self.layout.scenes}",
            *[f"validation:    {path} (HTML report)" for path in self.validation_reports],
            f"MLflow run:    {self.run_id}  ->  mlflow ui --backend-store-uri {self.layout.tracking_uri}",
            f"gate:          {self.gate}",
            f"registry:      {self.champion}",
            f"Triton:        {self.served}",
        ]
        for path in self.maps:
            lines.append(f"map (COG):     {path}")
            lines.append(f"  class areas: {path.with_name(path.stem + '_areas.json')}")
            lines.append(f"  quicklook:   {path.with_name(path.stem + '_quicklook.png')}")
        for item in self.products:
            lines.append(f"product:       {item} (STAC item; catalogue {self.layout.maps / 'catalog.json'})")
            lines.append(f"  report page: {item.with_name(item.stem + '_report.html')}")
            change = item.with_name(item.stem + "_change.tif")
            if change.exists():
                lines.append(f"  change map:  {change}")
        if self.map_agreement is not None:
            lines.append(f"map agreement with the synthetic ground truth: {self.map_agreement:.1%} of pixels")
        lines.append(f"pipeline runs: {self.layout.pipeline_root} (every step's artifacts)")
        lines.append(f"step output:   {self.layout.root / 'main-job.log'}")
        return "\n".join(lines)


def _agreement(map_path: Path, truth_uri: str) -> float:
    """Share of mapped pixels whose class equals the synthetic truth (resampled onto the map's grid)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    with rasterio.open(map_path) as mapped, rasterio.open(truth_uri) as truth:
        predicted = mapped.read(1)
        view = WarpedVRT(
            truth,
            crs=mapped.crs,
            transform=mapped.transform,
            width=mapped.width,
            height=mapped.height,
            resampling=Resampling.nearest,
            nodata=255,
        )
        expected = view.read(1)
        valid = (predicted != (mapped.nodata if mapped.nodata is not None else 255)) & (expected != 255)
    return float((predicted[valid] == expected[valid]).mean()) if valid.any() else 0.0


def run_main_job(
    out_dir: str | Path, config: MainJobConfig = MainJobConfig(), *, keep_serving: bool = False, echo: Any = print
) -> MainJobResult:
    """Synthetic acquisitions -> training pipeline -> regional-mapping pipeline, all local; see the README."""
    from mlflow import MlflowClient

    from cloudlulc.serving import CPU_MODEL, LocalTriton, ModelRepository
    from cloudlulc.tracking import CHAMPION, TrackingSettings
    from cloudlulc.tracking.registry import Registry
    from pipelines.console import step_log

    began = time.monotonic()
    layout = MainJobLayout(Path(out_dir).resolve())
    layout.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
    echo(f"[1/3] writing synthetic Sentinel-2/1 acquisitions to {layout.catalog}")
    catalog = write_catalog(layout, config)
    log = layout.root / "main-job.log"
    echo(
        f"[2/3] training pipeline (kfp.local): ingest -> validate -> train -> gate -> export -> promote "
        f"(details in {log})"
    )
    try:
        with step_log(log):
            run_training(training_params(layout, config, catalog), layout.pipeline_root)
    except BaseException:  # the promote step may have started the local Triton before a later step failed
        LocalTriton(layout.triton).stop()
        raise
    settings = TrackingSettings(tracking_uri=layout.tracking_uri)
    registry = Registry(settings.tracking_uri, settings.registered_model)
    newest = max(
        registry.client.search_model_versions(f"name='{settings.registered_model}'"),
        key=lambda version: int(version.version),
    )
    gate = f"{newest.tags.get('gate.decision', 'not decided')}: {newest.tags.get('gate.reason', '')}"
    echo(f"      gate: {gate}")
    echo(
        "[3/3] regional-mapping pipeline (kfp.local), once per target date: ingest -> validate -> map through "
        "Triton -> region product (mosaic, change since the last product, STAC item, report page)"
    )
    ensure_serving(layout)
    try:
        for dates in MAPPING_DATES:
            with step_log(log):
                run_mapping(mapping_params(layout, config, catalog, dates), layout.pipeline_root)
        server = LocalTriton(layout.triton).state()
        version = ModelRepository(str(layout.repository)).served_version(CPU_MODEL)
        served = f"version {version} of {CPU_MODEL} at {server.grpc_url}" if server else "not running"
    finally:
        if not keep_serving:
            LocalTriton(layout.triton).stop()
    served += "" if keep_serving else f" (stopped; `cloudlulc serve --repository {layout.repository}` serves it again)"
    maps = sorted((layout.maps / "demo").glob("*.tif"))
    maps = [path for path in maps if not path.stem.endswith("_confidence")]
    products = sorted(path for path in (layout.maps / "demo").glob("*/*.json") if path.stem == path.parent.name)
    champion = registry.alias_version(CHAMPION)
    run_id = MlflowClient(settings.tracking_uri).get_model_version(settings.registered_model, newest.version).run_id
    reports = sorted(layout.pipeline_root.glob("*/validate-data*/report.html"))
    return MainJobResult(
        layout=layout,
        catalog=catalog.catalog_href,
        acquisitions=catalog,
        validation_reports=reports[-2:],
        run_id=str(run_id),
        champion=f"{settings.registered_model} v{newest.version} trained; champion is v{champion}",
        gate=str(gate),
        served=served,
        maps=maps,
        products=products,
        map_agreement=_agreement(maps[-1], catalog.truth_labels_uri) if maps else None,
        seconds=time.monotonic() - began,
    )
