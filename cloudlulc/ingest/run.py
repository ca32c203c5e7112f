"""The ingest stage: search, pair, prepare and write every new pair, then publish the index.

A pair that fails (a missing band, an unreachable or corrupt asset, no data) is reported with the
reason and left uncommitted, so the next run retries it; the others go ahead. The run's exit status
says whether any pair failed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry

from cloudlulc.errors import DataError
from cloudlulc.ingest.coregister import GridReader
from cloudlulc.ingest.grid import PIXEL_M, chips, grid_crs_for, snapped_grid, to_crs
from cloudlulc.ingest.labels import load_table, lookup_array
from cloudlulc.ingest.manifest import (
    MANIFEST_KEY,
    check_params,
    commit_entry,
    committed_pairs,
    publish_index,
    sweep_temporaries,
)
from cloudlulc.ingest.outputs import ChipOptions, write_chips, write_scene
from cloudlulc.ingest.pairing import Pair, Pairing, Unpaired, pair_acquisitions
from cloudlulc.ingest.prepare import LabelSource, open_pair
from cloudlulc.ingest.stac import SearchQuery, search
from cloudlulc.io.gdal_env import bounded_block_cache
from cloudlulc.io.retry import ASSET_RETRY, RetryPolicy
from cloudlulc.io.storage import Storage, open_storage

log = logging.getLogger(__name__)

Mode = Literal["chips", "scenes"]
INGEST_CACHE_MB = 16
"""GDAL block cache of an ingest run: each source block is read for one chip (two for coarse bands), so
caching buys nothing; with 128 MB, peak memory grew by 400 MB from a 1024 to a 4096-pixel scene."""
GEOMETRY_SLACK = 0.05
"""Footprints in catalogues are approximate: a chip is read when at least (min valid - this) of it lies inside."""


@dataclass(frozen=True)
class IngestOptions:
    """Where and how to write; everything but ``out`` and ``retry`` is recorded with the prefix."""

    out: str
    mode: Mode = "chips"
    chips: ChipOptions = field(default_factory=ChipOptions)
    label_source: str | None = None
    """Reference land-cover raster (chips and scenes get a label layer), local, s3:// or http(s)."""
    label_table: str = "worldcover"
    """Built-in table name or CSV (source,target) remapping the label source to class ids."""
    retry: RetryPolicy = ASSET_RETRY
    stale_temp_age_s: float = 3600.0
    """Temporary files older than this in a local output are leftovers of killed runs and are removed."""
    s2_only: bool = False
    """Also ingest Sentinel-2 acquisitions without a Sentinel-1 partner, as stacks without ``sar.tif``
    (scenes only: for mapping with a model trained with modality dropout; training needs both)."""

    def __post_init__(self) -> None:
        if self.mode not in ("chips", "scenes"):
            raise DataError("mode", f"must be 'chips' or 'scenes', got {self.mode!r}")
        if self.s2_only and self.mode != "scenes":
            raise DataError("s2-only", "Sentinel-2-only stacks are for mapping: use it with --mode scenes")

    def params(self) -> dict[str, Any]:
        """The processing choices a prefix is bound to (a rerun with others is refused)."""
        table = load_table(self.label_table) if self.label_source else None
        return {
            "mode": self.mode,
            "chip_size": self.chips.chip_size if self.mode == "chips" else None,
            "min_valid_fraction": self.chips.min_valid_fraction if self.mode == "chips" else None,
            "split_fractions": list(self.chips.split_fractions) if self.mode == "chips" else None,
            "label_source": self.label_source,
            "label_table": {str(k): v for k, v in sorted(table.items())} if table else None,
            "pixel_m": PIXEL_M,
        }


@dataclass(frozen=True)
class PairOutcome:
    """What happened to one pair in this run."""

    pair_id: str
    status: Literal["ingested", "already ingested", "failed"]
    outputs: int = 0
    skipped_chips: int = 0
    error: str | None = None


