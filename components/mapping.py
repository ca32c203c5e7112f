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
) -> str:
    """Map each scene stack of the region and publish ``<maps_uri>/<region>/<date>_<pair>.tif`` with sidecars.

    Maps are resumable and their publication atomic (see ``cloudlulc.mapping``); a rerun of a mapped
    scene writes nothing new. The artifacts index the published maps, show the quicklooks in the
    Kubeflow UI and carry the class areas (km2) as metrics. Returns the published prefix.
    """
    import base64
    import json
    import os

    from cloudlulc.ingest.scenes import scene_stacks
    from cloudlulc.io.storage import open_storage
    from cloudlulc.serving.regional import map_with_triton, resolve_grpc_url, served_repository
    from components.runtime import require_s3_credentials

    uri = str(scenes.metadata["uri"])
    require_s3_credentials(uri, maps_uri)
    given_url = triton_url or os.environ.get("TRITON_GRPC_URL", "")
    grpc_url = resolve_grpc_url(given_url, local_dir or "outputs/triton")
    repository = served_repository(given_url, local_dir or "outputs/triton")  # its served.json pins the version
    prefix = f"{maps_uri.rstrip('/')}/{region}"
    published: list[dict[str, object]] = []
    totals: dict[str, float] = {}
    figures: list[str] = []
    for stack in scene_stacks(uri):
        out_uri = f"{prefix}/{stack.s2_datetime:%Y%m%d}_{stack.pair_id}.tif"
        result = map_with_triton(stack.optical, stack.sar, out_uri, grpc_url, model_name=model_name,
                                 repository=repository, tile=tile, overlap=overlap, batch_size=batch_size,
                                 progress=False)  # fmt: skip
        for area in result.areas.classes:
            totals[area.name] = totals.get(area.name, 0.0) + area.km2
        published.append({"pair_id": stack.pair_id, "map": result.map_uri, "areas": result.areas_uri,
                          "quicklook": result.quicklook_uri, "tiles_predicted": result.tiles_predicted})  # fmt: skip
        folder, name = result.quicklook_uri.rsplit("/", 1)
        png = base64.b64encode(open_storage(folder).read_bytes(name)).decode()
        figures.append(f"<figure><img src='data:image/png;base64,{png}' style='max-width:100%'>"
                       f"<figcaption>{stack.pair_id}: {result.map_uri}</figcaption></figure>")  # fmt: skip
        print(f"mapped {stack.pair_id}: {result.map_uri} ({result.tiles_predicted}/{result.tiles} tiles now)")
    for name, km2 in sorted(totals.items()):
        areas.log_metric(f"{name}_km2", round(km2, 4))
    maps.metadata.update({"uri": prefix, "maps": len(published)})
    with open(maps.path, "w") as index:
        json.dump(published, index, indent=2)
    with open(quicklook.path, "w") as page:
        page.write(f"<html><body><h1>CloudLULC maps of {region}</h1>{''.join(figures)}</body></html>")
    return prefix
