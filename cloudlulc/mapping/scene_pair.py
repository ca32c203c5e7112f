"""A Sentinel-2 scene and its Sentinel-1 pair, read window by window as model inputs on the optical grid.

The optical file defines the output grid. The SAR file may be in any CRS, resolution and extent: it
is resampled onto the optical grid by a GDAL warped VRT, window by window, in linear power (averaging
dB values would bias dark areas), then converted to dB and scaled exactly like the training dataset
(``cloudlulc.io.sentinel``). A SAR stored in dB is turned into linear power by a derived VRT band
(GDAL pixel function ``dB2pow``) under the warp, so no step ever reads the whole scene.

Nodata: an optical pixel with 0 DN in all bands (or the file's declared nodata) and a SAR pixel that
is NaN, infinite, the file's nodata or outside the SAR footprint make the pixel invalid.

A missing modality (no SAR pair within the window, or no Sentinel-2 at all) is given as None: it is
fed as zeros, how a model trained with modality dropout saw it, and only the present file decides
validity. Without optics, the SAR file's own grid is the output grid.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.io.gdal_env import STREAMING_CACHE_MB, rasterio_env
from cloudlulc.io.rasters import (
    RasterInfo,
    expect_band_count,
    gdal_errors,
    grid_mismatch,
    info_of,
    open_raster,
    read_window,
)
from cloudlulc.io.sentinel import (
    OpticalUnits,
    check_sar_units,
    dn_to_reflectance,
    note_once,
    optical_units,
    sar_units_declared,
    scale_sar,
)
from cloudlulc.io.storage import is_s3_uri
from cloudlulc.io.vrt import db_to_power_vrt, warped_view

SarUnits = Literal["auto", "db", "linear"]
SAR_RESAMPLING = Resampling.bilinear
"""Resampling of SAR power onto the optical grid (GDAL widens the kernel when downsampling)."""
NODATA_SCAN_BYTES = 1 << 25
"""Memory per strip when scanning a scene for any valid pixel (32 MiB)."""


@dataclass(frozen=True)
class SceneGrid:
    """The output grid: the optical file's CRS, transform and size."""

    crs: CRS
    transform: Affine
    width: int
    height: int


@dataclass(frozen=True)
class SceneWindow:
    """Model inputs of one window and where they are valid."""

    optical: np.ndarray  # float32 [12,h,w] reflectance in [0, 1]
    sar: np.ndarray  # float32 [2,h,w] VV, VH scaled to [0, 1]
    valid: np.ndarray  # bool [h,w]: optical and both SAR channels hold data


def optical_valid(dn: np.ndarray, nodata: float | None) -> np.ndarray:
    """Pixels [h,w] of optical digital numbers [bands,h,w] that hold data.

    A pixel is nodata when every band is 0 DN (the L2A convention), or when any band equals the
    file's declared nodata value (if that is not 0) or is NaN.
    """
    valid = np.any(dn != schema.S2_NODATA_DN, axis=0)
    if nodata is not None and nodata != schema.S2_NODATA_DN:
        declared = np.isnan(dn) if math.isnan(nodata) else dn == nodata
        valid &= ~np.any(declared, axis=0)
    if np.issubdtype(dn.dtype, np.floating):
        valid &= ~np.any(np.isnan(dn), axis=0)
    return valid


def _read(dataset: DatasetReader | WarpedVRT, uri: str, **kwargs: Any) -> np.ndarray:
    """``dataset.read`` with GDAL failures turned into a DataError naming ``uri``."""
    with gdal_errors(uri):
        result: np.ndarray = dataset.read(**kwargs)
    return result


def _nearest(coarse: int, full: int) -> np.ndarray:
    """Index of the full-resolution row (or column) nearest to each coarse pixel's centre, as GDAL's nearest."""
    return np.minimum(((np.arange(coarse) + 0.5) * full / coarse).astype(np.int64), full - 1)


