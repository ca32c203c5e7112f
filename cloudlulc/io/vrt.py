"""Small GDAL VRTs built in memory: how a file is named inside one, and SAR dB turned into linear power.

Resampling backscatter must happen in linear power (averaging dB biases dark areas low). A SAR file
stored in dB is therefore wrapped in a derived VRT band applying GDAL's ``dB2pow`` pixel function,
and a warp reads that VRT: nothing reads the whole file.
"""

from __future__ import annotations

import math
import os
from typing import Any, Protocol
from xml.sax.saxutils import escape

from rasterio.enums import Resampling
from rasterio.io import DatasetReader
from rasterio.vrt import WarpedVRT

from cloudlulc.io.rasters import RasterInfo
from cloudlulc.io.storage import is_s3_uri


def gdal_path(uri: str) -> str:
    """The path GDAL opens for ``uri`` inside a VRT (``/vsis3/``, ``/vsicurl/``, or an absolute path)."""
    if is_s3_uri(uri):
        return "/vsis3/" + uri.removeprefix("s3://")
    if uri.startswith(("http://", "https://")):
        return "/vsicurl/" + uri
    return os.path.abspath(uri)


def db_to_power_vrt(uri: str, info: RasterInfo) -> str:
    """VRT XML presenting every band of the dB file ``uri`` as float32 linear power (NaN where nodata)."""
    nodata = info.nodata
    source_nodata = "" if nodata is None or math.isnan(nodata) else f"<NODATA>{nodata!r}</NODATA>"
    bands = "".join(
        f'<VRTRasterBand dataType="Float32" band="{band}" subClass="VRTDerivedRasterBand">'
        "<NoDataValue>nan</NoDataValue><PixelFunctionType>dB2pow</PixelFunctionType>"
        f'<ComplexSource><SourceFilename relativeToVRT="0">{escape(gdal_path(uri))}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand>{source_nodata}</ComplexSource></VRTRasterBand>"
        for band in range(1, info.count + 1)
    )
    geotransform = ",".join(repr(v) for v in info.transform.to_gdal())
    crs = escape(info.crs.to_wkt()) if info.crs else ""
    return (
        f'<VRTDataset rasterXSize="{info.width}" rasterYSize="{info.height}"><SRS>{crs}</SRS>'
        f"<GeoTransform>{geotransform}</GeoTransform>{bands}</VRTDataset>"
    )


class GridLike(Protocol):
    """A target pixel grid: what a warped view needs of it (ingest's ``Grid``, mapping's ``SceneGrid``)."""

    @property
    def crs(self) -> Any: ...  # noqa: D102
    @property
    def transform(self) -> Any: ...  # noqa: D102
    @property
    def width(self) -> int: ...  # noqa: D102
    @property
    def height(self) -> int: ...  # noqa: D102


def warped_view(
    source: DatasetReader,
    grid: GridLike,
    resampling: Resampling,
    *,
    src_nodata: float | None,
    nodata: float | None,
    dtype: str | None = None,
    tolerance: float = 0.125,
) -> WarpedVRT:
    """``source`` as GDAL sees it resampled onto ``grid``: read window by window, never whole.

    ``tolerance`` is GDAL's approximation error in pixels (its default 0.125; products use 1e-6 so a
    class never depends on how reads are windowed). The caller closes the view (ingest and mapping
    enter it into their ``ExitStack``).
    """
    return WarpedVRT(
        source,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=resampling,
        src_nodata=src_nodata,
        nodata=nodata,
        dtype=dtype or source.dtypes[0],
        tolerance=tolerance,
    )
