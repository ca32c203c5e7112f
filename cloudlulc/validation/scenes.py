"""Validate the scene stacks of ``cloudlulc ingest run --mode scenes`` with the chip validation's machinery.

The manifest (``manifest.csv``, written last by ingest) says which stacks are committed; each stack is
measured into one row of a pandas table and judged by Great Expectations rules (``suites.Rule`` and
``suites.run_rules``), and the result is the same :class:`ValidationReport` as for chips, so
``write_report`` renders it the same way. A broken stack is a failure naming the pair, the rule and
the file, never a traceback.

Memory does not grow with the scene (a stack can be 10980 x 10980 px): nothing reads a band at full
resolution. Per file, the validation

* streams the bytes once through SHA-256 in 1 MiB blocks (the check against the manifest);
* reads the pixel statistics from one decimated read (``out_shape``): the longest side is brought down
  to :attr:`SceneThresholds.stats_max_side` pixels (1024 by default), which GDAL serves from the COG's
  overviews (nearest sampling of the overview level at or above that size), so at most
  ``bands x 1024 x 1024`` float32 values (48 MiB for the 12 optical bands) are held at once; and
* reads the last full-resolution block (one tile) as an integrity probe: a COG stores its overviews
  before the full-resolution tiles, so a truncated file still serves the decimated read but fails
  this one, even without a manifest checksum.

Statistics from overviews are approximate near nodata edges (an overview pixel averages the valid
pixels beneath it), which is well within the rules' tolerances. GDAL's block cache is capped at
``gdal_env.STREAMING_CACHE_MB`` while reading.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window
from tqdm import tqdm

from cloudlulc import schema
from cloudlulc.errors import DataError, StorageError
from cloudlulc.ingest.manifest import MANIFEST_KEY, PARAMS_KEY, sha256_of
from cloudlulc.ingest.outputs import SCENE_DIR
from cloudlulc.io.gdal_env import bounded_block_cache
from cloudlulc.io.rasters import RasterInfo, grid_mismatch, info_of, open_raster
from cloudlulc.io.storage import LocalStorage, S3Storage, Storage, open_storage
from cloudlulc.validation.report import ValidationReport
from cloudlulc.validation.stats import CANONICAL_BAND_NAMES
from cloudlulc.validation.suites import DATASET, Rule, required_columns, run_rules
from cloudlulc.validation.validate import collect_failures

ROLES: tuple[str, ...] = ("optical", "sar", "cloud_mask", "label")
"""Files of a stack, in reading order; the first one read is the grid the others must match."""
REQUIRED_ROLES: tuple[str, ...] = ("optical", "sar")
"""Files every stack has; ``cloud_mask`` and ``label`` are checked when the manifest lists them."""
EXPECTED_BANDS: dict[str, int] = {"optical": len(schema.S2_BANDS), "sar": len(schema.S1_POLARISATIONS)}
SAR_BAND_NAMES = ",".join(schema.S1_POLARISATIONS)
HASH_BLOCK = 1 << 20
"""Bytes per read while hashing (memory of the checksum does not depend on the file)."""


@dataclass(frozen=True)
class SceneThresholds:
    """Tunable limits of the scene-stack rules (our defaults)."""

    max_nodata_fraction: float = 0.05
    """Largest share of nodata pixels in optical.tif, in sar.tif, and without both (the chip validation's
    default, and the share of valid pixels ingest requires of a chip). An AOI that the acquisitions only
    partly cover needs a larger value (``--max-nodata``); a wholly empty file fails at any value."""
    reflectance_min: float = -0.05
    """Lowest allowed 1st percentile of reflectance, ``(DN + BOA_ADD_OFFSET) / 10000``, on valid pixels
    (lowest over the bands). Catches an offset applied twice or declared wrongly."""
    reflectance_max: float = 1.5
    """Highest allowed 99th percentile of reflectance (highest over the bands); clouds and snow stay below."""
    sar_db_min: float = -50.0
    """Lowest allowed 1st percentile of sigma0 in dB, per polarisation (the noise floor is near -25 dB)."""
    sar_db_max: float = 20.0
    """Highest allowed 99th percentile of sigma0 in dB, per polarisation."""
    stats_max_side: int = 1024
    """Longest side, in pixels, of the decimated read statistics come from (bounds memory, see the module)."""
    verify_checksums: bool = True
    """Stream every file through SHA-256 and compare with the manifest."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_nodata_fraction <= 1.0:
            raise DataError("max nodata fraction", f"must be in [0, 1], got {self.max_nodata_fraction}")
        if self.stats_max_side < 16:
            raise DataError("stats_max_side", f"must be at least 16 pixels, got {self.stats_max_side}")


