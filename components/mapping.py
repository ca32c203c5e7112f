"""Mapping component: every ingested scene through Triton over gRPC into published COGs and statistics."""

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
    maps: dsl.Output[dsl.Artifact],
    quicklook: dsl.Output[dsl.HTML],
    areas: dsl.Output[dsl.Metrics],
    s2_only: bool = False,
) -> str:
    """Map each scene stack of the region and publish ``<maps_uri>/<region>/<date>_<pair>.tif`` with sidecars.

    Sentinel-2-only stacks (no Sentinel-1 partner) are mapped from Sentinel-2 alone when ``s2_only``
    is set, and skipped otherwise; their maps say so (``CLOUDLULC_MODALITIES``, the figure caption).

    Maps are resumable and their publication atomic (see ``cloudlulc.mapping``); a rerun of a mapped
    scene writes nothing new. The artifacts index the published maps, show the quicklooks in the
    Kubeflow UI and carry the class areas (km2) as metrics. Returns the published prefix.
    """
    import json

    from cloudlulc.mapping.options import MapOptions
    from cloudlulc.serving.region_maps import TritonEndpoint, map_region
    from components.runtime import require_s3_credentials

    uri = str(scenes.metadata["uri"])
    require_s3_credentials(uri, maps_uri)
    endpoint = TritonEndpoint.find(triton_url, local_dir)  # served.json pins the version; /dev/shm on one host
    result = map_region(
        uri,
        maps_uri,
        region,
        endpoint,
        model_name=model_name,
        options=MapOptions(tile=tile, overlap=overlap, batch_size=batch_size),
        s2_only=s2_only,
    )
    for name, km2 in sorted(result.totals_km2.items()):
        areas.log_metric(f"{name}_km2", round(km2, 4))
    maps.metadata.update({"uri": result.prefix, "maps": len(result.maps)})
    with open(maps.path, "w") as index:
        json.dump(result.index(), index, indent=2)
    with open(quicklook.path, "w") as page:
        page.write(result.html(region))
    return result.prefix
