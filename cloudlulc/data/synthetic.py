"""Write a synthetic CloudLULC-Set: scenes from ``synthetic_scene.py`` saved in the exact published layout.

Same parameters, same bytes: every sample draws from its own generator seeded by (seed, index), and
GeoTIFFs carry no timestamps. A run is resumable and safe to kill: each file appears atomically, the
parameters are recorded first (a rerun with other parameters is refused), and the metadata table and
split files, which make the samples visible to readers, are written last.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from tqdm import tqdm

from cloudlulc import schema
from cloudlulc.data.layout import DatasetLayout, SampleRecord, Split, standard_record
from cloudlulc.data.metadata import (
    DATE_TAG,
    SampleMetadata,
    class_fractions,
    cloud_fractions,
    gap_days,
    metadata_frame,
    write_metadata,
)
from cloudlulc.data.synthetic_scene import DEFAULT_PHYSICS, Physics, Scene, make_scene
from cloudlulc.errors import DataError
from cloudlulc.io.claim import claim_output
from cloudlulc.io.rasters import RasterProfile, write_raster
from cloudlulc.io.storage import is_s3_uri, remove_stale_temporaries
from cloudlulc.logs import progress_enabled
from cloudlulc.workers import worker_pool

log = logging.getLogger(__name__)

PARAMS_FILE = "synth.json"
PIXEL_SIZE_M = 10.0
FIRST_DATE = date(2024, 1, 1)
MAX_SAR_GAP_DAYS = 6


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic set; all of them decide its bytes."""

    n: int = 200
    size: int = 512
    seed: int = 0
    train_fraction: float = 0.7
    val_fraction: float = 0.15
    boa_add_offset: int = schema.S2_BASELINE_OFFSET_DN
    """L2A offset written into the files: -1000 (baseline >= 04.00) or 0 (older products)."""
    physics: Physics = DEFAULT_PHYSICS
    """The world's physics (robustness runs vary it); the default is recorded only when changed."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {self.size}")
        if not (self.train_fraction > 0 and self.val_fraction >= 0 and self.train_fraction + self.val_fraction <= 1):
            raise ValueError("train_fraction and val_fraction must be positive and sum to at most 1")
        if self.boa_add_offset not in (0, schema.S2_BASELINE_OFFSET_DN):
            raise ValueError(f"boa_add_offset must be 0 or {schema.S2_BASELINE_OFFSET_DN}")


@dataclass(frozen=True)
class Georeference:
    """Where and when a synthetic patch lies: a UTM grid at 10 m and two acquisition dates."""

    crs: CRS
    transform: Affine
    optical_date: str
    sar_date: str


def sample_name(index: int) -> str:
    """File stem of the sample at ``index``."""
    return f"synth_{index:06d}"


def assign_splits(config: SynthConfig) -> list[Split]:
    """Split of every index: a seeded shuffle cut by the configured fractions (at least one test sample)."""
    order = np.random.default_rng([config.seed, 2**31 - 1]).permutation(config.n)
    n_train = round(config.n * config.train_fraction)
    n_val = round(config.n * config.val_fraction)
    if config.n >= 3 and n_train + n_val >= config.n:
        n_train = min(n_train, config.n - 2)
        n_val = max(1, min(n_val, config.n - n_train - 1))
    splits: list[Split] = ["test"] * config.n
    for position, index in enumerate(order):
        splits[index] = "train" if position < n_train else "val" if position < n_train + n_val else "test"
    return splits


def georeference(rng: np.random.Generator, size: int) -> Georeference:
    """A random UTM zone and origin on the 10 m grid, and SAR within +/- 6 days of the optical date."""
    zone = int(rng.integers(1, 61))
    epsg = (32600 if rng.random() < 0.8 else 32700) + zone
    west = round(float(rng.uniform(200_000, 800_000 - size * PIXEL_SIZE_M)), -1)
    north = round(float(rng.uniform(1_000_000, 9_000_000)), -1)
    optical = FIRST_DATE + timedelta(days=int(rng.integers(0, 730)))
    sar = optical - timedelta(days=int(rng.integers(-MAX_SAR_GAP_DAYS, MAX_SAR_GAP_DAYS + 1)))
    transform = Affine(PIXEL_SIZE_M, 0.0, west, 0.0, -PIXEL_SIZE_M, north)
    return Georeference(CRS.from_epsg(epsg), transform, optical.isoformat(), sar.isoformat())


def write_sample(
    layout: DatasetLayout, record: SampleRecord, scene: Scene, geo: Georeference, boa_add_offset: int
) -> None:
    """Write one sample's six files (each atomically)."""
    grid = {"crs": geo.crs, "transform": geo.transform}
    optical_tags = {
        DATE_TAG: geo.optical_date,
        "PROCESSING_BASELINE": "05.10" if boa_add_offset else "03.01",
        "SOURCE": "cloudlulc synthetic generator",
    }
    band_tags = [{"BOA_ADD_OFFSET": str(boa_add_offset)}] * len(schema.S2_BANDS)
    for path, reflectance in ((record.opt_cloudy, scene.cloudy), (record.opt_clear, scene.clear)):
        assert path is not None
        profile = RasterProfile(
            **grid, nodata=schema.S2_NODATA_DN, descriptions=schema.S2_BANDS, tags=optical_tags, band_tags=band_tags
        )
        write_raster(layout.uri(path), schema.reflectance_to_s2_dn(reflectance, boa_add_offset), profile)
    for path, band, polarisation in ((record.sar_vv, 0, "VV"), (record.sar_vh, 1, "VH")):
        tags = {DATE_TAG: geo.sar_date, "POLARISATION": polarisation, "UNITS": "dB", "CALIBRATION": "sigma0"}
        profile = RasterProfile(**grid, nodata=float("nan"), descriptions=(polarisation,), tags=tags)
        write_raster(layout.uri(path), scene.sar_db[band], profile)
    assert record.label is not None and record.cloud_mask is not None
    label_tags = {DATE_TAG: geo.optical_date, "CLASS_NAMES": json.dumps(dict(enumerate(schema.CLASS_NAMES)))}
    write_raster(
        layout.uri(record.label),
        scene.label,
        RasterProfile(**grid, nodata=schema.IGNORE_INDEX, tags=label_tags, colormap=schema.colour_table()),
    )
    mask_tags = {"CODES": json.dumps(schema.CLOUD_MASK_NAMES)}
    write_raster(layout.uri(record.cloud_mask), scene.cloud_mask, RasterProfile(**grid, tags=mask_tags))