@dataclass(frozen=True)
class ManifestScene:
    """One committed stack as the manifest lists it."""

    pair_id: str
    files: dict[str, str]
    """Role (``optical``...) to storage key (``scenes/<pair id>/optical.tif``)."""
    checksums: dict[str, str] = field(default_factory=dict)
    """Storage key to the SHA-256 the manifest recorded."""
    problem: str = ""
    """What is wrong with the manifest row itself ("" when nothing)."""
    cloud_cover: float | None = None
    """Scene cloud cover from the manifest, as a fraction."""


# --- the manifest -------------------------------------------------------------------------------


def _params_mode(storage: Storage) -> str | None:
    if not storage.exists(PARAMS_KEY):
        return None
    try:
        return str(json.loads(storage.read_bytes(PARAMS_KEY)).get("mode"))
    except (ValueError, AttributeError):
        return None


def _manifest_frame(storage: Storage) -> pd.DataFrame:
    """The manifest as strings; raises ValueError (or pandas' parser errors) when it cannot be parsed."""
    data = storage.read_bytes(MANIFEST_KEY)
    if not data.strip():
        raise ValueError("the file is empty")
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def is_scene_layout(root: str) -> bool:
    """Whether ``root`` is the output of ``ingest run --mode scenes`` (what ``cloudlulc validate`` detects).

    True when a ``manifest.csv`` is present and its rows, or the ingest parameters recorded beside it
    (``ingest/params.json``), say ``mode=scenes``; so a region that yielded no pair is still validated as
    scenes, and fails with "no scenes under <root>".
    """
    storage = open_storage(root)
    if not storage.exists(MANIFEST_KEY):
        return False
    if _params_mode(storage) == "scenes":
        return True
    try:
        frame = _manifest_frame(storage)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return False
    return "mode" in frame.columns and bool((frame["mode"] == "scenes").any())


def _no_scenes(storage: Storage, reason: str) -> str:
    return f"no scenes under {storage.uri}: {reason}"


def read_scene_manifest(storage: Storage) -> tuple[list[ManifestScene], str]:
    """The stacks ``manifest.csv`` lists, and why there are none ("" when there are some).

    Problems of single rows (paths without checksums, a required file not listed) are kept in the
    row's ``problem`` and reported as failures of that pair.
    """
    manifest_uri = storage.join(MANIFEST_KEY)
    if not storage.exists(MANIFEST_KEY):
        return [], _no_scenes(
            storage,
            f"{manifest_uri} does not exist (run `cloudlulc ingest run --mode scenes` "
            "first; the manifest is written last, so an interrupted run has none)",
        )
    try:
        frame = _manifest_frame(storage)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        return [], _no_scenes(storage, f"{manifest_uri} is not a readable CSV ({error})")
    absent = sorted({"pair_id", "paths", "sha256"} - set(frame.columns))
    if absent:
        return [], _no_scenes(storage, f"{manifest_uri} lacks the column(s) {', '.join(absent)}")
    chips = 0
    if "mode" in frame.columns:
        chips = int((frame["mode"] != "scenes").sum())
        frame = frame[frame["mode"] == "scenes"]
    if frame.empty:
        why = (
            f"{chips} pair(s) were ingested as chips (validate them without --scenes)"
            if chips
            else "the region and dates gave no Sentinel-1/2 pair"
        )
        return [], _no_scenes(storage, f"{manifest_uri} lists no scene stack; {why}")
    return [_manifest_scene(row) for row in frame.to_dict("records")], ""