@dataclass(frozen=True)
class IngestReport:
    """The run's result: outcome per pair, unpaired acquisitions, the grid and the index files written."""

    out: str
    crs: str
    pairs: tuple[PairOutcome, ...]
    unpaired: tuple[Unpaired, ...]
    index_written: tuple[str, ...]

    @property
    def failed(self) -> tuple[PairOutcome, ...]:
        """Pairs that failed in this run (retried by the next)."""
        return tuple(p for p in self.pairs if p.status == "failed")

    def summary(self) -> str:
        """Human-readable lines for the command line."""
        counts = {s: sum(p.status == s for p in self.pairs) for s in ("ingested", "already ingested", "failed")}
        lines = [
            f"grid: {self.crs} at {PIXEL_M:g} m (the area of interest's dominant UTM zone)",
            "pairs: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
        ]
        lines += [
            f"  {p.pair_id}: {p.outputs} outputs, {p.skipped_chips} chips skipped"
            for p in self.pairs
            if p.status == "ingested"
        ]
        lines += [f"  FAILED {p.pair_id}: {p.error}" for p in self.failed]
        stacked = {p.pair_id for p in self.pairs}
        lines += [
            f"  unpaired {u.s2.id}: {u.reason}" + ("; stacked Sentinel-2 only" if u.alone().id in stacked else "")
            for u in self.unpaired
        ]
        index = ", ".join(self.index_written) if self.index_written else "unchanged"
        lines.append(f"index ({MANIFEST_KEY} written last): {index}")
        lines.append(f"output: {self.out}")
        return "\n".join(lines)


def ingest(query: SearchQuery, options: IngestOptions, *, progress: bool = True) -> IngestReport:
    """Search the catalog, pair, and ingest every pair not yet in the output's manifest."""
    found = search(query)
    pairing = pair_acquisitions(found, query.aoi, query.pair_window_days)
    return ingest_pairing(pairing, query.aoi, options, progress=progress)


def ingest_pairing(
    pairing: Pairing, aoi: BaseGeometry, options: IngestOptions, *, progress: bool = True
) -> IngestReport:
    """Ingest the pairs of ``pairing`` (skipping committed ones) and publish the index.

    With ``options.s2_only`` the unpaired Sentinel-2 acquisitions follow as Sentinel-2-only stacks.
    """
    storage = open_storage(options.out)
    label_source = None
    if options.label_source:
        label_source = LabelSource(options.label_source, lookup_array(load_table(options.label_table)))
    removed = sweep_temporaries(storage, options.stale_temp_age_s)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    check_params(storage, options.params())
    crs = grid_crs_for(aoi)
    done = committed_pairs(storage)
    outcomes: list[PairOutcome] = []
    alone = [unpaired.alone() for unpaired in pairing.unpaired] if options.s2_only else []
    for pair in [*pairing.pairs, *alone]:
        if pair.id in done:
            outcomes.append(PairOutcome(pair.id, "already ingested"))
            continue
        try:
            entry = _ingest_pair(pair, aoi, crs, storage, options, label_source, progress=progress)
        except DataError as error:
            log.error("%s: %s", pair.id, error)
            outcomes.append(PairOutcome(pair.id, "failed", error=str(error)))
            continue
        if not commit_entry(storage, entry):
            log.info("%s was committed by a concurrent run", pair.id)
        outcomes.append(PairOutcome(pair.id, "ingested", len(entry["outputs"]), entry["skipped_chips"]))
    written = publish_index(storage)
    return IngestReport(storage.uri, f"EPSG:{crs.to_epsg()}", tuple(outcomes), pairing.unpaired, tuple(written))