class _GatheredOverview:
    """The optics decimated by nearest neighbour, gathered from the windows that mapping reads anyway.

    A quicklook needs the whole scene decimated. Without overviews in the file that is a decode of
    every block once more (3.5 s of CPU at 8192 x 8192 x 12 bands); the tiles hold every pixel it
    keeps. Each window read fills the coarse pixels whose nearest source pixel it holds; overlapping
    tiles fill some twice, with the same values. Equal to ``_decimated`` once every pixel is filled.
    """

    def __init__(self, shape: tuple[int, int], height: int, width: int, bands: int) -> None:
        self.rows, self.cols = _nearest(shape[0], height), _nearest(shape[1], width)
        self.values = np.zeros((bands, *shape), np.float32)
        self.filled = np.zeros(shape, bool)

    def add(self, window: Window, dn: np.ndarray) -> None:
        """Keep the coarse pixels of ``dn`` (float32 DN [bands,h,w] of ``window``)."""
        top, left = int(window.row_off), int(window.col_off)
        r0, r1 = np.searchsorted(self.rows, [top, top + int(window.height)])
        c0, c1 = np.searchsorted(self.cols, [left, left + int(window.width)])
        if r0 < r1 and c0 < c1:
            picked = np.ix_(self.rows[r0:r1] - top, self.cols[c0:c1] - left)
            self.values[:, r0:r1, c0:c1] = dn[:, picked[0], picked[1]]
            self.filled[r0:r1, c0:c1] = True

    def result(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The decimated optics when gathered for ``shape`` and complete (a resumed run read only part)."""
        return self.values if self.filled.shape == shape and self.filled.all() else None


DECIMATION_CHUNK = 512
"""Least side of the block-aligned windows a decimated read without overviews goes through."""


def _decimated(
    dataset: DatasetReader | WarpedVRT,
    uri: str,
    shape: tuple[int, int],
    indexes: list[int] | None = None,
    out_dtype: str | None = None,
) -> np.ndarray:
    """All bands (or ``indexes``) decimated to ``shape`` by nearest neighbour, each block decoded once.

    With overviews GDAL reads them. Without, one whole-scene decimated read made GDAL decode blocks
    again and again as its bounded block cache cycled (36 s of CPU at 8192 x 8192 x 12 bands, against
    3.7 s for reading every block once): so read block-aligned windows and keep the rows and columns
    nearest to each output pixel's centre, as GDAL's nearest does.
    """
    if dataset.overviews(1):
        return _read(
            dataset, uri, indexes=indexes, out_shape=(len(indexes or dataset.indexes), *shape), out_dtype=out_dtype
        )
    height, width = dataset.height, dataset.width
    rows, cols = _nearest(shape[0], height), _nearest(shape[1], width)
    block_rows, block_cols = dataset.block_shapes[0]
    step_rows = block_rows * max(1, DECIMATION_CHUNK // block_rows)
    step_cols = block_cols * max(1, DECIMATION_CHUNK // block_cols)
    out = np.empty((len(indexes or dataset.indexes), *shape), out_dtype or dataset.dtypes[0])
    for top in range(0, height, step_rows):
        picked_rows = np.flatnonzero((rows >= top) & (rows < top + step_rows))
        if picked_rows.size == 0:
            continue
        first, last = int(rows[picked_rows[0]]), int(rows[picked_rows[-1]])
        for left in range(0, width, step_cols):
            picked_cols = np.flatnonzero((cols >= left) & (cols < left + step_cols))
            if picked_cols.size == 0:
                continue
            start, stop = int(cols[picked_cols[0]]), int(cols[picked_cols[-1]])
            window = Window(start, first, stop - start + 1, last - first + 1)
            block = _read(dataset, uri, indexes=indexes, window=window, out_dtype=out_dtype)
            picked = block[:, rows[picked_rows] - first][:, :, cols[picked_cols] - start]
            out[:, picked_rows[0] : picked_rows[-1] + 1, picked_cols[0] : picked_cols[-1] + 1] = picked
    return out


TILE_ROW_CACHE_MAX_MB = 1024
"""Most GDAL block cache a mapping run takes for one row of tiles (a full Sentinel-2 tile needs about 400)."""
NOT_EMPTY_BLOCKS = 4
"""Blocks per side of the grid of blocks sampled first when checking that a scene holds data."""


def _spread_blocks(dataset: DatasetReader, per_side: int) -> list[Window]:
    """Up to ``per_side`` x ``per_side`` block-aligned windows of one block each, spread evenly over the raster."""
    block_rows, block_cols = dataset.block_shapes[0]
    tops = sorted({block_rows * int(dataset.height * (i + 0.5) / per_side // block_rows) for i in range(per_side)})
    lefts = sorted({block_cols * int(dataset.width * (i + 0.5) / per_side // block_cols) for i in range(per_side)})
    return [
        Window(left, top, min(block_cols, dataset.width - left), min(block_rows, dataset.height - top))
        for top in tops
        for left in lefts
    ]


class SceneReader:
    """Open an optical scene and its SAR pair; read model inputs on the optical grid, window by window.

    Use as a context manager. Reads are not thread-safe (GDAL handles): call them from one thread.

    Args:
        optical_uri: Sentinel-2 L2A GeoTIFF, 12 bands in ``schema.S2_BANDS`` order, uint16 DN; local
            path or ``s3://`` URI.
        sar_uri: Sentinel-1 GeoTIFF with 2 bands, VV then VH (band descriptions ``VV``/``VH`` may
            reorder them), float sigma0 in dB or linear power, in any CRS, resolution and extent.
        sar_units: ``"db"``, ``"linear"``, or ``"auto"``: the bands' unit metadata if set, else dB
            when most sampled values are negative (the rule the dataset validation applies).

    Either URI may be None (a missing modality, fed as zeros), not both.
    """

    def __init__(self, optical_uri: str | None, sar_uri: str | None, *, sar_units: SarUnits = "auto") -> None:
        if sar_units not in ("auto", "db", "linear"):
            raise ValueError(f"sar_units must be 'auto', 'db' or 'linear', got {sar_units!r}")
        if optical_uri is None and sar_uri is None:
            raise ValueError("a scene needs a Sentinel-2 file, a Sentinel-1 file, or both")
        self.optical_uri = optical_uri
        self.sar_uri = sar_uri
        self.requested_sar_units: SarUnits = sar_units
        self._stack = ExitStack()
        self._power_vrt: DatasetReader | None = None
        self._gathered: _GatheredOverview | None = None

    # --- opening -------------------------------------------------------------------------------

    def __enter__(self) -> SceneReader:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stack.close()

    @property
    def modalities(self) -> str:
        """``"S2+S1"``, ``"S2 only"`` or ``"S1 only"``: what the model is fed."""
        if self.optical_uri is None:
            return "S1 only"
        return "S2 only" if self.sar_uri is None else "S2+S1"

    def _open(self) -> None:
        stack = self._stack
        for uri in dict.fromkeys(u for u in (self.optical_uri, self.sar_uri) if u is not None):
            stack.enter_context(rasterio_env(uri))
        if self.optical_uri is not None:
            self.optical: DatasetReader = stack.enter_context(open_raster(self.optical_uri))
            self.optical_info: RasterInfo = info_of(self.optical)
            expect_band_count(self.optical_info, len(schema.S2_BANDS), "Sentinel-2 scene")
            crs = _expect_georeferenced(self.optical_info)
            self.grid = SceneGrid(crs, self.optical_info.transform, self.optical_info.width, self.optical_info.height)
            self.optical_units: OpticalUnits = self._resolve_optical_units()
        if self.sar_uri is not None:
            self.sar: DatasetReader = stack.enter_context(open_raster(self.sar_uri))
            self.sar_info: RasterInfo = info_of(self.sar)
            expect_band_count(self.sar_info, len(schema.S1_POLARISATIONS), "Sentinel-1 file (VV, VH)")
            sar_crs = _expect_georeferenced(self.sar_info)
            if not np.issubdtype(np.dtype(self.sar_info.dtype), np.floating):
                raise DataError(
                    self.sar_uri, f"SAR must hold floating-point sigma0 (dB or linear), found {self.sar_info.dtype}"
                )
            if self.optical_uri is None:
                self.grid = SceneGrid(sar_crs, self.sar_info.transform, self.sar_info.width, self.sar_info.height)
            self.sar_indexes = _polarisation_indexes(self.sar_info)
            if self.optical_uri is not None:
                self._check_overlap()
            self.sar_units: Literal["db", "linear"] = self._resolve_units()
            self.same_grid = self.optical_uri is None or grid_mismatch(self.optical_info, self.sar_info) is None
            self._warped: WarpedVRT | None = None if self.same_grid else self._warp_to(self.grid, SAR_RESAMPLING)
        if self.optical_uri is not None:
            self._check_not_empty()

    def _check_overlap(self) -> None:
        assert self.sar_uri is not None and self.optical_uri is not None
        optical_bounds = self.optical.bounds
        try:
            left, bottom, right, top = transform_bounds(
                self.sar_info.crs, self.grid.crs, *self.sar.bounds, densify_pts=21
            )
        except (RasterioError, ValueError) as error:  # far outside the optical CRS's area of use
            raise DataError(self.sar_uri, f"footprint cannot be placed in the optical CRS ({error})") from error
        finite = all(math.isfinite(v) for v in (left, bottom, right, top))
        if (
            not finite
            or left >= optical_bounds.right
            or right <= optical_bounds.left
            or bottom >= optical_bounds.top
            or top <= optical_bounds.bottom
        ):
            raise DataError(
                self.sar_uri,
                f"SAR footprint {tuple(round(v, 3) for v in self.sar.bounds)} ({_crs_name(self.sar_info.crs)}) does "
                f"not overlap the optical scene {self.optical_uri} {tuple(round(v, 3) for v in optical_bounds)} "
                f"({_crs_name(self.grid.crs)})",
            )

    def _resolve_units(self) -> Literal["db", "linear"]:
        """SAR units: requested, or declared by the file, checked against a decimated read either way."""
        assert self.sar_uri is not None
        sample = self._decimated_sar_sample()
        if sample.size == 0:
            raise DataError(self.sar_uri, "holds no valid SAR value (all NaN, infinite or nodata)")
        requested = None if self.requested_sar_units == "auto" else self.requested_sar_units
        declared = requested or sar_units_declared(self.sar)
        units = check_sar_units(declared, sample, self.sar_uri)
        if units == "linear" and declared is None:
            note_once(self.sar_uri, "SAR values are linear power (no unit declared); converted to dB")
        return units

    def _resolve_optical_units(self) -> OpticalUnits:
        """Optical units from a decimated read, decided once so every window is read alike."""
        assert self.optical_uri is not None
        if not np.issubdtype(np.dtype(self.optical_info.dtype), np.floating):
            return optical_units(self.optical, np.empty((0,), np.float32))  # integers are DN by contract: no read
        shape = (min(256, self.grid.height), min(256, self.grid.width))
        return optical_units(self.optical, _decimated(self.optical, self.optical_uri, shape, out_dtype="float32"))

    def _decimated_sar_sample(self, side: int = 256) -> np.ndarray:
        assert self.sar_uri is not None
        shape = (min(side, self.sar_info.height), min(side, self.sar_info.width))
        values = _decimated(self.sar, self.sar_uri, shape, indexes=list(self.sar_indexes))
        finite = values[np.isfinite(values)]
        if self.sar_info.nodata is not None and not math.isnan(self.sar_info.nodata):
            finite = finite[finite != self.sar_info.nodata]
        return finite

    def _linear_source(self) -> DatasetReader:
        """The SAR in linear power: the file itself, or a derived VRT applying ``dB2pow`` to it (opened once)."""
        assert self.sar_uri is not None
        if self.sar_units == "linear":
            return self.sar
        if self._power_vrt is None:
            self._power_vrt = self._stack.enter_context(rasterio.open(db_to_power_vrt(self.sar_uri, self.sar_info)))
        return self._power_vrt

    def _warp_to(self, grid: SceneGrid, resampling: Resampling) -> WarpedVRT:
        """A warped view of the SAR power on ``grid``: NaN outside the footprint and where SAR has no data."""
        source = self._linear_source()
        source_nodata = float("nan") if self.sar_units == "db" or source.nodata is None else source.nodata
        return self._stack.enter_context(
            warped_view(source, grid, resampling, src_nodata=source_nodata, nodata=float("nan"), dtype="float32")
        )

    def _check_not_empty(self) -> None:
        """Raise when no optical pixel holds data.

        A few blocks spread over the scene first (a decimated look decodes every block: 3.6 s of CPU at
        8192 x 8192 x 12 bands, against 0.2 s), then the decimated look, and a strip scan only if
        neither finds data.
        """
        assert self.optical_uri is not None
        for window in _spread_blocks(self.optical, NOT_EMPTY_BLOCKS):
            if optical_valid(_read(self.optical, self.optical_uri, window=window), self.optical_info.nodata).any():
                return
        shape = (min(256, self.grid.height), min(256, self.grid.width))
        decimated = _decimated(self.optical, self.optical_uri, shape)
        if optical_valid(decimated, self.optical_info.nodata).any():
            return
        for window in self.strips():
            if optical_valid(read_window(self.optical, window), self.optical_info.nodata).any():
                return
        raise DataError(self.optical_uri, "the scene holds no data: every pixel is nodata (0 DN in all bands)")

    def strips(self) -> Iterator[Window]:
        """Full-width windows of a few rows each, covering the scene top to bottom."""
        bytes_per_row = self.grid.width * len(schema.S2_BANDS) * np.dtype(self.optical_info.dtype).itemsize
        rows = max(1, NODATA_SCAN_BYTES // bytes_per_row)
        for row in range(0, self.grid.height, rows):
            yield Window(0, row, self.grid.width, min(rows, self.grid.height - row))

    # --- reading -------------------------------------------------------------------------------

    def sar_db(self, window: Window) -> np.ndarray:
        """SAR sigma0 in dB [2,h,w] (VV, VH) on the output grid; NaN where SAR has no data."""
        assert self.sar_uri is not None
        if self._warped is None:  # already on the output grid: read as stored, as the dataset does
            values = _read(self.sar, self.sar_uri, indexes=list(self.sar_indexes), window=window, out_dtype="float32")
            nodata = self.sar_info.nodata
            if nodata is not None and not math.isnan(nodata):
                values[values == nodata] = np.nan
            return schema.linear_to_db(values) if self.sar_units == "linear" else values
        power = _read(self._warped, self.sar_uri, indexes=list(self.sar_indexes), window=window)
        return schema.linear_to_db(power)

    def optical_dn(self, window: Window, out: np.ndarray | None = None) -> np.ndarray:
        """Optical values of ``window`` as float32 [12,h,w], GDAL converting during the read (into ``out`` if given)."""
        assert self.optical_uri is not None
        if out is None:
            return read_window(self.optical, window, out_dtype="float32")
        return _read(self.optical, self.optical_uri, window=window, out_dtype="float32", out=out)

    def read(self, window: Window, out: tuple[np.ndarray, np.ndarray] | None = None) -> SceneWindow:
        """Model inputs of ``window`` (inside the scene) and the pixels where the present sensors hold data.

        ``out``: float32 optical [12,h,w] and SAR [2,h,w] arrays to fill (slots of a batch, so tiles are
        not copied again to stack them); the window's inputs are then those arrays, same values.
        """
        shape = (int(window.height), int(window.width))
        optical_out, sar_out = out if out is not None else (None, None)
        if self.optical_uri is not None:
            dn = self.optical_dn(window, optical_out)
            if self._gathered is not None:
                self._gathered.add(window, dn)
            valid = optical_valid(dn, self.optical_info.nodata)
            optical = dn_to_reflectance(self.optical, dn, self.optical_units)
        else:
            valid, optical = np.ones(shape, bool), np.zeros((len(schema.S2_BANDS), *shape), np.float32)
        if self.sar_uri is None:
            sar = np.zeros((len(schema.S1_POLARISATIONS), *shape), np.float32)
        else:
            db = self.sar_db(window)
            valid &= np.isfinite(db).all(axis=0)
            sar = scale_sar(db)
        if optical_out is not None and sar_out is not None:
            if optical is not optical_out:
                optical_out[...] = optical
            sar_out[...] = sar
            return SceneWindow(optical_out, sar_out, valid)
        return SceneWindow(optical, sar, valid)

    def tile_row_cache_mb(self, rows: int) -> int:
        """Megabytes of GDAL block cache that hold every block a full-width row of tiles ``rows`` high touches.

        Tiles overlap by rows, so each row of tiles reads the lower block row of the one above again.
        With a cache smaller than two block rows GDAL decoded each optical block about twice (6.7 s
        against 3.6 s of CPU at 8192 x 8192 x 12 bands); beyond that size more cache did not pay.
        """
        total = 0
        files = [(self.optical, 1.0)] if self.optical_uri is not None else []
        if self.sar_uri is not None:
            files.append((self.sar, self.sar.height / self.grid.height))
        for dataset, scale in files:
            block_rows, _ = dataset.block_shapes[0]
            spanned = (math.ceil(rows * scale / block_rows) + 1) * block_rows
            total += spanned * dataset.width * dataset.count * np.dtype(dataset.dtypes[0]).itemsize
        return min(TILE_ROW_CACHE_MAX_MB, max(STREAMING_CACHE_MB, math.ceil(1.25 * total / 2**20)))

    def gather_overview(self, max_side: int) -> None:
        """Keep the optics that ``overview(max_side)`` needs from the windows read from now on.

        Only for files without overviews: with them the decimated read is cheap already, and the
        gathered nearest pixels would differ from the overview's, so a resumed run (which reads only
        part of the scene and falls back to the file) would draw another quicklook.
        """
        if self.optical_uri is None or self.optical.overviews(1):
            return
        coarse = self._overview_grid(max_side)
        shape = (coarse.height, coarse.width)
        self._gathered = _GatheredOverview(shape, self.grid.height, self.grid.width, len(schema.S2_BANDS))

    def _overview_grid(self, max_side: int) -> SceneGrid:
        """The scene's grid coarsened to at most ``max_side`` pixels a side."""
        scale = max(1.0, max(self.grid.width, self.grid.height) / max_side)
        width, height = max(1, round(self.grid.width / scale)), max(1, round(self.grid.height / scale))
        transform = self.grid.transform @ Affine.scale(self.grid.width / width, self.grid.height / height)
        return SceneGrid(self.grid.crs, transform, width, height)

    def overview(self, max_side: int) -> tuple[SceneGrid, SceneWindow]:
        """The whole scene decimated to at most ``max_side`` pixels a side, for quicklooks.

        Optics are read through overviews where the file has them (nearest); SAR power is averaged by
        the warp straight onto the coarse grid, so neither reads the scene at full resolution into memory.
        """
        coarse = self._overview_grid(max_side)
        height, width = coarse.height, coarse.width
        valid = np.ones((height, width), bool)
        optical = np.zeros((len(schema.S2_BANDS), height, width), np.float32)
        sar = np.zeros((len(schema.S1_POLARISATIONS), height, width), np.float32)
        if self.optical_uri is not None:
            dn = self._gathered.result((height, width)) if self._gathered is not None else None
            if dn is None:
                dn = _decimated(self.optical, self.optical_uri, (height, width), out_dtype="float32")
            valid = optical_valid(dn, self.optical_info.nodata)
            optical = dn_to_reflectance(self.optical, dn, self.optical_units)
        if self.sar_uri is not None:
            warped = self._warp_to(coarse, Resampling.average)
            db = schema.linear_to_db(_read(warped, self.sar_uri, indexes=list(self.sar_indexes)))
            valid &= np.isfinite(db).all(axis=0)
            sar = scale_sar(db)
        return coarse, SceneWindow(optical, sar, valid)

    def fingerprint(self) -> dict[str, object]:
        """What identifies the inputs of a run (headers, and size and modification time of local files)."""
        facts: dict[str, object] = {"optical": None, "sar": None, "sar_units": None, "optical_units": None}
        if self.optical_uri is not None:
            facts.update(
                optical=_file_fingerprint(self.optical_uri, self.optical_info), optical_units=self.optical_units
            )
        if self.sar_uri is not None:
            facts.update(sar=_file_fingerprint(self.sar_uri, self.sar_info), sar_units=self.sar_units)
        return facts