def _manifest_scene(row: dict[str, str]) -> ManifestScene:
    pair_id = row["pair_id"]
    prefix = f"{SCENE_DIR}/{pair_id}/"
    paths, digests = row["paths"].split(), row["sha256"].split()
    problems = []
    if len(paths) != len(digests):
        problems.append(f"{len(paths)} path(s) but {len(digests)} SHA-256 value(s)")
        digests = []
    checksums = dict(zip(paths, digests, strict=False))
    files: dict[str, str] = {}
    for role in ROLES:
        key = f"{prefix}{role}.tif"
        if key in paths:
            files[role] = key
        elif role in REQUIRED_ROLES:
            files[role] = key
            problems.append(f"{key} is not listed")
    try:
        cover: float | None = float(row.get("s2_cloud_cover", "")) / 100.0
    except ValueError:
        cover = None
    if cover is not None and not math.isfinite(cover):
        cover = None
    return ManifestScene(pair_id, files, checksums, "; ".join(problems), cover)


# --- measuring one stack ------------------------------------------------------------------------


def _sha256(storage: Storage, key: str) -> str:
    """SHA-256 of an object, streamed in blocks (a local file, or an S3 object's body)."""
    if isinstance(storage, LocalStorage):
        return sha256_of(storage.root / key)
    digest = hashlib.sha256()
    if isinstance(storage, S3Storage):
        from botocore.exceptions import BotoCoreError, ClientError

        object_key = f"{storage.prefix}/{key}" if storage.prefix else key
        try:
            body = storage.client.get_object(Bucket=storage.bucket, Key=object_key)["Body"]
            for chunk in body.iter_chunks(HASH_BLOCK):
                digest.update(chunk)
        except (ClientError, BotoCoreError) as error:
            raise StorageError(f"{storage.join(key)}: cannot read to verify its checksum: {error}") from error
        return digest.hexdigest()
    digest.update(storage.read_bytes(key))  # another backend: no streaming interface
    return digest.hexdigest()


def decimated_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(rows, cols) of a read whose longest side is at most ``max_side``, keeping the aspect ratio."""
    scale = max(height, width) / max_side
    if scale <= 1.0:
        return height, width
    return max(1, round(height / scale)), max(1, round(width / scale))


def _read(dataset: DatasetReader, **kwargs: Any) -> np.ndarray:
    """``dataset.read`` whose failure is a DataError naming the file with GDAL's own reason."""
    try:
        return dataset.read(**kwargs)
    except RasterioError as error:
        cause = error.__cause__ if "previous exception" in str(error) and error.__cause__ else error
        reason = (str(cause).strip() or type(cause).__name__).splitlines()[0][:300]
        raise DataError(dataset.name, f"cannot read pixels, file truncated or corrupt ({reason})") from error


def _read_decimated(dataset: DatasetReader, bands: int, max_side: int) -> np.ndarray:
    """The first ``bands`` bands as float32 [bands, rows, cols], longest side at most ``max_side``."""
    rows, cols = decimated_shape(dataset.height, dataset.width, max_side)
    indexes = list(range(1, min(dataset.count, bands) + 1))
    return _read(
        dataset,
        indexes=indexes,
        out_shape=(len(indexes), rows, cols),
        out_dtype="float32",
        resampling=Resampling.nearest,
    )


