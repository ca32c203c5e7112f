"""Writing one pair: CloudLULC-Set chips (training refresh) or an aligned scene stack (mapping).

Every file is written to a local working folder first, hashed, then published through the storage
layer (atomic on both backends). The returned entry lists each file with its SHA-256; the caller
commits it (see ``manifest``), which is what makes the pair visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm import tqdm

from cloudlulc import schema
from cloudlulc.data.layout import SCENE_DIR as SCENE_DIR  # kept for importers that predate SceneLayout
from cloudlulc.data.layout import SceneLayout, Split, standard_record
from cloudlulc.data.metadata import DATE_TAG, SampleMetadata, class_fractions, cloud_fractions
from cloudlulc.errors import DataError
from cloudlulc.ingest.earth_search import PROCESSING_BASELINE
from cloudlulc.ingest.grid import Chip, Grid
from cloudlulc.ingest.manifest import sha256_of
from cloudlulc.ingest.options import ChipOptions
from cloudlulc.ingest.prepare import PairViews, WindowData, read_window
from cloudlulc.io.rasters import RasterProfile, apply_profile_metadata, publish_cog, write_raster
from cloudlulc.io.storage import Storage
from cloudlulc.logs import progress_enabled

log = logging.getLogger(__name__)

SCENE_WINDOW = 512
"""Rows and columns read and written at a time when building a scene stack (bounds memory)."""


def split_of(epsg: int, chip: Chip, fractions: tuple[float, float, float]) -> Split:
    """The split of a chip location, from a hash of (CRS, lattice column, lattice row).

    Every date of one place falls in the same split, so no test location leaks into training.
    """
    digest = hashlib.sha256(f"{epsg}:{chip.column}:{chip.row}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    train, val, _ = fractions
    return "train" if draw < train else "val" if draw < train + val else "test"


def chip_name(s2_id: str, epsg: int, chip: Chip) -> str:
    """Unique and stable: one Sentinel-2 acquisition belongs to at most one pair."""
    return f"{s2_id}_{epsg}_{chip.column}_{chip.row}"


def _date(iso: str) -> str:
    return iso[:10]


def _publish(local: Path, key: str, storage: Storage, checksums: dict[str, str]) -> None:
    checksums[key] = sha256_of(local)
    storage.upload_file(local, key)
    local.unlink()


def _optical_profile(views: PairViews, grid: Grid, window: Window) -> RasterProfile:
    s2 = views.pair.s2
    tags = {
        DATE_TAG: _date(s2.when.isoformat()),
        "SOURCE_ITEM": s2.id,
        "PROCESSING_BASELINE": str(s2.item.properties.get(PROCESSING_BASELINE, "")),
    }
    band_tags = [{"BOA_ADD_OFFSET": f"{views.offsets_dn[band]:g}"} for band in schema.S2_BANDS]
    return RasterProfile(grid.crs, grid.window_transform(window), schema.S2_NODATA_DN, schema.S2_BANDS, tags, band_tags)


def _sar_profile(views: PairViews, grid: Grid, window: Window, polarisation: str) -> RasterProfile:
    s1 = views.pair.s1
    assert s1 is not None, "a Sentinel-2-only pair has no SAR layer"
    tags = {DATE_TAG: _date(s1.when.isoformat()), "SOURCE_ITEM": s1.id, "POLARISATION": polarisation, "UNITS": "dB"}
    descriptions = tuple(polarisation.split(","))  # "VV" for a chip, "VV,VH" for a scene stack
    return RasterProfile(grid.crs, grid.window_transform(window), float("nan"), descriptions, tags)


def _label_profile(views: PairViews, grid: Grid, window: Window) -> RasterProfile:
    assert views.label_source is not None
    tags = {"SOURCE": views.label_source.uri, "CLASS_NAMES": json.dumps(dict(enumerate(schema.CLASS_NAMES)))}
    return RasterProfile(
        grid.crs, grid.window_transform(window), schema.IGNORE_INDEX, tags=tags, colormap=schema.colour_table()
    )


def _mask_profile(grid: Grid, window: Window) -> RasterProfile:
    return RasterProfile(grid.crs, grid.window_transform(window), tags={"CODES": json.dumps(schema.CLOUD_MASK_NAMES)})


def _chip_metadata(name: str, split: Split, views: PairViews, data: WindowData, epsg: int) -> dict[str, Any]:
    pair = views.pair
    assert pair.s1 is not None and pair.gap_days is not None, "training chips need both sensors"
    if data.cloud_mask is not None:
        cover, opaque, shadow = cloud_fractions(data.cloud_mask)
        source = "scl"
    else:  # no scene classification: the scene's figure is the best estimate there is
        cover, opaque, shadow = (pair.s2.cloud_cover or 0.0) / 100.0, math.nan, math.nan
        source = "scene"
    row = SampleMetadata(
        name=name,
        split=split,
        cloud_cover=cover,
        opaque_cloud_fraction=opaque,
        shadow_fraction=shadow,
        optical_date=_date(pair.s2.when.isoformat()),
        sar_date=_date(pair.s1.when.isoformat()),
        time_gap_days=round(pair.gap_days, 3),
        crs=f"EPSG:{epsg}",
        width=data.valid.shape[1],
        height=data.valid.shape[0],
        nodata_fraction=float(1.0 - data.valid.mean()),
        class_fractions=class_fractions(data.label) if data.label is not None else {},
    ).row()
    row.update(pair_id=pair.id, cloud_cover_source=source, label_unmapped_fraction=data.unmapped_label_fraction)
    return row


def write_chips(
    views: PairViews,
    grid: Grid,
    candidates: list[Chip],
    storage: Storage,
    options: ChipOptions,
    work_dir: Path,
    *,
    progress: bool,
) -> tuple[list[dict[str, Any]], dict[str, str], int]:
    """Write the chips of a pair that hold enough data; returns (outputs, checksums, chips skipped)."""
    epsg = grid.crs.to_epsg() or 0
    outputs: list[dict[str, Any]] = []
    checksums: dict[str, str] = {}
    skipped = 0
    shown = progress_enabled(progress)
    for chip in tqdm(candidates, desc=f"chips {views.pair.s2.id}", unit="chip", disable=not shown, leave=False):
        data = read_window(views, chip.window)
        if data.valid.mean() < options.min_valid_fraction:
            skipped += 1
            continue
        name = chip_name(views.pair.s2.id, epsg, chip)
        split = split_of(epsg, chip, options.split_fractions)
        record = standard_record(name, split, with_clear=False, with_label=data.label is not None)
        if data.cloud_mask is None:
            record = replace(record, cloud_mask=None)
        files: list[tuple[str | None, np.ndarray | None, RasterProfile | None]] = [
            (record.sar_vv, data.sar_db[0], _sar_profile(views, grid, chip.window, "VV")),
            (record.sar_vh, data.sar_db[1], _sar_profile(views, grid, chip.window, "VH")),
            (record.label, data.label, _label_profile(views, grid, chip.window) if data.label is not None else None),
            (record.cloud_mask, data.cloud_mask, _mask_profile(grid, chip.window)),
            (record.opt_cloudy, data.dn, _optical_profile(views, grid, chip.window)),
        ]
        for key, array, profile in files:
            if key is None or array is None or profile is None:
                continue
            local = work_dir / key
            write_raster(str(local), array, profile)
            _publish(local, key, storage, checksums)
        outputs.append({"record": asdict(record), "metadata": _chip_metadata(name, split, views, data, epsg)})
    log.info("chips %s: %d written, %d below the valid fraction", views.pair.s2.id, len(outputs), skipped)
    return outputs, checksums, skipped


def write_scene(
    views: PairViews, grid: Grid, storage: Storage, work_dir: Path, *, progress: bool
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Write the pair as an aligned stack on ``grid``: optical, SAR (dB), cloud mask and label COGs.

    Built window by window into tiled GeoTIFFs, then converted to COGs, so memory does not grow with
    the scene. A Sentinel-2-only pair has no ``sar.tif``. Raises a DataError naming the Sentinel-2
    item when no pixel holds both sensors' data (Sentinel-2's alone for a Sentinel-2-only pair).
    """
    whole = Window(0, 0, grid.width, grid.height)
    layers: dict[str, tuple[int, str, RasterProfile]] = {
        "optical": (len(schema.S2_BANDS), "uint16", _optical_profile(views, grid, whole))
    }
    if views.pair.s1 is not None:
        layers["sar"] = (2, "float32", _sar_profile(views, grid, whole, ",".join(schema.S1_POLARISATIONS)))
    if views.scl is not None:
        layers["cloud_mask"] = (1, "uint8", _mask_profile(grid, whole))
    if views.label is not None:
        layers["label"] = (1, "uint8", _label_profile(views, grid, whole))
    partial = {name: work_dir / f"{name}.partial.tif" for name in layers}
    datasets = {
        name: _create(partial[name], grid, count, dtype, profile) for name, (count, dtype, profile) in layers.items()
    }
    valid_pixels = 0
    windows = [
        Window(col, row, min(SCENE_WINDOW, grid.width - col), min(SCENE_WINDOW, grid.height - row))
        for row in range(0, grid.height, SCENE_WINDOW)
        for col in range(0, grid.width, SCENE_WINDOW)
    ]
    try:
        shown = progress_enabled(progress)
        for window in tqdm(windows, desc=f"scene {views.pair.s2.id}", unit="window", disable=not shown, leave=False):
            data = read_window(views, window)
            valid_pixels += int(data.valid.sum())
            datasets["optical"].write(data.dn, window=window)
            if "sar" in datasets:
                datasets["sar"].write(data.sar_db, window=window)
            if data.cloud_mask is not None:
                datasets["cloud_mask"].write(data.cloud_mask, 1, window=window)
            if data.label is not None:
                datasets["label"].write(data.label, 1, window=window)
    finally:
        for dataset in datasets.values():
            dataset.close()
    log.info("scene %s: %d windows read, %d valid pixels", views.pair.s2.id, len(windows), valid_pixels)
    if valid_pixels == 0:
        held = f"both Sentinel-2 and Sentinel-1 ({views.pair.s1.id})" if views.pair.s1 else "Sentinel-2 (S2-only)"
        raise DataError(views.pair.s2.id, f"no pixel of the area of interest holds {held} data")
    checksums: dict[str, str] = {}
    files: dict[str, str] = {}
    for name in layers:
        final = work_dir / f"{name}.tif"
        publish_cog(
            partial[name], str(final), overview_resampling="nearest" if name in {"cloud_mask", "label"} else "average"
        )
        partial[name].unlink()
        files[name] = SceneLayout.role_key(views.pair.id, name)
        _publish(final, files[name], storage, checksums)
    return [
        {"name": views.pair.id, "files": files, "valid_fraction": valid_pixels / (grid.width * grid.height)}
    ], checksums


def _create(path: Path, grid: Grid, count: int, dtype: str, profile: RasterProfile) -> Any:
    dataset = rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=count,
        dtype=dtype,
        crs=grid.crs,
        transform=grid.transform,
        nodata=profile.nodata,
        tiled=True,
        blockxsize=SCENE_WINDOW,
        blockysize=SCENE_WINDOW,
        compress="deflate",
        bigtiff="if_safer",
    )
    apply_profile_metadata(dataset, profile)
    return dataset