def sample_metadata(record: SampleRecord, scene: Scene, geo: Georeference) -> SampleMetadata:
    """The metadata row of a generated sample, from its arrays (no re-read)."""
    cover, opaque, shadow = cloud_fractions(scene.cloud_mask)
    size = scene.label.shape[0]
    return SampleMetadata(
        name=record.name,
        split=record.split,
        cloud_cover=cover,
        opaque_cloud_fraction=opaque,
        shadow_fraction=shadow,
        optical_date=geo.optical_date,
        sar_date=geo.sar_date,
        time_gap_days=gap_days(geo.optical_date, geo.sar_date),
        crs=geo.crs.to_string(),
        width=size,
        height=size,
        nodata_fraction=0.0,
        class_fractions=class_fractions(scene.label),
    )


def _generate_one(job: tuple[str, SynthConfig, int, Split, bool]) -> SampleMetadata:
    """Generate (or, when ``write`` is False, only re-derive) one sample; runs in worker processes."""
    root, config, index, split, write = job
    rng = np.random.default_rng([config.seed, index])
    geo = georeference(rng, config.size)
    scene = make_scene(rng, config.size, config.physics)
    record = standard_record(sample_name(index), split)
    if write:
        write_sample(DatasetLayout(root), record, scene, geo, config.boa_add_offset)
    return sample_metadata(record, scene, geo)


def _check_params(layout: DatasetLayout, config: SynthConfig) -> None:
    params = asdict(config)
    if config.physics == DEFAULT_PHYSICS:
        del params["physics"]  # sets written before the knobs existed stay resumable
    wanted = json.dumps(params, indent=2, sort_keys=True) + "\n"
    if layout.storage.exists(PARAMS_FILE):
        stored = layout.storage.read_bytes(PARAMS_FILE).decode()
        if stored != wanted:
            raise DataError(
                layout.uri(PARAMS_FILE),
                f"this folder holds a synthetic set made with other parameters ({json.loads(stored)}); "
                f"choose another output folder",
            )
        return
    if layout.storage.list("split"):
        raise DataError(layout.root, "the folder already holds a dataset that was not generated here; refusing to mix")
    layout.storage.write_bytes(PARAMS_FILE, wanted.encode())


def generate_dataset(root: str, config: SynthConfig, *, workers: int = 1, progress: bool = True) -> list[SampleRecord]:
    """Generate a synthetic CloudLULC-Set at ``root`` (folder or ``s3://``); returns its records.

    A finished set (same parameters, split files present) is left untouched. After an interruption,
    samples whose six files exist are not written again (their metadata row is re-derived from the
    same seed), so the resumed set is byte-identical to an uninterrupted one. One run at a time holds
    ``root`` (``io.claim``: another is refused with exit 4); a successful run removes the temporary files
    that killed runs left.
    """
    with claim_output(root):
        records = _generate_claimed(root, config, workers=workers, progress=progress)
        if not is_s3_uri(root):
            remove_stale_temporaries(Path(root), recursive=True)
        return records


def _generate_claimed(root: str, config: SynthConfig, *, workers: int, progress: bool) -> list[SampleRecord]:
    layout = DatasetLayout(root)
    _check_params(layout, config)
    if all(layout.storage.exists(layout.split_key(split)) for split in ("train", "val", "test")):
        return layout.read_records()  # finished earlier with the same parameters: nothing to do
    splits = assign_splits(config)
    existing = set(layout.storage.list())
    records = [standard_record(sample_name(i), splits[i]) for i in range(config.n)]
    jobs = [(root, config, i, splits[i], not set(records[i].files().values()) <= existing) for i in range(config.n)]
    bar = tqdm(
        _run(jobs, workers), total=len(jobs), desc="synth", unit="sample", disable=not progress_enabled(progress)
    )
    rows = list(bar)
    write_metadata(layout, metadata_frame(rows))
    layout.write_splits(records)  # last: the split files make the samples visible
    log.info("synth: %d samples at %s, %d of them written now", len(records), root, sum(job[4] for job in jobs))
    return records


def _run(jobs: list[tuple[str, SynthConfig, int, Split, bool]], workers: int) -> Iterator[SampleMetadata]:
    if workers <= 1:
        yield from map(_generate_one, jobs)
        return
    with worker_pool(workers) as pool:
        yield from pool.map(_generate_one, jobs, chunksize=2)