def _probe_last_block(dataset: DatasetReader) -> None:
    """Read the last full-resolution block (the end of a COG): a truncated file fails here, naming it."""
    block_rows, block_cols = dataset.block_shapes[0]
    row = ((dataset.height - 1) // block_rows) * block_rows
    col = ((dataset.width - 1) // block_cols) * block_cols
    _read(dataset, window=Window(col, row, min(block_cols, dataset.width - col), min(block_rows, dataset.height - row)))


def _matches(values: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None:
        return np.zeros(values.shape, bool)
    return np.isnan(values) if math.isnan(nodata) else values == nodata


def _band_offsets(dataset: DatasetReader, bands: int) -> list[float]:
    default = dataset.tags().get("BOA_ADD_OFFSET", "0")
    offsets = []
    for index in range(1, bands + 1):
        value = dataset.tags(index).get("BOA_ADD_OFFSET", default)
        try:
            offsets.append(float(value))
        except ValueError:
            raise DataError(dataset.name, f"BOA_ADD_OFFSET tag of band {index} is not a number: {value!r}") from None
    return offsets


def _names(dataset: DatasetReader) -> str:
    descriptions = [d for d in dataset.descriptions if d]
    return ",".join(descriptions) if len(descriptions) == dataset.count else ""


def _percentiles(values: np.ndarray) -> tuple[float, float, float]:
    if not values.size:
        return math.nan, math.nan, math.nan
    low, middle, high = np.percentile(values, [1, 50, 99])
    return float(low), float(middle), float(high)


def _optical_stats(dataset: DatasetReader, pixels: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Nodata share (all bands 0), NaN share outside nodata, reflectance percentiles of the valid pixels."""
    nodata = dataset.nodata if dataset.nodata is not None else float(schema.S2_NODATA_DN)
    is_nodata = np.all(_matches(pixels, nodata), axis=0)
    non_finite = ~np.all(np.isfinite(pixels), axis=0)
    valid = ~is_nodata & ~non_finite
    lows, middles, highs = [], [], []
    for band, offset in zip(pixels, _band_offsets(dataset, len(pixels)), strict=True):
        values = band[valid]
        values += np.float32(offset)
        values *= np.float32(1.0 / schema.S2_DN_SCALE)
        low, middle, high = _percentiles(values)
        lows.append(low)
        middles.append(middle)
        highs.append(high)
    any_valid = bool(valid.any())
    return {
        "optical_band_names": _names(dataset),
        "optical_nodata_fraction": float(is_nodata.mean()),
        "optical_nan_fraction": float((non_finite & ~is_nodata).mean()),
        "optical_reflectance_p01": min(lows) if any_valid else math.nan,
        "optical_reflectance_p50": float(np.median(middles)) if any_valid else math.nan,
        "optical_reflectance_p99": max(highs) if any_valid else math.nan,
    }, valid


def _sar_stats(dataset: DatasetReader, pixels: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Nodata share (the declared nodata, NaN by default, in any band), stray non-finite share, dB percentiles."""
    nodata = dataset.nodata if dataset.nodata is not None else math.nan
    is_nodata = np.any(_matches(pixels, nodata), axis=0)
    stray = np.any(~np.isfinite(pixels), axis=0) & ~is_nodata  # inf always; NaN unless NaN is the nodata
    valid = ~is_nodata & ~stray
    row: dict[str, Any] = {
        "sar_band_names": _names(dataset),
        "sar_nodata_fraction": float(is_nodata.mean()),
        "sar_nan_fraction": float(stray.mean()),
    }
    for band, polarisation in zip(pixels, schema.S1_POLARISATIONS, strict=False):
        values = band[valid]
        prefix = f"sar_{polarisation.lower()}"
        low, middle, high = _percentiles(values)
        row[f"{prefix}_negative_fraction"] = float(np.mean(values < 0)) if values.size else math.nan
        row.update({f"{prefix}_p01_db": low, f"{prefix}_p50_db": middle, f"{prefix}_p99_db": high})
    return row, valid


def _code_stats(
    role: str, dataset: DatasetReader, pixels: np.ndarray, allowed: frozenset[int]
) -> tuple[dict[str, Any], dict[int, int]]:
    """Share of values outside ``allowed`` (listed, with the file), and the count of each allowed value."""
    values, counts = np.unique(pixels[0], return_counts=True)
    bad = np.array([not (math.isfinite(v) and v.is_integer() and int(v) in allowed) for v in values.tolist()], bool)
    histogram = {
        int(v): int(c) for v, c, b in zip(values.tolist(), counts.tolist(), bad.tolist(), strict=True) if not b
    }
    shown = ", ".join(f"{v:g}" for v in values[bad][:20].tolist()) + (" ..." if bad.sum() > 20 else "")
    return {
        f"{role}_invalid_fraction": float(counts[bad].sum() / max(pixels[0].size, 1)),
        f"{role}_invalid_values": f"values {shown} in {dataset.name}" if bad.any() else "",
    }, histogram


def scene_facts(storage: Storage, scene: ManifestScene, existing: set[str], limits: SceneThresholds) -> dict[str, Any]:
    """Measure one stack into a row of the ``scenes`` table; unreadable files are recorded, not raised."""
    row: dict[str, Any] = {"name": scene.pair_id, "manifest_problem": scene.problem}
    missing: list[str] = []
    errors: list[str] = []
    grid_problems: list[str] = []
    checksum_problems: list[str] = []
    reference: RasterInfo | None = None
    valid: dict[str, np.ndarray] = {}
    for role, key in scene.files.items():
        uri = storage.join(key)
        row[f"{role}_path"] = uri
        if key not in existing:
            missing.append(uri)
            continue
        expected = scene.checksums.get(key)
        if limits.verify_checksums and expected:
            try:
                actual = _sha256(storage, key)
            except OSError as error:
                errors.append(f"{uri}: cannot read ({error})")
                continue
            if actual != expected:
                checksum_problems.append(
                    f"{uri}: SHA-256 {actual[:16]}... differs from the manifest's {expected[:16]}... "
                    "(replaced or half-written since ingest)"
                )
        try:
            with bounded_block_cache(), open_raster(uri) as dataset:
                info = info_of(dataset)
                row[f"{role}_bands"] = info.count
                row[f"{role}_dtype"] = info.dtype
                if reference is None:
                    reference = info
                elif problem := grid_mismatch(reference, info):
                    grid_problems.append(f"{uri}: {problem}")
                _probe_last_block(dataset)
                pixels = _read_decimated(dataset, EXPECTED_BANDS.get(role, 1), limits.stats_max_side)
                row[f"{role}_stats_shape"] = f"{pixels.shape[1]}x{pixels.shape[2]} of {info.height}x{info.width}"
                if role == "optical":
                    stats, valid[role] = _optical_stats(dataset, pixels)
                elif role == "sar":
                    stats, valid[role] = _sar_stats(dataset, pixels)
                elif role == "cloud_mask":
                    stats, _ = _code_stats(role, dataset, pixels, frozenset(schema.CLOUD_MASK_NAMES))
                else:
                    stats, histogram = _code_stats(role, dataset, pixels, schema.VALID_LABEL_VALUES)
                    labelled = sum(histogram.get(c.id, 0) for c in schema.CLASSES) or 1
                    stats.update({f"class_{c.id}": histogram.get(c.id, 0) / labelled for c in schema.CLASSES})
                row.update(stats)
        except DataError as error:
            errors.append(str(error))
    row["missing_files"] = ", ".join(missing)
    row["read_error"] = " | ".join(errors)
    row["grid_problem"] = " | ".join(grid_problems)
    row["checksum_problem"] = " | ".join(checksum_problems)
    if {"optical", "sar"} <= set(valid) and valid["optical"].shape == valid["sar"].shape:
        row["scene_nodata_fraction"] = float(1.0 - (valid["optical"] & valid["sar"]).mean())
    return row


def iter_scene_facts(
    storage: Storage, scenes: list[ManifestScene], limits: SceneThresholds, workers: int = 1
) -> Iterator[dict[str, Any]]:
    """Rows of :func:`scene_facts` in manifest order; ``workers > 1`` measures stacks in threads."""
    existing = set(storage.list(SCENE_DIR))
    if workers <= 1:
        yield from (scene_facts(storage, scene, existing, limits) for scene in scenes)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(lambda scene: scene_facts(storage, scene, existing, limits), scenes)


# --- the rules ----------------------------------------------------------------------------------


def _in_set(rule_id: str, column: str, values: list[Any], description: str, detail: str | None = None) -> Rule:
    return Rule(
        rule_id, "scenes", "ExpectColumnValuesToBeInSet", {"column": column, "value_set": values}, description, detail
    )


def _between(
    rule_id: str,
    column: str,
    low: float | None,
    high: float | None,
    description: str,
    detail: str | None = None,
    **extra: Any,
) -> Rule:
    kwargs = {"column": column, "min_value": low, "max_value": high, **extra}
    return Rule(rule_id, "scenes", "ExpectColumnValuesToBeBetween", kwargs, description, detail)


def manifest_rules() -> list[Rule]:
    """The rule over the manifest as a whole."""
    return [
        Rule(
            "manifest.scenes",
            "manifest",
            "ExpectColumnValuesToBeInSet",
            {"column": "manifest_problem", "value_set": [""]},
            "manifest.csv is readable and lists at least one committed scene stack",
            "manifest",
        )
    ]


def scene_rules(limits: SceneThresholds) -> list[Rule]:
    """Rules over the per-stack table; a file's rules name the file in the failure's detail."""
    bands = len(schema.S2_BANDS)
    nodata = limits.max_nodata_fraction
    rules = [
        _in_set(
            "manifest.row",
            "manifest_problem",
            [""],
            "the manifest row lists optical.tif and sar.tif, with one SHA-256 per path",
        ),
        Rule(
            "manifest.unique",
            "scenes",
            "ExpectColumnValuesToBeUnique",
            {"column": "name"},
            "no pair is listed twice in the manifest",
        ),
        _in_set("files.present", "missing_files", [""], "every file of the stack exists", "missing_files"),
        _in_set(
            "files.readable",
            "read_error",
            [""],
            "every file opens and its pixels read (corrupt or truncated files, with GDAL's reason)",
            "read_error",
        ),
        _in_set(
            "files.checksum",
            "checksum_problem",
            [""],
            "every file's SHA-256 equals the manifest's (a replaced or half-written file fails)",
            "checksum_problem",
        ),
        _in_set(
            "grid.agree",
            "grid_problem",
            [""],
            "all files of a stack share the CRS, transform and size of optical.tif",
            "grid_problem",
        ),
        _in_set("optical.band_count", "optical_bands", [bands], f"optical.tif has {bands} bands", "optical_path"),
        _in_set(
            "optical.band_order",
            "optical_band_names",
            ["", CANONICAL_BAND_NAMES],
            f"optical band descriptions, when present, are {CANONICAL_BAND_NAMES}",
            "optical_path",
        ),
        _in_set(
            "optical.dtype", "optical_dtype", ["uint16"], "optical.tif holds uint16 L2A digital numbers", "optical_path"
        ),
        _between(
            "optical.nodata",
            "optical_nodata_fraction",
            0.0,
            nodata,
            f"at most {nodata:.0%} of optical pixels are nodata (DN 0 in every band)",
            "optical_path",
        ),
        _between(
            "optical.empty",
            "optical_nodata_fraction",
            0.0,
            1.0,
            "optical.tif is not entirely nodata",
            "optical_path",
            strict_max=True,
        ),
        _between(
            "optical.nan",
            "optical_nan_fraction",
            0.0,
            0.0,
            "no NaN or infinite value outside nodata in optical.tif",
            "optical_path",
        ),
        _between(
            "optical.value_range",
            "optical_reflectance_p01",
            limits.reflectance_min,
            None,
            f"1st percentile of reflectance (DN + BOA_ADD_OFFSET) / 10000 >= {limits.reflectance_min:g} in every band",
            "optical_path",
        ),
        _between(
            "optical.value_range",
            "optical_reflectance_p99",
            None,
            limits.reflectance_max,
            f"99th percentile of reflectance <= {limits.reflectance_max:g} in every band",
            "optical_path",
        ),
        _in_set(
            "sar.band_count",
            "sar_bands",
            [len(schema.S1_POLARISATIONS)],
            f"sar.tif has {len(schema.S1_POLARISATIONS)} bands ({SAR_BAND_NAMES})",
            "sar_path",
        ),
        _in_set(
            "sar.band_order",
            "sar_band_names",
            ["", SAR_BAND_NAMES],
            f"SAR band descriptions, when present, are {SAR_BAND_NAMES}",
            "sar_path",
        ),
        _in_set("sar.dtype", "sar_dtype", ["float32", "float64"], "sar.tif holds floating-point sigma0", "sar_path"),
        _between(
            "sar.nodata",
            "sar_nodata_fraction",
            0.0,
            nodata,
            f"at most {nodata:.0%} of SAR pixels are nodata (NaN)",
            "sar_path",
        ),
        _between(
            "sar.empty", "sar_nodata_fraction", 0.0, 1.0, "sar.tif is not entirely nodata", "sar_path", strict_max=True
        ),
        _between(
            "sar.nan",
            "sar_nan_fraction",
            0.0,
            0.0,
            "no infinite value, nor NaN unless NaN is the declared nodata, in sar.tif",
            "sar_path",
        ),
    ]
    for polarisation in schema.S1_POLARISATIONS:
        prefix = f"sar_{polarisation.lower()}"
        rules += [
            _between(
                "sar.units_db",
                f"{prefix}_negative_fraction",
                0.5,
                1.0,
                f"SAR {polarisation} is sigma0 in dB (mostly negative); linear power must be converted with 10*log10",
                "sar_path",
            ),
            _between(
                "sar.value_range",
                f"{prefix}_p01_db",
                limits.sar_db_min,
                None,
                f"1st percentile of SAR {polarisation} >= {limits.sar_db_min:g} dB",
                "sar_path",
            ),
            _between(
                "sar.value_range",
                f"{prefix}_p99_db",
                None,
                limits.sar_db_max,
                f"99th percentile of SAR {polarisation} <= {limits.sar_db_max:g} dB",
                "sar_path",
            ),
        ]
    rules += [
        _in_set(
            "cloud_mask.band_count", "cloud_mask_bands", [1], "cloud_mask.tif is a single-band file", "cloud_mask_path"
        ),
        _in_set(
            "cloud_mask.dtype", "cloud_mask_dtype", ["uint8"], "cloud_mask.tif holds uint8 codes", "cloud_mask_path"
        ),
        _between(
            "cloud_mask.values",
            "cloud_mask_invalid_fraction",
            0.0,
            0.0,
            f"cloud mask values are codes {sorted(schema.CLOUD_MASK_NAMES)}",
            "cloud_mask_invalid_values",
        ),
        _in_set("label.band_count", "label_bands", [1], "label.tif is a single-band file", "label_path"),
        _in_set("label.dtype", "label_dtype", ["uint8"], "label.tif holds uint8 class ids", "label_path"),
        _between(
            "label.values",
            "label_invalid_fraction",
            0.0,
            0.0,
            f"label values are class ids {sorted(schema.VALID_LABEL_VALUES)}",
            "label_invalid_values",
        ),
        _between(
            "scene.nodata",
            "scene_nodata_fraction",
            0.0,
            nodata,
            f"at most {nodata:.0%} of a stack's pixels lack valid optical or SAR data",
            "optical_path",
        ),
    ]
    return rules


# --- the entry point ----------------------------------------------------------------------------


def _class_balance(scenes: pd.DataFrame) -> dict[str, float]:
    columns = [f"class_{c.id}" for c in schema.CLASSES]
    if not set(columns) <= set(scenes.columns) or scenes[columns].isna().all(axis=None):
        return {}
    means = scenes[columns].astype(float).mean().to_numpy()
    total = float(np.nansum(means)) or 1.0
    return {c.name: float(m / total) for c, m in zip(schema.CLASSES, means, strict=True)}


def validate_scenes(
    root: str, thresholds: SceneThresholds | None = None, *, workers: int = 1, progress: bool = False
) -> ValidationReport:
    """Validate the scene stacks under ``root`` (an ingest output folder or ``s3://`` prefix); nothing is written.

    Every stack ``manifest.csv`` lists with ``mode=scenes`` is measured (see the module for what is
    read and the memory bound) and checked by the rules of :func:`scene_rules`. A missing, unreadable
    or empty manifest is not an exception but the failure ``manifest.scenes`` ("no scenes under
    <root>: ..."), so the report says why; S3 that cannot be reached raises StorageError.

    Args:
        root: the ``--out`` of ``cloudlulc ingest run --mode scenes``.
        thresholds: limits of the rules (defaults: :class:`SceneThresholds`).
        workers: stacks measured at once (threads; GDAL and hashing release the GIL).
        progress: show a progress bar.
    """
    limits = thresholds or SceneThresholds()
    storage = open_storage(root)
    scenes, problem = read_scene_manifest(storage)
    manifest = pd.DataFrame([{"name": DATASET, "manifest": storage.join(MANIFEST_KEY), "manifest_problem": problem}])
    tables: dict[str, pd.DataFrame] = {"manifest": manifest}
    rules = manifest_rules()
    frame = pd.DataFrame()
    if scenes:
        rows = list(
            tqdm(
                iter_scene_facts(storage, scenes, limits, workers),
                total=len(scenes),
                desc="validate",
                unit="scene",
                disable=not progress,
            )
        )
        per_scene = scene_rules(limits)
        frame = pd.DataFrame(rows)
        frame = frame.reindex(columns=sorted(set(frame.columns) | set(required_columns(per_scene))))
        tables["scenes"] = frame
        rules += per_scene
    failures, summaries = collect_failures(run_rules(tables, rules), tables)
    return ValidationReport(
        dataset=storage.uri,
        sample_count=len(scenes),
        failures=failures,
        rules=summaries,
        cloud_cover=[s.cloud_cover for s in scenes if s.cloud_cover is not None],
        class_fractions=_class_balance(frame),
        kind="Scene-stack",
    )
