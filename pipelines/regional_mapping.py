"""The regional-mapping pipeline: a region and dates in, published LULC maps out (scheduled per region).

Empty ``start``/``end`` (the defaults) make a recurring run map the day it is scheduled for: the ingest
and map steps resolve them from Kubeflow's schedule time (``cloudlulc.products.schedule``). Both steps
run with caching off, so a run never gets a cached map of other scenes.

``kfp.local`` (kfp 2.17) fails on that placeholder instead of resolving it (kubeflow/pipelines#13424):
local runs go through ``pipelines.local``, which lets them see no schedule time instead.
"""

from kfp import dsl

from components.checks import check_mapping_params
from components.mapping import map_region
from components.parameters import MAPPING_DEFAULTS as D
from components.parameters import MappingParams, documented
from components.summary import summarize_mapping_run
from pipelines.platform import on_cpu, policy, with_settings, with_work_volume
from pipelines.stages import HOUR, ingest_validated


@dsl.pipeline(
    name="cloudlulc-regional-mapping",
    description="For a region and dates: ingest Sentinel-1/2 scene stacks, validate them, map them through "
    "Triton over gRPC, and publish Cloud-Optimized GeoTIFF maps with class areas and quicklooks.",
)
@documented(MappingParams)
def regional_mapping(
    catalog: str = D.catalog,
    bbox: str = D.bbox,
    start: str = D.start,
    end: str = D.end,
    max_cloud: float = D.max_cloud,
    s1_collection: str = D.s1_collection,
    labels: str = D.labels,
    label_table: str = D.label_table,
    max_nodata: float = D.max_nodata,
    scenes_uri: str = D.scenes_uri,
    maps_uri: str = D.maps_uri,
    region: str = D.region,
    model_name: str = D.model_name,
    tile: int = D.tile,
    overlap: int = D.overlap,
    batch_size: int = D.batch_size,
    window_days: int = D.window_days,
    min_change_confidence: float = D.min_change_confidence,
    reference: str = D.reference,
    s2_only: bool = D.s2_only,
    triton_url: str = D.triton_url,
    local_dir: str = D.local_dir,
) -> None:
    """Parameters and their ranges: ``components.parameters.MappingParams`` (also checked by the first step)."""
    done = summarize_mapping_run(maps_uri=maps_uri, region=region)
    policy(with_settings(on_cpu(done, "500m", "1G")), retries=0, timeout_s=600, cache=False, name="run summary")
    with dsl.ExitHandler(done, name="mapping"):
        check = check_mapping_params(
            catalog=catalog,
            bbox=bbox,
            start=start,
            end=end,
            max_cloud=max_cloud,
            s1_collection=s1_collection,
            labels=labels,
            label_table=label_table,
            max_nodata=max_nodata,
            scenes_uri=scenes_uri,
            maps_uri=maps_uri,
            region=region,
            model_name=model_name,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            window_days=window_days,
            min_change_confidence=min_change_confidence,
            reference=reference,
            s2_only=s2_only,
            triton_url=triton_url,
            local_dir=local_dir,
        )
        policy(on_cpu(check, "500m", "1G"), retries=0, timeout_s=300, cache=True, name="check parameters")

        ingest, valid = ingest_validated(
            check,
            max_nodata=max_nodata,
            catalog=catalog,
            bbox=bbox,
            start=start,
            end=end,
            max_cloud=max_cloud,
            s1_collection=s1_collection,
            out_uri=scenes_uri,
            mode="scenes",
            chip_size=512,
            labels=labels,
            label_table=label_table,
            s2_only=s2_only,
            window_days=window_days,
            scheduled=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
        )

        mapped = map_region(
            scenes=ingest.outputs["dataset"],
            maps_uri=maps_uri,
            region=region,
            triton_url=triton_url,
            local_dir=local_dir,
            model_name=model_name,
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            aoi=bbox,
            target_date=end,
            window_days=window_days,
            min_change_confidence=min_change_confidence,
            reference=reference,
            s2_only=s2_only,
            scheduled=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
        ).after(valid)
        policy(
            with_work_volume(with_settings(on_cpu(mapped, "4", "16G"))),
            retries=2,
            timeout_s=12 * HOUR,
            cache=False,
            name="map and publish",
        )
