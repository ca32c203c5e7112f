"""Mapping component: the region's scenes through Triton over gRPC, then the region's product for the date."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def map_region(
    scenes: dsl.Input[dsl.Dataset],
    maps_uri: str,
    region: str,
    triton_url: str,
    local_dir: str,
    model_name: str,
    tile: int,
    overlap: int,
    batch_size: int,
    aoi: str,
    target_date: str,
    window_days: int,
    min_change_confidence: float,
    reference: str,
    maps: dsl.Output[dsl.Artifact],
    report: dsl.Output[dsl.HTML],
    areas: dsl.Output[dsl.Metrics],
    s2_only: bool = False,
    scheduled: str = "",
) -> str:
    """Map the region's scene stacks of the date window, then publish the region's product for ``target_date``.

    Scene maps go to ``<maps_uri>/<region>/<date>_<pair>.tif`` (resumable, published atomically); the
    product (one mosaic over the AOI, its change since the previous product, its report page) is a STAC
    item in the catalogue rooted at ``maps_uri`` (``cloudlulc.products``), written last. A product
    already published is not built again. Sentinel-2-only stacks are mapped from Sentinel-2 alone when
    ``s2_only`` is set, and skipped otherwise. The artifacts index the scene maps, show the product's
    report page in the Kubeflow UI and carry its class areas (km2, once per pixel) as metrics. Returns
    the product's STAC item URI.

    An empty ``target_date`` (a recurring run) is the run's scheduled day, from ``scheduled``, resolved
    by ``cloudlulc.products.schedule.resolve_window`` as the ingest step resolved its last day; where
    the two differ (a manual run that crossed midnight UTC) the ingest's day wins, so the product is
    built from the scenes that were ingested for it.
    """
    import json
    import os
    from datetime import date, timedelta
    from pathlib import Path

    from cloudlulc.mapping.options import MapOptions
    from cloudlulc.products.build import published_item, read_asset
    from cloudlulc.products.options import ProductOptions
    from cloudlulc.products.schedule import resolve_window
    from cloudlulc.serving.region_maps import TritonEndpoint, map_region
    from components.runtime import WORK_DIR_ENV, require_s3_credentials

    uri = str(scenes.metadata["uri"])
    require_s3_credentials(uri, maps_uri)
    _, day = resolve_window("", target_date, window_days, scheduled)
    ingested = str(scenes.metadata.get("end", ""))
    if not target_date and ingested and ingested != day.isoformat():
        print(f"target date {ingested}, the ingest step's last day (this step resolved {day})")
        day = date.fromisoformat(ingested)
    print(f"product of {day} from scenes of {day - timedelta(days=window_days)} to {day}")
    product = ProductOptions(
        region=region,
        aoi=aoi,
        target_date=day,
        window_days=window_days,
        min_change_confidence=min_change_confidence,
        reference=reference or None,
    )
    endpoint = TritonEndpoint.find(triton_url, local_dir)  # served.json pins the version; /dev/shm on one host
    result = map_region(
        uri,
        maps_uri,
        region,
        endpoint,
        model_name=model_name,
        options=MapOptions(tile=tile, overlap=overlap, batch_size=batch_size),
        s2_only=s2_only,
        product=product,
        work_dir=os.environ.get(WORK_DIR_ENV) or None,  # the work volume: a retry resumes inside a scene
    )
    outcome = result.product
    assert outcome is not None, "map_region builds a product when given its options"
    maps.metadata.update({"uri": result.prefix, "maps": len(result.maps), "item": outcome.item_uri})
    Path(maps.path).write_text(json.dumps(result.index(), indent=2))
    item = published_item(outcome.item_uri)  # this run's, or the one a rerun found published
    for name, km2 in sorted(item.properties.get("cloudlulc:areas_km2", {}).items()):
        areas.log_metric(f"{name.replace(' ', '_').replace('-', '_').lower()}_km2", round(float(km2), 4))
    report.uri = report.uri + ".html"  # opens as a page where a person downloads it; the UI shows it either way
    Path(report.path).write_bytes(read_asset(item, "report"))
    return outcome.item_uri
