"""The per-sample metadata table: cloud cover, dates, CRS, nodata fraction and class histogram.

The generator and ingest write it as ``metadata.csv``; for datasets that come without one (the
published CloudLULC-Set) :func:`compute_metadata` derives it from the rasters.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from cloudlulc import schema
from cloudlulc.data.clouds import check_cloud_codes, sample_cloud_cover
from cloudlulc.data.layout import METADATA_FILE, DatasetLayout, SampleRecord
from cloudlulc.errors import DataError
from cloudlulc.io.rasters import check_same_grid, info_of, open_raster, read_raster, read_window

DATE_TAG = "ACQUISITION_DATE"


@dataclass
class SampleMetadata:
    """One row of the metadata table."""

    name: str
    split: str
    cloud_cover: float
    """Fraction of pixels under thin or opaque cloud, in [0, 1]."""
    opaque_cloud_fraction: float
    shadow_fraction: float
    optical_date: str | None
    sar_date: str | None
    time_gap_days: float | None
    crs: str
    width: int
    height: int
    nodata_fraction: float
    """Fraction of pixels without valid optical or SAR data."""
    class_fractions: dict[int, float] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        """Flat dict for a DataFrame row; class fractions become ``class_<id>`` columns."""
        values = asdict(self)
        fractions = values.pop("class_fractions")
        for class_id in [c.id for c in schema.CLASSES] + [schema.IGNORE_INDEX]:
            values[f"class_{class_id}"] = float(fractions.get(class_id, 0.0))
        return values


def class_fractions(label: np.ndarray) -> dict[int, float]:
    """Share of each label value (class ids and 255) in a label array."""
    counts = np.bincount(label.ravel(), minlength=256)
    total = max(int(label.size), 1)
    return {int(v): float(counts[v]) / total for v in np.flatnonzero(counts)}


def cloud_fractions(mask: np.ndarray) -> tuple[float, float, float]:
    """(cloud cover, opaque fraction, shadow fraction) of a cloud-code mask."""
    total = max(mask.size, 1)
    thin = np.count_nonzero(mask == schema.CLOUD_THIN)
    opaque = np.count_nonzero(mask == schema.CLOUD_OPAQUE)
    shadow = np.count_nonzero(mask == schema.CLOUD_SHADOW)
    return (thin + opaque) / total, opaque / total, shadow / total


def gap_days(optical_date: str | None, sar_date: str | None) -> float | None:
    """Days from the SAR to the optical acquisition (positive: SAR came first)."""
    if not optical_date or not sar_date:
        return None
    return float((date.fromisoformat(optical_date[:10]) - date.fromisoformat(sar_date[:10])).days)


def compute_sample_metadata(layout: DatasetLayout, record: SampleRecord) -> SampleMetadata:
    """Derive one metadata row from a sample's rasters (cloud cover as :mod:`cloudlulc.data.clouds` finds it).

    Raises DataError naming the file when the sample's rasters do not share one grid.
    """
    with open_raster(layout.uri(record.opt_cloudy)) as cloudy_file:
        cloudy = read_window(cloudy_file)
        crs = str(cloudy_file.crs) if cloudy_file.crs else ""
        optical_date = cloudy_file.tags().get(DATE_TAG)
        height, width = cloudy_file.height, cloudy_file.width
        reference = info_of(cloudy_file)
    with open_raster(layout.uri(record.sar_vv)) as vv_file:
        check_same_grid(reference, info_of(vv_file))
        vv = read_window(vv_file, indexes=[1])[0]
        sar_date = vv_file.tags().get(DATE_TAG)
    nodata = np.all(cloudy == schema.S2_NODATA_DN, axis=0) | ~np.isfinite(vv)
    opaque = shadow = float("nan")
    if record.cloud_mask:
        source = layout.uri(record.cloud_mask)
        cover, opaque, shadow = cloud_fractions(check_cloud_codes(read_raster(source), source))
    else:
        cover, _ = sample_cloud_cover(layout, record)
    fractions = class_fractions(read_raster(layout.uri(record.label))[0]) if record.label else {}
    return SampleMetadata(
        name=record.name,
        split=record.split,
        cloud_cover=cover,
        opaque_cloud_fraction=opaque,
        shadow_fraction=shadow,
        optical_date=optical_date,
        sar_date=sar_date,
        time_gap_days=gap_days(optical_date, sar_date),
        crs=crs,
        width=width,
        height=height,
        nodata_fraction=float(nodata.mean()),
        class_fractions=fractions,
    )


def metadata_frame(rows: list[SampleMetadata]) -> pd.DataFrame:
    """The metadata table as a DataFrame, one row per sample, sorted by name."""
    frame = pd.DataFrame([r.row() for r in rows])
    return frame.sort_values("name", kind="stable").reset_index(drop=True) if not frame.empty else frame


def write_metadata(layout: DatasetLayout, frame: pd.DataFrame) -> None:
    """Write ``metadata.csv`` atomically."""
    layout.storage.write_bytes(METADATA_FILE, frame.to_csv(index=False, float_format="%.6g").encode())


def read_metadata(layout: DatasetLayout) -> pd.DataFrame | None:
    """The stored metadata table, or None when the dataset has none."""
    if not layout.storage.exists(METADATA_FILE):
        return None
    source = layout.uri(METADATA_FILE)
    try:
        return pd.read_csv(io.BytesIO(layout.storage.read_bytes(METADATA_FILE)))
    except (ValueError, pd.errors.ParserError) as error:
        raise DataError(source, f"cannot parse the metadata table ({error})") from error