def _ingest_pair(
    pair: Pair,
    aoi: BaseGeometry,
    crs: CRS,
    storage: Storage,
    options: IngestOptions,
    label_source: LabelSource | None,
    *,
    progress: bool,
) -> dict[str, Any]:
    """Write one pair's chips or scene stack; the returned entry is what the manifest commits."""
    region = _pair_region(pair, aoi, crs)
    entry = _pair_entry(pair, crs, options.mode)
    with tempfile.TemporaryDirectory(prefix="cloudlulc-ingest-") as folder, bounded_block_cache(INGEST_CACHE_MB):
        work_dir = Path(folder)
        if options.mode == "chips":
            entry.update(_ingest_chips(pair, region, crs, storage, options, label_source, work_dir, progress))
        else:
            grid = snapped_grid(region, crs, PIXEL_M)
            with GridReader(grid, options.retry) as reader:
                views = open_pair(reader, pair, label_source)
                outputs, checksums = write_scene(views, grid, storage, work_dir, progress=progress)
            entry.update(outputs=outputs, checksums=checksums)
    return entry


def _pair_region(pair: Pair, aoi: BaseGeometry, crs: CRS) -> BaseGeometry:
    """The part of the area of interest both scenes cover, in the output CRS; none is a DataError."""
    overlap = aoi.intersection(pair.s2.footprint)
    if pair.s1 is not None:
        overlap = overlap.intersection(pair.s1.footprint)
    if overlap.is_empty or overlap.area == 0:
        partner = f" and Sentinel-1 {pair.s1.id}" if pair.s1 else ""
        raise DataError(pair.s2.id, f"no overlap of the area of interest, this scene{partner}")
    return to_crs(overlap, crs)


def _pair_entry(pair: Pair, crs: CRS, mode: Mode) -> dict[str, Any]:
    """The manifest fields that describe the pair itself, before anything is written."""
    return {
        "pair_id": pair.id,
        "s2_id": pair.s2.id,
        "s1_id": pair.s1.id if pair.s1 else "",
        "s2_datetime": pair.s2.when.isoformat().replace("+00:00", "Z"),
        "s1_datetime": pair.s1.when.isoformat().replace("+00:00", "Z") if pair.s1 else "",
        "gap_days": round(pair.gap_days, 3) if pair.gap_days is not None else "",
        "s2_cloud_cover": pair.s2.cloud_cover,
        "s1_coverage": round(pair.coverage, 4),
        "crs": f"EPSG:{crs.to_epsg()}",
        "mode": mode,
        "skipped_chips": 0,
    }


def _ingest_chips(
    pair: Pair,
    region: BaseGeometry,
    crs: CRS,
    storage: Storage,
    options: IngestOptions,
    label_source: LabelSource | None,
    work_dir: Path,
    progress: bool,
) -> dict[str, Any]:
    """Chips whose lattice cell the region fills (up to the valid-data slack); entry fields to add."""
    chip_options = options.chips
    grid = snapped_grid(region, crs, chip_options.chip_size * PIXEL_M)
    threshold = chip_options.min_valid_fraction - GEOMETRY_SLACK
    candidates = [
        chip
        for chip in chips(grid, chip_options.chip_size)
        if grid.window_box(chip.window).intersection(region).area >= threshold * grid.window_box(chip.window).area
    ]
    if not candidates:
        return {"outputs": [], "checksums": {}, "note": "the overlap holds no whole chip"}
    with GridReader(grid, options.retry) as reader:
        views = open_pair(reader, pair, label_source)
        outputs, checksums, skipped = write_chips(
            views, grid, candidates, storage, chip_options, work_dir, progress=progress
        )
    if not outputs:
        assert pair.s1 is not None  # chips are made of pairs only (IngestOptions)
        raise DataError(
            pair.s2.id,
            f"all {len(candidates)} chips over the area of interest lack data (Sentinel-2 or Sentinel-1 "
            f"{pair.s1.id} nodata on more than {1 - chip_options.min_valid_fraction:.0%} of each)",
        )
    return {"outputs": outputs, "checksums": checksums, "skipped_chips": skipped}
