"""Assets read window by window on the output grid: resampled, reprojected and converted on the way in.

Each asset is opened once as a GDAL warped view (``WarpedVRT``) of the output grid, so a chip read
touches only the source blocks under that chip, whatever the asset's CRS, resolution or extent:

- Sentinel-2 bands at 10, 20 and 60 m: bilinear onto the 10 m grid, nodata (0) excluded from the kernel;
- the scene classification layer and label rasters: nearest neighbour (categories must not blend);
- Sentinel-1 VV/VH: resampled in linear power (a dB source is wrapped in GDAL's ``dB2pow`` first), then
  converted to dB; integer-valued SAR (uncalibrated GRD digital numbers) is refused.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Literal

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.errors import DataError
from cloudlulc.ingest.assets import SCL_TO_CLOUD_MASK, Asset, probe, with_retries
from cloudlulc.ingest.grid import Grid
from cloudlulc.io.gdal_env import rasterio_env
from cloudlulc.io.rasters import OPEN_PROBLEM, gdal_errors, info_of
from cloudlulc.io.retry import RetryPolicy
from cloudlulc.io.sentinel import check_sar_units, unit_of_label
from cloudlulc.io.vrt import db_to_power_vrt, warped_view

Kind = Literal["reflectance", "categorical", "sar"]


def is_remote(href: str) -> bool:
    """Whether reading ``href`` goes over the network (worth retrying)."""
    return href.startswith(("http://", "https://", "s3://"))


def policy_for(href: str, policy: RetryPolicy) -> RetryPolicy:
    """Remote reads get the retry policy; a local file that fails will fail again, so it gets one attempt."""
    return policy if is_remote(href) else replace(policy, attempts=1)


@dataclass
class AssetView:
    """One asset seen through the output grid; ``read`` returns a window of it."""

    asset: Asset
    kind: Kind
    view: WarpedVRT
    policy: RetryPolicy

    def read(self, window: Window) -> np.ndarray:
        """[rows, cols] of the window: float32 DN (NaN = nodata), uint8 categories, or SAR power (NaN = nodata)."""
        return with_retries(lambda: self._read_once(window), self.asset.where, policy_for(self.asset.href, self.policy))

    def _read_once(self, window: Window) -> np.ndarray:
        with gdal_errors(self.asset.where):
            return self.view.read(1, window=window)


class GridReader:
    """Opens assets as views of one grid and closes them all together (use as a context manager)."""

    def __init__(self, grid: Grid, policy: RetryPolicy) -> None:
        self.grid = grid
        self.policy = policy
        self._stack = ExitStack()

    def __enter__(self) -> GridReader:
        # No remote read may hang: GDAL's own HTTP requests give up after the policy's timeout too.
        timeout = str(max(1, round(self.policy.timeout_s)))
        self._stack.enter_context(rasterio.Env(GDAL_HTTP_TIMEOUT=timeout, GDAL_HTTP_CONNECTTIMEOUT=timeout))
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stack.close()

    def open(self, asset: Asset, kind: Kind) -> AssetView:
        """A view of ``asset`` on the grid; unreachable, corrupt or unsuitable assets raise a DataError naming it."""
        if is_remote(asset.href):
            with_retries(lambda: probe(asset.href, self.policy.timeout_s), asset.where, self.policy)
        self._stack.enter_context(rasterio_env(asset.href))
        source = self._open_source(asset)
        if kind == "sar":
            source = self._linear_power(asset, source)
        return AssetView(asset, kind, self._warp(asset, source, kind), self.policy)

    def _open_source(self, asset: Asset) -> DatasetReader:
        def open_once() -> DatasetReader:
            with gdal_errors(asset.where, OPEN_PROBLEM):
                return rasterio.open(asset.href)

        source = self._stack.enter_context(with_retries(open_once, asset.where, policy_for(asset.href, self.policy)))
        if source.crs is None or source.transform == rasterio.Affine.identity():
            raise DataError(
                asset.where, "has no CRS or geotransform (radar geometry with GCPs?); use a geocoded product"
            )
        return source

    def _linear_power(self, asset: Asset, source: DatasetReader) -> DatasetReader:
        """The SAR asset in linear power: as is, or through a ``dB2pow`` VRT when it holds dB."""
        if not np.issubdtype(np.dtype(source.dtypes[0]), np.floating):
            raise DataError(
                asset.where,
                f"holds {source.dtypes[0]} digital numbers, not calibrated backscatter; ingest needs sigma0 or "
                "gamma0 (linear power or dB) from a calibrated, geocoded product (e.g. a radiometrically "
                "terrain-corrected collection); pass that collection with --s1-collection",
            )
        if _sar_units(asset, source) == "linear":
            return source
        return self._stack.enter_context(rasterio.open(db_to_power_vrt(asset.href, info_of(source))))

    def _warp(self, asset: Asset, source: DatasetReader, kind: Kind) -> WarpedVRT:
        declared = asset.raster_band.get("nodata", source.nodata)
        src_nodata: float | None
        nodata: float | None
        if kind == "reflectance":
            src_nodata = float(declared) if declared is not None else float(schema.S2_NODATA_DN)
            resampling, nodata, dtype = Resampling.bilinear, float("nan"), "float32"
        elif kind == "categorical":
            src_nodata = float(declared) if declared is not None else None  # outside the source reads 0
            resampling, nodata, dtype = Resampling.nearest, src_nodata, source.dtypes[0]
        else:
            src_nodata = float("nan") if source.nodata is None else float(source.nodata)
            resampling, nodata, dtype = Resampling.bilinear, float("nan"), "float32"
        return self._stack.enter_context(
            warped_view(source, self.grid, resampling, src_nodata=src_nodata, nodata=nodata, dtype=dtype)
        )


def _sar_units(asset: Asset, source: DatasetReader) -> Literal["db", "linear"]:
    """Units of a float SAR asset: catalogue ``unit`` or the file's band unit, checked against a decimated read."""

    def sample() -> np.ndarray:
        side = (min(256, source.height), min(256, source.width))
        with gdal_errors(asset.where):
            values = source.read(1, out_shape=side)
        values = values[np.isfinite(values)]
        if source.nodata is not None and not math.isnan(source.nodata):
            values = values[values != source.nodata]
        return values

    labels = (asset.raster_band.get("unit"), source.units[0] if source.units else None)
    declared = next((found for found in map(unit_of_label, labels) if found is not None), None)
    values = sample()
    if values.size == 0:
        raise DataError(asset.where, "holds no valid SAR value (all NaN, infinite or nodata)")
    return check_sar_units(declared, values, asset.where)


def dn_to_uint16(dn: np.ndarray) -> np.ndarray:
    """Resampled float DN (NaN = nodata) to stored uint16: nodata 0, valid pixels at least 1."""
    out = np.zeros(dn.shape, np.uint16)
    valid = np.isfinite(dn)
    out[valid] = np.clip(np.rint(dn[valid]), 1, np.iinfo(np.uint16).max)
    return out


def scl_to_cloud_mask(scl: np.ndarray) -> np.ndarray:
    """Scene classification codes to the product's cloud-mask codes (``schema.CLOUD_*``)."""
    lookup = np.zeros(256, np.uint8)
    for code, mask in SCL_TO_CLOUD_MASK.items():
        lookup[code] = mask
    return lookup[scl.astype(np.uint8)]
