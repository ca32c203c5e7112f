"""A region's scene stacks mapped through the served model, with the region's class-area totals.

The mapping pipeline step is a face of this loop: it finds the Triton the maps go to, maps each
ingested stack into ``<maps>/<region>/<date>_<pair>.tif`` with its sidecars, and adds up the areas.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloudlulc.ingest.scene_stacks import SceneStack, scene_stacks
from cloudlulc.io.storage import open_storage
from cloudlulc.mapping.options import DEFAULT_MAP_OPTIONS, MapOptions
from cloudlulc.serving.regional import loopback_key, map_with_triton, resolve_grpc_url, served_repository

GRPC_URL_ENV = "TRITON_GRPC_URL"
DEFAULT_LOCAL_DIR = "outputs/triton"


@dataclass(frozen=True)
class TritonEndpoint:
    """Where maps are predicted: the gRPC URL, the repository pinning the version, the shared-memory key."""

    grpc_url: str
    repository: str | None
    shared_memory_key: str | None

    @classmethod
    def find(
        cls, triton_url: str | None, local_dir: str | Path | None, repository: str | None = None
    ) -> TritonEndpoint:
        """``triton_url``, else ``TRITON_GRPC_URL``, else the local Triton running under ``local_dir``.

        ``repository`` names the model repository whose ``served.json`` pins the version; by default
        the local Triton's, else ``TRITON_MODEL_REPOSITORY``.
        """
        given = triton_url or os.environ.get(GRPC_URL_ENV, "")
        folder = local_dir or DEFAULT_LOCAL_DIR
        grpc_url = resolve_grpc_url(given, folder)
        return cls(grpc_url, served_repository(given, folder, repository), loopback_key(grpc_url, folder))


@dataclass(frozen=True)
class PublishedMap:
    """One stack's published map and sidecars."""

    pair_id: str
    map_uri: str
    areas_uri: str
    quicklook_uri: str
    tiles_predicted: int
    s2_only: bool


@dataclass
class RegionMaps:
    """The maps of one region and their class areas added up (km2)."""

    prefix: str
    maps: list[PublishedMap] = field(default_factory=list)
    totals_km2: dict[str, float] = field(default_factory=dict)

    def index(self) -> list[dict[str, object]]:
        """One JSON-ready row a map (what the pipeline's ``maps`` artifact holds)."""
        return [
            {
                "pair_id": item.pair_id,
                "map": item.map_uri,
                "areas": item.areas_uri,
                "quicklook": item.quicklook_uri,
                "tiles_predicted": item.tiles_predicted,
                "modalities": "S2 only" if item.s2_only else "S2+S1",
            }
            for item in self.maps
        ]

    def html(self, region: str) -> str:
        """A page of every map's quicklook (embedded), for the Kubeflow UI."""
        figures = []
        for item in self.maps:
            folder, name = item.quicklook_uri.rsplit("/", 1)
            png = base64.b64encode(open_storage(folder).read_bytes(name)).decode()
            caption = f"{item.pair_id}{' (Sentinel-2 only)' if item.s2_only else ''}: {item.map_uri}"
            figures.append(
                f"<figure><img src='data:image/png;base64,{png}' style='max-width:100%'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        title = f"CloudLULC maps of {html.escape(region)}"
        return f"<html><body><h1>{title}</h1>{''.join(figures)}</body></html>"


def map_region(
    scenes_uri: str,
    maps_uri: str,
    region: str,
    endpoint: TritonEndpoint,
    *,
    model_name: str,
    options: MapOptions = DEFAULT_MAP_OPTIONS,
    s2_only: bool = False,
    echo: Callable[[str], None] = print,
) -> RegionMaps:
    """Map every scene stack under ``scenes_uri`` into ``<maps_uri>/<region>/<date>_<pair>.tif``.

    Sentinel-2-only stacks are mapped from Sentinel-2 alone when ``s2_only`` is set and skipped
    (saying why) otherwise. Maps are resumable and published atomically, so a rerun of a mapped region
    predicts nothing again.
    """
    result = RegionMaps(prefix=f"{maps_uri.rstrip('/')}/{region}")
    for stack in scene_stacks(scenes_uri):
        if stack.sar is None and not s2_only:
            echo(f"skipped {stack.pair_id}: no Sentinel-1 partner (set s2_only to map it from Sentinel-2 alone)")
            continue
        _map_stack(stack, result, endpoint, model_name=model_name, options=options, echo=echo)
    return result


def _map_stack(
    stack: SceneStack,
    result: RegionMaps,
    endpoint: TritonEndpoint,
    *,
    model_name: str,
    options: MapOptions,
    echo: Callable[[str], None],
) -> None:
    out_uri = f"{result.prefix}/{stack.s2_datetime:%Y%m%d}_{stack.pair_id}.tif"
    mapped = map_with_triton(
        stack.optical,
        stack.sar,
        out_uri,
        endpoint.grpc_url,
        model_name=model_name,
        repository=endpoint.repository,
        options=options,
        shared_memory_key=endpoint.shared_memory_key,
        progress=False,
    )
    for area in mapped.areas.classes:
        result.totals_km2[area.name] = result.totals_km2.get(area.name, 0.0) + area.km2
    result.maps.append(
        PublishedMap(
            stack.pair_id,
            mapped.map_uri,
            mapped.areas_uri,
            mapped.quicklook_uri,
            mapped.tiles_predicted,
            stack.sar is None,
        )
    )
    echo(f"mapped {stack.pair_id}: {mapped.map_uri} ({mapped.tiles_predicted}/{mapped.tiles} tiles now)")
