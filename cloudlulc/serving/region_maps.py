"""A region's scene stacks mapped through the served model, with the region's class-area totals.

The mapping pipeline step is a face of this loop: it finds the Triton the maps go to, maps each
ingested stack into ``<maps>/<region>/<date>_<pair>.tif`` with its sidecars, and adds up the areas.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cloudlulc.errors import DataError
from cloudlulc.ingest.scene_stacks import SceneStack, scene_stacks
from cloudlulc.io.rasters import open_raster
from cloudlulc.io.storage import join_uri, open_storage
from cloudlulc.mapping.options import DEFAULT_MAP_OPTIONS, MapOptions
from cloudlulc.products.build import ProductOutcome, SceneMap, build_product, item_uri
from cloudlulc.products.options import ProductOptions
from cloudlulc.products.region import footprint, region_grid
from cloudlulc.serving.regional import loopback_key, map_with_triton, resolve_grpc_url, served_repository
from cloudlulc.serving.repository import ModelRepository

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
    """The scene maps of one region (areas of a region come from its product, never from adding scenes up)."""

    prefix: str
    maps: list[PublishedMap] = field(default_factory=list)
    scene_maps: list[SceneMap] = field(default_factory=list)
    product: ProductOutcome | None = None

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


def map_region(
    scenes_uri: str,
    maps_uri: str,
    region: str,
    endpoint: TritonEndpoint,
    *,
    model_name: str,
    options: MapOptions = DEFAULT_MAP_OPTIONS,
    s2_only: bool = False,
    product: ProductOptions | None = None,
    work_dir: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> RegionMaps:
    """Map the scene stacks under ``scenes_uri`` into ``<maps_uri>/<region>/<date>_<pair>.tif``; then the product.

    With ``product``, only the stacks of its date window are mapped, and they are combined into the
    region's product for the target date, published in the STAC catalogue rooted at ``maps_uri``
    (``cloudlulc.products``). Sentinel-2-only stacks are mapped from Sentinel-2 alone when ``s2_only``
    is set and skipped (saying why) otherwise. Maps are resumable and published atomically, so a rerun
    of a mapped region predicts nothing again, and a published product is not built again. The partial
    maps of ``s3://`` outputs live under ``work_dir`` when given (one folder per output: a volume that
    outlives the pod lets a retried step resume inside a scene), else in the machine's temporary folder.
    """
    result = RegionMaps(prefix=join_uri(maps_uri, region))
    stacks = scene_stacks(scenes_uri)
    if product is not None:
        if _published(maps_uri, product, echo):
            return result
        stacks = window_stacks(scenes_uri, product)
    for stack in stacks:
        if stack.sar is None and not s2_only:
            echo(f"skipped {stack.pair_id}: no Sentinel-1 partner (set s2_only to map it from Sentinel-2 alone)")
            continue
        _map_stack(stack, result, endpoint, model_name=model_name, options=options, work_dir=work_dir, echo=echo)
    if product is not None:
        served_model, served_version, registered = _lineage(result, endpoint, model_name)
        result.product = build_product(
            result.scene_maps,
            product,
            maps_uri,
            served_model=served_model,
            served_version=served_version,
            registered=registered,
            echo=echo,
        )
    return result


def window_stacks(scenes_uri: str, product: ProductOptions) -> list[SceneStack]:
    """The stacks acquired in the product's date window; none is a DataError naming the window.

    Checked before a server is looked for: a date with no acquisitions is the input's problem (exit 3).
    """
    first = product.target_date - timedelta(days=product.window_days)
    stacks = scene_stacks(scenes_uri)
    chosen = [stack for stack in stacks if first <= stack.s2_datetime.date() <= product.target_date]
    if not chosen:
        raise DataError(
            scenes_uri,
            f"no scene stack acquired between {first} and {product.target_date} ({len(stacks)} stack(s) there); "
            "ingest the dates first or widen --window-days",
        )
    aoi = region_grid(product.aoi, product.crs).aoi
    meeting = [stack for stack in chosen if footprint(stack.optical).intersects(aoi)]
    if not meeting:
        raise DataError(
            product.aoi, f"the area of interest meets none of the {len(chosen)} scene stack(s) of the window"
        )
    return meeting


def _published(maps_uri: str, product: ProductOptions, echo: Callable[[str], None]) -> bool:
    """Whether the product is in the catalogue already (then nothing is mapped again)."""
    where = item_uri(maps_uri, product)
    parent, _, name = where.rpartition("/")
    if open_storage(parent).exists(name):
        echo(f"product {product.item_id}: already published at {where}; nothing to do")
        return True
    return False


def _lineage(
    result: RegionMaps, endpoint: TritonEndpoint, model_name: str
) -> tuple[str, str, tuple[str | None, str | None]]:
    """The served model and version that answered (the maps' tag), and the registered version behind it."""
    if not result.scene_maps:
        return model_name, "", (None, None)
    with open_raster(result.scene_maps[0].map_uri) as dataset:
        _, served_model, version = (dataset.tags().get("CLOUDLULC_MODEL", "") + "::").split(":")[:3]
    record = ModelRepository(endpoint.repository).served_record(served_model) if endpoint.repository else None
    registered: tuple[str | None, str | None] = (None, None)
    if record is not None and str(record.get("version")) == version:
        registered = (record.get("registered_model") or None, str(record.get("registered_version") or "") or None)
    return served_model or model_name, version, registered


def _map_stack(
    stack: SceneStack,
    result: RegionMaps,
    endpoint: TritonEndpoint,
    *,
    model_name: str,
    options: MapOptions,
    work_dir: str | Path | None,
    echo: Callable[[str], None],
) -> None:
    out_uri = f"{result.prefix}/{stack.s2_datetime:%Y%m%d}_{stack.pair_id}.tif"
    scene_work = Path(work_dir) / hashlib.sha256(out_uri.encode()).hexdigest()[:16] if work_dir else None
    mapped = map_with_triton(
        stack.optical,
        stack.sar,
        out_uri,
        endpoint.grpc_url,
        model_name=model_name,
        repository=endpoint.repository,
        options=options,
        confidence=True,
        shared_memory_key=endpoint.shared_memory_key,
        progress=False,
        work_dir=scene_work,
    )
    result.scene_maps.append(SceneMap(stack, mapped.map_uri, str(mapped.confidence_uri)))
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