def _expect_georeferenced(info: RasterInfo) -> CRS:
    """The file's CRS; a DataError when it has none or no geotransform (e.g. radar geometry with GCPs)."""
    if info.crs is None or info.transform == Affine.identity():
        raise DataError(
            info.path, "has no CRS or geotransform (radar geometry with GCPs?); terrain-correct / georeference it first"
        )
    return info.crs


def _polarisation_indexes(info: RasterInfo) -> tuple[int, int]:
    """1-based band indexes of VV and VH: from band descriptions when they name both, else bands 1, 2."""
    names = [str(d or "").strip().upper() for d in info.descriptions]
    if sorted(names) == sorted(schema.S1_POLARISATIONS):
        vv, vh = (names.index(p) + 1 for p in schema.S1_POLARISATIONS)
        return vv, vh
    return 1, 2


def _crs_name(crs: CRS | None) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


def _file_fingerprint(uri: str, info: RasterInfo) -> dict[str, object]:
    facts: dict[str, object] = {
        "uri": uri,
        "width": info.width,
        "height": info.height,
        "count": info.count,
        "dtype": info.dtype,
        "crs": info.crs.to_string() if info.crs else None,
        "transform": [float(v) for v in tuple(info.transform)[:6]],
        "nodata": None if info.nodata is None or math.isnan(info.nodata) else float(info.nodata),
    }
    if not is_s3_uri(uri):
        stat = os.stat(uri)
        facts.update(bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return facts
