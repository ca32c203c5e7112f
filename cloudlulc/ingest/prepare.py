"""One acquisition pair opened on the output grid, and any window of it read as the dataset stores it.

What comes out of :func:`read_window` follows the data contract (DATA.md): Sentinel-2 uint16 digital
numbers as delivered (the file's L2A offset goes into a ``BOA_ADD_OFFSET`` tag, nothing is shifted),
0 where any band or SAR lacks data; Sentinel-1 sigma0 in dB, NaN where it lacks data; the SCL-derived
cloud mask; labels remapped to class ids. A Sentinel-2-only pair (no Sentinel-1 partner) reads SAR as
all NaN and its validity from the optical bands alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from cloudlulc import schema
from cloudlulc.ingest.assets import Asset, boa_offset_dn, s2_band_assets, sar_assets, scl_asset
from cloudlulc.ingest.coregister import AssetView, GridReader, dn_to_uint16, scl_to_cloud_mask
from cloudlulc.ingest.labels import remap
from cloudlulc.ingest.pairing import Pair


@dataclass(frozen=True)
class LabelSource:
    """A reference land-cover raster and the lookup that remaps its values to class ids."""

    uri: str
    lookup: np.ndarray
    """256 entries: class id (or 255) of every source value."""
    nodata: int | None = None


@dataclass
class PairViews:
    """Every asset of a pair as a view of the output grid."""

    pair: Pair
    optical: dict[str, AssetView]
    offsets_dn: dict[str, float]
    scl: AssetView | None
    sar: dict[str, AssetView]
    """Empty for a Sentinel-2-only pair."""
    label: AssetView | None
    label_source: LabelSource | None


@dataclass(frozen=True)
class WindowData:
    """One window of a pair, as stored."""

    dn: np.ndarray  # uint16 [12,h,w], 0 = nodata
    sar_db: np.ndarray  # float32 [2,h,w] VV, VH; NaN = nodata
    valid: np.ndarray  # bool [h,w]: every optical band and both SAR channels hold data
    cloud_mask: np.ndarray | None  # uint8 [h,w] schema.CLOUD_* codes, None without SCL
    label: np.ndarray | None  # uint8 [h,w] class ids, 255 = no label
    unmapped_label_fraction: float


def open_pair(reader: GridReader, pair: Pair, label_source: LabelSource | None) -> PairViews:
    """Find and open every asset of ``pair``; DataErrors name the item and asset at fault."""
    bands = s2_band_assets(pair.s2.item)
    sar = sar_assets(pair.s1.item) if pair.s1 is not None else {}
    scl = scl_asset(pair.s2.item)
    label = None
    if label_source is not None:
        label_asset = Asset("label source", "label", label_source.uri, {})
        label = reader.open(label_asset, "categorical")
    return PairViews(
        pair=pair,
        optical={band: reader.open(asset, "reflectance") for band, asset in bands.items()},
        offsets_dn={band: boa_offset_dn(pair.s2.item, asset) for band, asset in bands.items()},
        scl=reader.open(scl, "categorical") if scl else None,
        sar={polarisation: reader.open(asset, "sar") for polarisation, asset in sar.items()},
        label=label,
        label_source=label_source,
    )


def read_window(views: PairViews, window: Window) -> WindowData:
    """Read ``window`` of every asset of the pair (see the module note for the conventions)."""
    resampled = np.stack([views.optical[band].read(window) for band in schema.S2_BANDS])
    valid = np.isfinite(resampled).all(axis=0)
    if views.sar:
        power = np.stack([views.sar[p].read(window) for p in schema.S1_POLARISATIONS])
        valid &= np.isfinite(power).all(axis=0) & (power > 0).all(axis=0)
    else:
        power = np.full((len(schema.S1_POLARISATIONS), *valid.shape), np.nan, dtype="float32")
    dn = dn_to_uint16(resampled)
    dn[:, ~valid] = schema.S2_NODATA_DN
    sar_db = schema.linear_to_db(power)
    sar_db[:, ~valid] = np.nan
    cloud_mask = scl_to_cloud_mask(views.scl.read(window)) if views.scl else None
    label, unmapped = None, 0.0
    if views.label is not None and views.label_source is not None:
        source = views.label.read(window)
        label = remap(source, views.label_source.lookup)
        nodata = views.label_source.nodata if views.label_source.nodata is not None else views.label.view.nodata
        silent = label == schema.IGNORE_INDEX  # the table maps these source values to no class
        if nodata is not None:
            silent &= source != nodata
        unmapped = float(silent.mean())
    return WindowData(dn, sar_db, valid, cloud_mask, label, unmapped)
