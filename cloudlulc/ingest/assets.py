"""Which asset of a STAC item holds which band, what its values mean, and whether it can be reached.

Catalogues name assets differently (Earth Search: ``blue``, ``nir08``, ``scl``; Planetary Computer:
``B02``, ``B8A``, ``SCL``; Copernicus Data Space: ``B02_10m``...), so a band is found by its
``eo:bands`` name first, then by the known keys. The Level-2A offset follows the item's own metadata
(:func:`boa_offset_dn`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pystac
import requests

from cloudlulc import schema
from cloudlulc.errors import CloudLULCError, DataError
from cloudlulc.ingest.earth_search import (
    BASELINE_WITH_OFFSET,
    BOA_OFFSET_APPLIED,
    PROCESSING_BASELINE,
    S2_ASSET_KEYS,
    SAR_ASSET_KEYS,
    SCL_ASSET_KEYS,
    SCL_CIRRUS,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MEDIUM,
    SCL_SHADOW,
)
from cloudlulc.io.retry import RetryPolicy
from cloudlulc.io.storage import is_s3_uri, open_storage

log = logging.getLogger(__name__)


SCL_TO_CLOUD_MASK: dict[int, int] = {
    SCL_SHADOW: schema.CLOUD_SHADOW,
    SCL_CLOUD_MEDIUM: schema.CLOUD_OPAQUE,
    SCL_CLOUD_HIGH: schema.CLOUD_OPAQUE,
    SCL_CIRRUS: schema.CLOUD_THIN,
}
"""Scene classification (SCL) classes that become cloud-mask codes; every other class is clear."""


@dataclass(frozen=True)
class Asset:
    """One raster asset: where it is and what the catalogue says about its pixels."""

    item_id: str
    key: str
    href: str
    raster_band: dict[str, Any]
    """The first ``raster:bands`` entry (nodata, data_type, scale, offset, unit), empty when absent."""

    @property
    def where(self) -> str:
        """How errors name it: item, asset key and URL."""
        return f"{self.item_id} asset {self.key!r} ({self.href})"


def _asset(item: pystac.Item, key: str) -> Asset:
    asset = item.assets[key]
    bands = asset.extra_fields.get("raster:bands") or asset.extra_fields.get("bands") or [{}]
    return Asset(item.id, key, asset.get_absolute_href() or asset.href, dict(bands[0]))


def _eo_band_names(asset: pystac.Asset) -> set[str]:
    bands = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands") or []
    return {str(b.get("name", "")).upper() for b in bands if isinstance(b, dict)}


def _is_cog_or_tiff(asset: pystac.Asset) -> bool:
    media = (asset.media_type or "").lower()
    return "tiff" in media or asset.href.lower().endswith((".tif", ".tiff"))


def _finest(item: pystac.Item, keys: list[str]) -> str:
    def gsd(key: str) -> float:
        asset = item.assets[key]
        value = asset.extra_fields.get("gsd") or (asset.extra_fields.get("raster:bands") or [{}])[0].get(
            "spatial_resolution"
        )
        return float(value) if value else float("inf")

    return min(keys, key=lambda k: (gsd(k), k))


def s2_band_assets(item: pystac.Item) -> dict[str, Asset]:
    """The asset of each of the 12 bands (finest GeoTIFF when several); a DataError names a missing band."""
    found: dict[str, Asset] = {}
    missing: list[str] = []
    for band in schema.S2_BANDS:
        by_name = [k for k, a in item.assets.items() if band in _eo_band_names(a) and _is_cog_or_tiff(a)]
        by_key = [k for k in S2_ASSET_KEYS[band] if k in item.assets and _is_cog_or_tiff(item.assets[k])]
        candidates = by_name or by_key
        if not candidates:
            missing.append(band)
            continue
        found[band] = _asset(item, _finest(item, candidates))
    if missing:
        raise DataError(
            item.get_self_href() or item.id,
            f"Sentinel-2 item {item.id} has no GeoTIFF asset for band(s) {', '.join(missing)} "
            f"(looked for eo:bands names and asset keys {', '.join(k for b in missing for k in S2_ASSET_KEYS[b])})",
        )
    return found


def scl_asset(item: pystac.Item) -> Asset | None:
    """The scene classification layer, when the item has one."""
    key = next((k for k in SCL_ASSET_KEYS if k in item.assets), None)
    return _asset(item, key) if key else None


def sar_assets(item: pystac.Item) -> dict[str, Asset]:
    """The VV and VH assets of a Sentinel-1 item; a DataError names a missing polarisation."""
    found: dict[str, Asset] = {}
    for polarisation, keys in SAR_ASSET_KEYS.items():
        key = next((k for k in keys if k in item.assets), None)
        if key is None:
            raise DataError(
                item.get_self_href() or item.id,
                f"Sentinel-1 item {item.id} has no {polarisation} asset (looked for keys {', '.join(keys)}); "
                "CloudLULC-Net needs dual-polarisation (VV+VH) acquisitions",
            )
        found[polarisation] = _asset(item, key)
    return found


def _baseline(item: pystac.Item) -> tuple[int, int] | None:
    value = item.properties.get(PROCESSING_BASELINE) or item.properties.get("processing:version")
    if value is None:
        return None
    try:
        major, _, minor = str(value).partition(".")
        return int(major), int(minor or 0)
    except ValueError:
        return None


def boa_offset_dn(item: pystac.Item, asset: Asset) -> float:
    """BOA_ADD_OFFSET of an L2A band asset in digital numbers (0 or -1000), from the item's metadata.

    In order: Earth Search's ``earthsearch:boa_offset_applied: true`` means the offset was already
    applied to the pixels (0); a ``raster:bands`` offset is taken as ``offset / scale``; otherwise
    processing baseline 04.00 or later means -1000, earlier 0.
    """
    if item.properties.get(BOA_OFFSET_APPLIED) is True:
        return 0.0
    offset, scale = asset.raster_band.get("offset"), asset.raster_band.get("scale")
    if offset is not None and scale:
        return round(float(offset) / float(scale))
    baseline = _baseline(item)
    return float(schema.S2_BASELINE_OFFSET_DN) if baseline is not None and baseline >= BASELINE_WITH_OFFSET else 0.0


# --- reachability, with retries ----------------------------------------------------------------


T = TypeVar("T")


def with_retries(action: Callable[[], T], what: str, policy: RetryPolicy) -> T:
    """Run ``action``; on failure wait and retry per ``policy``, then raise a DataError naming ``what``.

    404s and timeouts are retried too: object stores lag behind the catalogue. No retry starts once
    ``policy.deadline_s`` has passed, and no wait runs past it.
    """
    delays = policy.delays()
    started = time.monotonic()
    for attempt in range(policy.attempts):
        try:
            return action()
        except (CloudLULCError, OSError, requests.RequestException) as error:
            elapsed = time.monotonic() - started
            if attempt == policy.attempts - 1 or elapsed >= policy.deadline_s:
                raise DataError(what, f"unreachable after {attempt + 1} attempts ({_reason(error)})") from error
            delay = min(delays[attempt], policy.deadline_s - elapsed)
            log.warning("%s: attempt %d failed (%s); retrying in %.1f s", what, attempt + 1, _reason(error), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _reason(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__


def probe(href: str, timeout_s: float) -> None:
    """Raise unless ``href`` answers: one byte over HTTP, a HEAD on S3, existence for a local file.

    Probing before GDAL opens a remote file keeps a transient 404 out of GDAL's per-process cache of
    missing files, so a retry can succeed.
    """
    if href.startswith(("http://", "https://")):
        response = requests.get(href, headers={"Range": "bytes=0-0"}, timeout=timeout_s)
        if response.status_code not in (200, 206):
            raise DataError(href, f"HTTP {response.status_code}")
        return
    if is_s3_uri(href):
        parent, _, name = href.rpartition("/")
        if not open_storage(parent).exists(name):
            raise DataError(href, "no such object")
        return
    if not Path(href.removeprefix("file://")).is_file():
        raise DataError(href, "no such file")
