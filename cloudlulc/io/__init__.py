"""Raster and object-storage I/O: one code path for local folders and ``s3://`` URIs."""

from cloudlulc.io.rasters import (
    RasterInfo,
    RasterProfile,
    check_same_grid,
    open_raster,
    raster_info,
    read_raster,
    read_window,
    validate_cog,
    write_raster,
)
from cloudlulc.io.storage import LocalStorage, S3Storage, Storage, open_storage, staged_output

__all__ = [
    "LocalStorage",
    "RasterInfo",
    "RasterProfile",
    "S3Storage",
    "Storage",
    "check_same_grid",
    "open_raster",
    "open_storage",
    "raster_info",
    "read_raster",
    "read_window",
    "staged_output",
    "validate_cog",
    "write_raster",
]
