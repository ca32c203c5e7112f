"""The rules of a valid CloudLULC-Set, as Great Expectations 1.x suites over the measured tables.

Each rule is one expectation with a stable id (``optical.band_count``), a sentence for the report and
optionally a column whose text explains a failure (e.g. the GDAL error of an unreadable file).
Great Expectations is imported lazily: it costs about 2 s and only validation needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cloudlulc import schema
from cloudlulc.validation.stats import CANONICAL_BAND_NAMES

DATASET = "(dataset)"
"""Sample name used for failures that belong to the whole dataset, not one sample."""


@dataclass(frozen=True)
class Thresholds:
    """Tunable limits of the rules (our defaults)."""

    max_nodata_fraction: float = 0.05
    """Largest share of pixels without valid optical or SAR data in one sample."""
    min_cloud_cover_stdev: float = 0.01
    """Below this the cloud-cover distribution is taken as absent (all samples alike)."""


@dataclass(frozen=True)
class Rule:
    """One expectation with the words the report needs."""

    id: str
    table: str  # "samples", "splits" or "metadata"
    expectation: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    description: str
    detail_column: str | None = None


def _in_set(rule_id: str, column: str, values: list[Any], description: str, detail: str | None = None) -> Rule:
    return Rule(
        rule_id, "samples", "ExpectColumnValuesToBeInSet", {"column": column, "value_set": values}, description, detail
    )


def _between(
    rule_id: str, column: str, low: float | None, high: float | None, description: str, table: str = "samples"
) -> Rule:
    return Rule(
        rule_id,
        table,
        "ExpectColumnValuesToBeBetween",
        {"column": column, "min_value": low, "max_value": high},
        description,
    )


def sample_rules(limits: Thresholds) -> list[Rule]:
    """Rules over per-sample raster statistics."""
    bands = len(schema.S2_BANDS)
    nodata = limits.max_nodata_fraction
    rules = [
        _in_set(
            "files.readable", "read_error", [""], "every file of the sample opens and reads as a raster", "read_error"
        ),
        _in_set(
            "grid.agree", "grid_problem", [""], "all files of a sample share CRS, transform and shape", "grid_problem"
        ),
        _in_set("optical.band_count", "opt_cloudy_bands", [bands], f"Opt_S2_cloudy has {bands} bands"),
        _in_set("optical.band_count", "opt_clear_bands", [bands], f"Opt_S2_clear has {bands} bands"),
        _in_set(
            "optical.band_order",
            "opt_cloudy_band_names",
            ["", CANONICAL_BAND_NAMES],
            f"optical band descriptions, when present, are {CANONICAL_BAND_NAMES}",
        ),
        _in_set(
            "optical.band_order",
            "opt_clear_band_names",
            ["", CANONICAL_BAND_NAMES],
            f"optical band descriptions, when present, are {CANONICAL_BAND_NAMES}",
        ),
        _in_set("optical.dtype", "opt_cloudy_dtype", ["uint16"], "optical files hold uint16 L2A digital numbers"),
        _in_set("optical.dtype", "opt_clear_dtype", ["uint16"], "optical files hold uint16 L2A digital numbers"),
        _between(
            "optical.value_range",
            "opt_cloudy_reflectance_p99",
            0.0,
            1.5,
            "99th percentile of optical reflectance within [0, 1.5]",
        ),
        _between(
            "optical.nodata",
            "opt_cloudy_nodata_fraction",
            0.0,
            nodata,
            f"at most {nodata:.0%} of optical pixels are nodata (0)",
        ),
        _in_set("sar.band_count", "sar_vv_bands", [1], "SAR VV is a single-band file"),
        _in_set("sar.band_count", "sar_vh_bands", [1], "SAR VH is a single-band file"),
        _in_set("sar.dtype", "sar_vv_dtype", ["float32", "float64"], "SAR holds floating-point sigma0"),
        _in_set("sar.dtype", "sar_vh_dtype", ["float32", "float64"], "SAR holds floating-point sigma0"),
        _between(
            "sar.units_db",
            "sar_vv_negative_fraction",
            0.5,
            1.0,
            "SAR VV is sigma0 in dB (mostly negative); linear power must be converted with 10*log10",
        ),
        _between(
            "sar.units_db",
            "sar_vh_negative_fraction",
            0.5,
            1.0,
            "SAR VH is sigma0 in dB (mostly negative); linear power must be converted with 10*log10",
        ),
        _between("sar.value_range", "sar_vv_p50_db", -40.0, 5.0, "median SAR VV within [-40, 5] dB"),
        _between("sar.value_range", "sar_vh_p50_db", -45.0, 5.0, "median SAR VH within [-45, 5] dB"),
        _between("sar.nan", "sar_vv_nan_fraction", 0.0, nodata, f"at most {nodata:.0%} of SAR VV pixels are NaN"),
        _between("sar.nan", "sar_vh_nan_fraction", 0.0, nodata, f"at most {nodata:.0%} of SAR VH pixels are NaN"),
        _in_set("label.band_count", "label_bands", [1], "Label is a single-band file"),
        _in_set("label.dtype", "label_dtype", ["uint8"], "Label holds uint8 class ids"),
        Rule(
            "label.values",
            "samples",
            "ExpectColumnValuesToBeBetween",
            {"column": "label_invalid_fraction", "min_value": 0.0, "max_value": 0.0},
            f"label values are class ids {sorted(schema.VALID_LABEL_VALUES)}",
            "label_invalid_values",
        ),
        _between(
            "sample.nodata",
            "nodata_fraction",
            0.0,
            nodata,
            f"at most {nodata:.0%} of a sample's pixels lack valid optical or SAR data",
        ),
    ]
    return rules


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
        _between("metadata.cloud_cover", "cloud_cover", 0.0, 1.0, "cloud cover is a fraction in [0, 1]", "metadata"),
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


def required_columns(rules: list[Rule]) -> list[str]:
    """Columns the rules read, so that absent ones can be added as nulls instead of crashing a rule."""
    columns = {r.kwargs["column"] for r in rules if "column" in r.kwargs}
    columns |= {r.detail_column for r in rules if r.detail_column}
    return sorted(columns)


def run_rules(tables: dict[str, pd.DataFrame], rules: list[Rule]) -> list[tuple[Rule, dict[str, Any]]]:
    """Run every rule with Great Expectations; return (rule, GX result dict) pairs in rule order."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("cloudlulc")
    outcomes: list[tuple[Rule, dict[str, Any]]] = []
    for table, frame in tables.items():
        table_rules = [r for r in rules if r.table == table]
        if not table_rules:
            continue
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        suite = context.suites.add(gx.ExpectationSuite(name=f"cloudlulc.{table}"))
        for index, rule in enumerate(table_rules):
            expectation = getattr(gxe, rule.expectation)(**rule.kwargs, meta={"index": index})
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"cloudlulc.{table}", data=batch, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["name"]},
        )
        for expectation_result in result.results:
            config = expectation_result.expectation_config
            assert config is not None and config.meta is not None, "GX returns the configuration it ran"
            rule = table_rules[config.meta["index"]]
            outcome = dict(expectation_result.result)
            outcome["success"] = bool(expectation_result.success)
            exception = expectation_result.exception_info or {}
            if exception.get("raised_exception"):
                outcome["exception"] = exception.get("exception_message")
            outcomes.append((rule, outcome))
    return outcomes
