"""Reading and writing GeoTIFFs with rasterio: windows, nodata, grid checks and COG output.

Readers turn every GDAL failure into a :class:`DataError` that names the file. Writers start from an
explicit profile, write to a temporary name and publish atomically (see ``storage.staged_output``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from cloudlulc.errors import DataError
from cloudlulc.io.gdal_env import rasterio_env
from cloudlulc.io.storage import staged_output

COG_BLOCK = 512
"""Internal tile size of the COGs the product publishes."""
GRID_TOLERANCE_M = 1e-3
"""Two transforms agree when their coefficients differ by less than this (1 mm)."""


@dataclass(frozen=True)
class RasterInfo:
    """What a file's header says, without reading pixels."""

    path: str
    count: int
    width: int
    height: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    tags: dict[str, str] = field(default_factory=dict)
    descriptions: tuple[str | None, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return self.height, self.width


OPEN_PROBLEM = "cannot open as a raster"
READ_PROBLEM = "cannot read pixels, file truncated or corrupt"


@contextmanager
def gdal_errors(source: str, problem: str = READ_PROBLEM) -> Iterator[None]:
    """Turn a GDAL/rasterio failure inside the block into a DataError naming ``source``.

    The one place that words GDAL's reason, so every reader (dataset, ingest, mapping) reports an
    unreadable file the same way: ``<source>: <problem> (<reason>)``, exit code 3.
    """
    try:
        yield
    except RasterioError as error:
        raise DataError(source, f"{problem} ({_gdal_reason(error)})") from error


@contextmanager
def open_raster(path: str) -> Iterator[DatasetReader]:
    """Open a local path or ``s3://`` URI for reading; failures name the file."""
    with rasterio_env(path):
        with gdal_errors(path, OPEN_PROBLEM):
            dataset = rasterio.open(path)
        with dataset:
            yield dataset


def _gdal_reason(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    if "No such file" in text or "does not exist" in text:
        return "file not found"
    if "not recognized as" in text:
        return "not a GeoTIFF or corrupt header"
    return text.splitlines()[0][:300]


def info_of(dataset: DatasetReader) -> RasterInfo:
    """Header facts of an open dataset."""
    return RasterInfo(
        path=dataset.name,
        count=dataset.count,
        width=dataset.width,
        height=dataset.height,
        dtype=dataset.dtypes[0],
        crs=dataset.crs,
        transform=dataset.transform,
        nodata=dataset.nodata,
        tags=dict(dataset.tags()),
        descriptions=tuple(dataset.descriptions),
    )


def raster_info(path: str) -> RasterInfo:
    """Header facts of a file."""
    with open_raster(path) as dataset:
        return info_of(dataset)


def read_window(
    dataset: DatasetReader,
    window: Window | None = None,
    indexes: Sequence[int] | None = None,
    out_dtype: str | None = None,
) -> np.ndarray:
    """Read bands (1-based ``indexes``, default all) of a window as [bands, rows, cols].

    ``out_dtype`` lets GDAL convert while reading (one buffer instead of two). A truncated or corrupt
    file fails here rather than at open time, so the error names the file.
    """
    with gdal_errors(dataset.name):
        return dataset.read(list(indexes) if indexes is not None else None, window=window, out_dtype=out_dtype)


def read_raster(path: str, window: Window | None = None, indexes: Sequence[int] | None = None) -> np.ndarray:
    """Open, read a window (default: all) and close."""
    with open_raster(path) as dataset:
        return read_window(dataset, window, indexes)


def expect_band_count(info: RasterInfo, expected: int, what: str) -> None:
    """Raise a DataError naming the file when it does not hold ``expected`` bands."""
    if info.count != expected:
        raise DataError(info.path, f"{what} must have {expected} band(s), found {info.count}")


def expect_patch_size(info: RasterInfo, max_side: int) -> None:
    """Raise a DataError naming the file when its header declares more pixels than a sample may hold.

    Checked before a file is read whole: a few-kB sparse file can declare 60000 x 60000 pixels.
    """
    if max(info.width, info.height) > max_side:
        raise DataError(
            info.path,
            f"declares {info.width} x {info.height} pixels, more than a sample may hold "
            f"({max_side} a side); cut it into chips (ingest --chip-size)",
        )


def grid_mismatch(reference: RasterInfo, other: RasterInfo) -> str | None:
    """Why ``other`` is not on the grid of ``reference`` (CRS, shape, transform), or None."""
    if reference.crs != other.crs:
        return f"CRS {_crs_name(other.crs)} differs from {_crs_name(reference.crs)} of {reference.path}"
    if reference.shape != other.shape:
        return f"shape {other.shape} differs from {reference.shape} of {reference.path}"
    if not reference.transform.almost_equals(other.transform, precision=GRID_TOLERANCE_M):
        return (
            f"transform {tuple(other.transform)[:6]} differs from {tuple(reference.transform)[:6]} of {reference.path}"
        )
    return None


def check_same_grid(reference: RasterInfo, other: RasterInfo) -> None:
    """Raise a DataError naming ``other`` when it is not on the grid of ``reference``."""
    problem = grid_mismatch(reference, other)
    if problem:
        raise DataError(other.path, problem)


def _crs_name(crs: CRS | None) -> str:
    if crs is None:
        return "none"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


@dataclass(frozen=True)
class RasterProfile:
    """Everything a writer needs besides pixels; built explicitly, never copied blindly."""

    crs: CRS
    transform: Affine
    nodata: float | None = None
    descriptions: tuple[str, ...] | None = None
    tags: Mapping[str, str] | None = None
    band_tags: Sequence[Mapping[str, str]] | None = None
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None
    compress: str = "deflate"
    block_size: int = 256


def gtiff_creation_options(dtype: np.dtype, profile: RasterProfile, width: int, height: int) -> dict[str, Any]:
    """Tiled, compressed GeoTIFF options; a predictor suited to the data type."""
    options: dict[str, Any] = {"driver": "GTiff", "compress": profile.compress}
    if width >= profile.block_size and height >= profile.block_size:
        options.update(tiled=True, blockxsize=profile.block_size, blockysize=profile.block_size)
    if profile.compress.lower() in {"deflate", "lzw", "zstd"}:
        options["predictor"] = 3 if np.issubdtype(dtype, np.floating) else 2
    return options


def write_raster(uri: str, array: np.ndarray, profile: RasterProfile, *, cog: bool = False) -> None:
    """Write [bands, rows, cols] (or [rows, cols]) to a GeoTIFF or COG at a local path or ``s3://`` URI.

    The file appears under its final name only once complete; a failure leaves nothing behind.
    """
    data = array[np.newaxis] if array.ndim == 2 else array
    count, height, width = data.shape
    options = gtiff_creation_options(data.dtype, profile, width, height)
    if cog:
        options = {"driver": "COG", "compress": profile.compress, "blocksize": 512, "overview_resampling": "nearest"}
        if "predictor" in gtiff_creation_options(data.dtype, profile, width, height):
            options["predictor"] = "YES"
    with (
        staged_output(uri) as temp_path,
        rasterio.open(
            temp_path,
            "w",
            width=width,
            height=height,
            count=count,
            dtype=data.dtype,
            crs=profile.crs,
            transform=profile.transform,
            nodata=profile.nodata,
            **options,
        ) as dst,
    ):
        dst.write(data)
        apply_profile_metadata(dst, profile)


def apply_profile_metadata(dst: Any, profile: RasterProfile) -> None:
    """Band descriptions, tags, band tags and colour table of ``profile`` on an open writable dataset."""
    if profile.descriptions:
        for index, description in enumerate(profile.descriptions, start=1):
            dst.set_band_description(index, description)
    if profile.tags:
        dst.update_tags(**profile.tags)
    if profile.band_tags:
        for index, tags in enumerate(profile.band_tags, start=1):
            dst.update_tags(index, **tags)
    if profile.colormap:
        dst.write_colormap(1, dict(profile.colormap))


def validate_cog(path: str) -> list[str]:
    """Problems that keep ``path`` from being a valid Cloud-Optimized GeoTIFF (empty when valid)."""
    from rio_cogeo.cogeo import cog_validate

    with rasterio_env(path):
        is_valid, errors, warnings = cog_validate(path, strict=True, quiet=True)
    return [] if is_valid else [*errors, *warnings]


def publish_cog(partial: Path, out_uri: str, *, overview_resampling: str) -> None:
    """Turn a finished GeoTIFF into a validated COG at ``out_uri`` (local path or ``s3://``), atomically.

    GDAL's COG driver writes the file and its overviews beside a temporary name in the output's folder
    (or a local temporary folder for S3); the result is validated before it is renamed or uploaded.

    Raises:
        RuntimeError: GDAL produced a file that fails strict COG validation (a bug, not a user error).
    """
    with staged_output(out_uri) as temp_path:
        with rasterio.open(partial) as source:
            rasterio.shutil.copy(
                source,
                str(temp_path),
                driver="COG",
                compress="DEFLATE",
                blocksize=COG_BLOCK,
                overview_resampling=overview_resampling,
                bigtiff="IF_SAFER",
            )
        problems = validate_cog(str(temp_path))
        if problems:
            raise RuntimeError(f"{out_uri}: GDAL wrote an invalid COG: {'; '.join(problems)}")
