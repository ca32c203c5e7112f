"""The suites of each layout: which rules of the vocabulary apply to which file, with which parameters.

Chips (``samples``, ``splits``, ``metadata`` tables) and scene stacks (``scenes``, ``manifest``) draw
every per-file rule from ``rules.py``, so an id means the same check in both.
"""

from __future__ import annotations

from typing import Any

from cloudlulc import schema
from cloudlulc.validation.measure import CANONICAL_BAND_NAMES, SAR_BAND_NAMES
from cloudlulc.validation.rules import BETWEEN, DATASET, RoleFile, Rule, file_rules, required_columns, whole_rules
from cloudlulc.validation.thresholds import SceneThresholds, Thresholds

__all__ = [
    "DATASET",
    "Rule",
    "Thresholds",
    "manifest_rules",
    "metadata_rules",
    "required_columns",
    "sample_rules",
    "scene_rules",
    "split_rules",
]

OPTICAL_HEADER = ("optical.band_count", "optical.band_order", "optical.dtype")
CHIP_SAR = ("sar.band_count", "sar.dtype", "sar.nodata", "sar.nan", "sar.units_db", "sar.median_db_range")
SCENE_OPTICAL = (*OPTICAL_HEADER, "optical.nodata", "optical.empty", "optical.nan", "optical.percentile_range")
SCENE_SAR = (
    "sar.band_count",
    "sar.band_order",
    "sar.dtype",
    "sar.nodata",
    "sar.empty",
    "sar.nan",
    "sar.units_db",
    "sar.percentile_range",
)
CLOUD_MASK = ("cloud_mask.band_count", "cloud_mask.dtype", "cloud_mask.values")
LABEL = ("label.band_count", "label.dtype", "label.values")
CHIP_MEDIAN_DB: dict[str, tuple[float, float]] = {"VV": (-40.0, 5.0), "VH": (-45.0, 5.0)}
"""Range of a chip's median sigma0 per polarisation (cross-polarised returns are weaker)."""
OPTICAL_PARAMS: dict[str, Any] = {"bands": len(schema.S2_BANDS), "names": CANONICAL_BAND_NAMES}


def chip_files(limits: Thresholds) -> list[RoleFile]:
    """The files of a chip sample and the rules each one gets (the clear image: header rules only)."""
    common = {"max_nodata": limits.max_nodata_fraction, **OPTICAL_PARAMS}
    files = [
        RoleFile(
            "optical",
            "opt_cloudy",
            (*OPTICAL_HEADER, "optical.p99_range", "optical.nodata"),
            {**common, "file": "Opt_S2_cloudy"},
        ),
        RoleFile("optical", "opt_clear", OPTICAL_HEADER, {**common, "file": "Opt_S2_clear"}),
    ]
    for polarisation in schema.S1_POLARISATIONS:
        low, high = CHIP_MEDIAN_DB[polarisation]
        prefix = f"sar_{polarisation.lower()}"
        band = {"polarisation": polarisation, "median_db_min": low, "median_db_max": high}
        params = {**common, "file": f"SAR {polarisation}", "bands": 1, "names": polarisation}
        files.append(RoleFile("sar", prefix, CHIP_SAR, params, bands=((prefix, band),)))
    files.append(RoleFile("label", "label", LABEL, {"file": "Label"}))
    return files


def sample_rules(limits: Thresholds) -> list[Rule]:
    """Rules over per-sample raster statistics (the ``samples`` table)."""
    params = {"max_nodata": limits.max_nodata_fraction, "unit": "sample"}
    rules = whole_rules(("files.readable", "grid.agree"), "samples", params)
    for file in chip_files(limits):
        rules += file_rules(file)
    return rules + whole_rules(("sample.nodata",), "samples", params)


def split_rules() -> list[Rule]:
    """Rules over the split files."""
    return [
        Rule(
            "split.files_exist",
            "splits",
            "ExpectColumnValuesToBeInSet",
            {"column": "missing_files", "value_set": [""]},
            "every path in a split file exists",
            "missing_files",
        ),
        Rule(
            "split.disjoint",
            "splits",
            "ExpectColumnValuesToBeInSet",
            {"column": "also_in_splits", "value_set": [""]},
            "no sample is listed in two splits",
            "also_in_splits",
        ),
        Rule(
            "split.unique",
            "splits",
            "ExpectColumnValuesToBeUnique",
            {"column": "opt_cloudy"},
            "no sample is listed twice",
        ),
    ]


METADATA_COLUMNS = ["name", "cloud_cover", "optical_date", "crs", "nodata_fraction"]


def metadata_rules(limits: Thresholds, sample_count: int) -> list[Rule]:
    """Rules over the metadata table; the distribution rule needs at least 10 samples to mean anything."""
    rules = [
        Rule(
            "metadata.columns",
            "metadata",
            "ExpectTableColumnsToMatchSet",
            {"column_set": METADATA_COLUMNS, "exact_match": False},
            "the metadata table has its core columns",
        ),
        Rule(
            "metadata.cloud_cover",
            "metadata",
            "ExpectColumnValuesToNotBeNull",
            {"column": "cloud_cover"},
            "every sample has a cloud-cover fraction",
        ),
        Rule(
            "metadata.cloud_cover",
            "metadata",
            BETWEEN,
            {"column": "cloud_cover", "min_value": 0.0, "max_value": 1.0},
            "cloud cover is a fraction in [0, 1]",
        ),
    ]
    if sample_count >= 10:
        rules.append(
            Rule(
                "metadata.cloud_distribution",
                "metadata",
                "ExpectColumnStdevToBeBetween",
                {"column": "cloud_cover", "min_value": limits.min_cloud_cover_stdev},
                "cloud cover varies across samples (a distribution is present)",
            )
        )
    return rules


def scene_files(limits: SceneThresholds) -> list[RoleFile]:
    """The files of a scene stack and their rules; each failure names the file through its path column."""
    common = {
        "max_nodata": limits.max_nodata_fraction,
        "reflectance_min": limits.reflectance_min,
        "reflectance_max": limits.reflectance_max,
        "sar_db_min": limits.sar_db_min,
        "sar_db_max": limits.sar_db_max,
    }
    sar = {"bands": len(schema.S1_POLARISATIONS), "names": SAR_BAND_NAMES}
    bands = tuple((f"sar_{p.lower()}", {"polarisation": p}) for p in schema.S1_POLARISATIONS)
    files = [
        ("optical", SCENE_OPTICAL, {**common, **OPTICAL_PARAMS}, ()),
        ("sar", SCENE_SAR, {**common, **sar}, bands),
        ("cloud_mask", CLOUD_MASK, {}, ()),
        ("label", LABEL, {}, ()),
    ]
    return [
        RoleFile(role, role, ids, {**params, "file": f"{role}.tif"}, bands, path_column=f"{role}_path", table="scenes")
        for role, ids, params, bands in files
    ]


SCENE_WHOLE = ("manifest.row", "manifest.unique", "files.present", "files.readable", "files.checksum", "grid.agree")


def scene_rules(limits: SceneThresholds) -> list[Rule]:
    """Rules over the per-stack table (``scenes``); a file's rules name the file in the failure's detail."""
    params = {"max_nodata": limits.max_nodata_fraction, "unit": "stack"}
    rules = whole_rules(SCENE_WHOLE, "scenes", params)
    for file in scene_files(limits):
        rules += file_rules(file)
    return rules + whole_rules(("scene.nodata",), "scenes", params)


def manifest_rules() -> list[Rule]:
    """The rule over the manifest as a whole (one row, named ``(dataset)``)."""
    return whole_rules(("manifest.scenes",), "manifest", {})
