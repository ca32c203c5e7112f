"""GDAL settings in one place, including how GDAL reaches ``s3://`` on custom endpoints."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from urllib.parse import urlparse

import rasterio
from rasterio.session import AWSSession

from cloudlulc.errors import StorageError
from cloudlulc.io.storage import is_s3_uri, s3_endpoint_url

GDAL_OPTIONS: dict[str, str | bool] = {
    # Do not list the folder of every file opened (slow on object stores, useless for GeoTIFFs).
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
}

STREAMING_CACHE_MB = 128
"""GDAL block cache of long streaming jobs (scene mapping): GDAL's default, 5 % of RAM, fills up with
blocks of the whole scene, so a job's memory would grow with the scene instead of staying flat."""


def bounded_block_cache(megabytes: int = STREAMING_CACHE_MB) -> rasterio.Env:
    """An environment in which GDAL caches at most ``megabytes`` of raster blocks."""
    # In bytes: rasterio hands an integer to GDAL as bytes (128 would mean a 128-byte cache).
    return rasterio.Env(GDAL_CACHEMAX=megabytes * 2**20)


def _s3_session_and_options() -> tuple[AWSSession, dict[str, str]]:
    import boto3
    from botocore.exceptions import BotoCoreError

    session = boto3.session.Session()
    try:
        credentials = session.get_credentials()
    except BotoCoreError as error:  # e.g. AWS_PROFILE names a profile that does not exist
        raise StorageError(
            f"cannot load S3 credentials for GDAL ({error}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or a valid AWS_PROFILE), and CLOUDLULC_S3_ENDPOINT_URL for a non-AWS endpoint"
        ) from error
    if credentials is None:
        raise StorageError(
            "no S3 credentials found for GDAL; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE), and CLOUDLULC_S3_ENDPOINT_URL for a non-AWS endpoint"
        )
    endpoint = s3_endpoint_url()
    options: dict[str, str] = {}
    gdal_endpoint = None
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        gdal_endpoint = parsed.netloc
        options["AWS_HTTPS"] = "NO" if parsed.scheme == "http" else "YES"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
    aws_session = AWSSession(session=session, endpoint_url=gdal_endpoint)
    return aws_session, options


def rasterio_env(uri: str) -> AbstractContextManager[object]:
    """A rasterio environment able to open ``uri``; a no-op for local files (no per-read cost)."""
    if not is_s3_uri(uri):
        return nullcontext()
    aws_session, options = _s3_session_and_options()
    # rasterio rejects AWS_* options as Env keywords, so the endpoint flags travel as variables.
    for name, value in options.items():
        os.environ.setdefault(name, value)
    return rasterio.Env(session=aws_session, **GDAL_OPTIONS)
