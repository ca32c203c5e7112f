"""The rule vocabulary: every rule id, what it checks, and how it becomes a Great Expectations expectation.

One table per role (optical, sar, cloud_mask, label) plus one for checks over a whole sample or stack,
so an id means the same check in every layout. A layout (``suites.py``) only says which ids apply to
which of its files and with which parameters (band count, limits, the file's name in the report).
Where chips and scene stacks check different things they use different ids (``sar.median_db_range``
for chips, ``sar.percentile_range`` for scenes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from cloudlulc import schema

DATASET = "(dataset)"
"""Sample name used for failures that belong to the whole dataset, not one sample."""

IN_SET: Final = "ExpectColumnValuesToBeInSet"
BETWEEN: Final = "ExpectColumnValuesToBeBetween"
UNIQUE: Final = "ExpectColumnValuesToBeUnique"
PATH: Final = "<path>"
"""Detail marker: explain a failure with the column that names the file (where the layout has one)."""


@dataclass(frozen=True)
class Rule:
    """One expectation with the words the report needs."""

    id: str
    table: str  # "samples", "scenes", "splits", "manifest" or "metadata"
    expectation: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    description: str
    detail_column: str | None = None


@dataclass(frozen=True)
class RuleDef:
    """One entry of the vocabulary, independent of the layout.

    ``args`` are the value set (IN_SET) or the (min, max) bounds (BETWEEN); a string ``$name`` in them
    is the layout's parameter ``name``, and ``text`` is formatted with the same parameters.
    """

    id: str
    stat: str
    """Measured column, after the file or band prefix (``nodata_fraction`` -> ``optical_nodata_fraction``)."""
    check: str
    args: tuple[Any, ...]
    text: str
    detail: str | None = PATH
    """Column (after the prefix) whose text explains a failure; PATH for the file's own path column."""
    strict_max: bool = False


@dataclass(frozen=True)
class RoleFile:
    """One file of a layout: its role, its column prefix, the rule ids that apply, and their parameters."""

    role: str  # a key of VOCABULARY
    prefix: str
    ids: tuple[str, ...]
    params: dict[str, Any]
    bands: tuple[tuple[str, dict[str, Any]], ...] = ()
    """Per-band column prefix and extra parameters, for the rules of SAR_BANDS."""
    path_column: str | None = None
    """Column naming the file in a failure's detail (None: the layout has no such column)."""
    table: str = "samples"


OPTICAL: tuple[RuleDef, ...] = (
    RuleDef("optical.band_count", "bands", IN_SET, (["$bands"],), "{file} has {bands} bands"),
    RuleDef(
        "optical.band_order",
        "band_names",
        IN_SET,
        (["", "$names"],),
        "optical band descriptions, when present, are {names}",
    ),
    RuleDef("optical.dtype", "dtype", IN_SET, (["uint16"],), "{file} holds uint16 L2A digital numbers"),
    RuleDef(
        "optical.nodata",
        "nodata_fraction",
        BETWEEN,
        (0.0, "$max_nodata"),
        "at most {max_nodata:.0%} of optical pixels are nodata (DN 0 in every band)",
    ),
    RuleDef("optical.empty", "nodata_fraction", BETWEEN, (0.0, 1.0), "{file} is not entirely nodata", strict_max=True),
    RuleDef("optical.nan", "nan_fraction", BETWEEN, (0.0, 0.0), "no NaN or infinite value outside nodata in {file}"),
    RuleDef(
        "optical.p99_range",
        "reflectance_p99",
        BETWEEN,
        (0.0, 1.5),
        "99th percentile of optical reflectance within [0, 1.5] in every band",
    ),
    RuleDef(
        "optical.percentile_range",
        "reflectance_p01",
        BETWEEN,
        ("$reflectance_min", None),
        "1st percentile of reflectance (DN + BOA_ADD_OFFSET) / 10000 >= {reflectance_min:g} in every band",
    ),
    RuleDef(
        "optical.percentile_range",
        "reflectance_p99",
        BETWEEN,
        (None, "$reflectance_max"),
        "99th percentile of reflectance <= {reflectance_max:g} in every band",
    ),
)
SAR: tuple[RuleDef, ...] = (
    RuleDef("sar.band_count", "bands", IN_SET, (["$bands"],), "{file} has {bands} band(s) ({names})"),
    RuleDef(
        "sar.band_order", "band_names", IN_SET, (["", "$names"],), "SAR band descriptions, when present, are {names}"
    ),
    RuleDef("sar.dtype", "dtype", IN_SET, (["float32", "float64"],), "{file} holds floating-point sigma0"),
    RuleDef(
        "sar.nodata",
        "nodata_fraction",
        BETWEEN,
        (0.0, "$max_nodata"),
        "at most {max_nodata:.0%} of {file} pixels are nodata (NaN)",
    ),
    RuleDef("sar.empty", "nodata_fraction", BETWEEN, (0.0, 1.0), "{file} is not entirely nodata", strict_max=True),
    RuleDef(
        "sar.nan",
        "nan_fraction",
        BETWEEN,
        (0.0, 0.0),
        "no infinite value, nor NaN unless NaN is the declared nodata, in {file}",
    ),
)
SAR_BANDS: tuple[RuleDef, ...] = (
    RuleDef(
        "sar.units_db",
        "negative_fraction",
        BETWEEN,
        (0.5, 1.0),
        "SAR {polarisation} is sigma0 in dB (mostly negative); linear power must be converted with 10*log10",
    ),
    RuleDef(
        "sar.median_db_range",
        "p50_db",
        BETWEEN,
        ("$median_db_min", "$median_db_max"),
        "median SAR {polarisation} within [{median_db_min:g}, {median_db_max:g}] dB",
    ),
    RuleDef(
        "sar.percentile_range",
        "p01_db",
        BETWEEN,
        ("$sar_db_min", None),
        "1st percentile of SAR {polarisation} >= {sar_db_min:g} dB",
    ),
    RuleDef(
        "sar.percentile_range",
        "p99_db",
        BETWEEN,
        (None, "$sar_db_max"),
        "99th percentile of SAR {polarisation} <= {sar_db_max:g} dB",
    ),
)
CLOUD_MASK: tuple[RuleDef, ...] = (
    RuleDef("cloud_mask.band_count", "bands", IN_SET, ([1],), "{file} is a single-band file"),
    RuleDef("cloud_mask.dtype", "dtype", IN_SET, (["uint8"],), "{file} holds uint8 codes"),
    RuleDef(
        "cloud_mask.values",
        "invalid_fraction",
        BETWEEN,
        (0.0, 0.0),
        f"cloud mask values are codes {sorted(schema.CLOUD_MASK_NAMES)}",
        "invalid_values",
    ),
)
LABEL: tuple[RuleDef, ...] = (
    RuleDef("label.band_count", "bands", IN_SET, ([1],), "{file} is a single-band file"),
    RuleDef("label.dtype", "dtype", IN_SET, (["uint8"],), "{file} holds uint8 class ids"),
    RuleDef(
        "label.values",
        "invalid_fraction",
        BETWEEN,
        (0.0, 0.0),
        f"label values are class ids {sorted(schema.VALID_LABEL_VALUES)}",
        "invalid_values",
    ),
)
WHOLE: tuple[RuleDef, ...] = (
    RuleDef("files.present", "missing_files", IN_SET, ([""],), "every file of the {unit} exists", "missing_files"),
    RuleDef(
        "files.readable",
        "read_error",
        IN_SET,
        ([""],),
        "every file of the {unit} opens and its pixels read (GDAL's reason when not)",
        "read_error",
    ),
    RuleDef(
        "files.checksum",
        "checksum_problem",
        IN_SET,
        ([""],),
        "every file's SHA-256 equals the manifest's (a replaced or half-written file fails)",
        "checksum_problem",
    ),
    RuleDef(
        "grid.agree",
        "grid_problem",
        IN_SET,
        ([""],),
        "all files of a {unit} share CRS, transform and size",
        "grid_problem",
    ),
    RuleDef(
        "manifest.scenes",
        "manifest_problem",
        IN_SET,
        ([""],),
        "manifest.csv is readable and lists at least one committed scene stack",
        "manifest",
    ),
    RuleDef(
        "manifest.row",
        "manifest_problem",
        IN_SET,
        ([""],),
        "the manifest row lists optical.tif and sar.tif (optical.tif alone for a Sentinel-2-only stack), "
        "with one SHA-256 per path",
        None,
    ),
    RuleDef("manifest.unique", "name", UNIQUE, (), "no pair is listed twice in the manifest", None),
    RuleDef(
        "sample.nodata",
        "nodata_fraction",
        BETWEEN,
        (0.0, "$max_nodata"),
        "at most {max_nodata:.0%} of a sample's pixels lack valid optical or SAR data",
        None,
    ),
    RuleDef(
        "scene.nodata",
        "scene_nodata_fraction",
        BETWEEN,
        (0.0, "$max_nodata"),
        "at most {max_nodata:.0%} of a stack's pixels lack valid optical or SAR data",
        "optical_path",
    ),
)
"""Checks over a whole sample or stack (columns without a file prefix)."""

VOCABULARY: dict[str, tuple[RuleDef, ...]] = {"optical": OPTICAL, "sar": SAR, "cloud_mask": CLOUD_MASK, "label": LABEL}
"""File rules by role; the rules of SAR_BANDS apply to each band of a ``sar`` file."""


def _resolve(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_resolve(item, params) for item in value]
    if isinstance(value, str) and value.startswith("$"):
        return params[value[1:]]
    return value


def _rule(definition: RuleDef, table: str, prefix: str, params: dict[str, Any], path: str | None) -> Rule:
    """The expectation of one vocabulary entry for one file (or band, or whole row when ``prefix`` is "")."""
    column = f"{prefix}_{definition.stat}" if prefix else definition.stat
    if definition.detail is None:
        detail = None
    elif definition.detail == PATH:
        detail = path
    else:
        detail = f"{prefix}_{definition.detail}" if prefix else definition.detail
    kwargs: dict[str, Any] = {"column": column}
    if definition.check == IN_SET:
        kwargs["value_set"] = _resolve(definition.args[0], params)
    elif definition.check == BETWEEN:
        kwargs["min_value"], kwargs["max_value"] = (_resolve(a, params) for a in definition.args)
        if definition.strict_max:
            kwargs["strict_max"] = True
    return Rule(definition.id, table, definition.check, kwargs, definition.text.format(**params), detail)


def whole_rules(ids: Iterable[str], table: str, params: dict[str, Any]) -> list[Rule]:
    """Rules of WHOLE with these ids, in vocabulary order."""
    chosen = set(ids)
    return [_rule(d, table, "", params, None) for d in WHOLE if d.id in chosen]


def file_rules(file: RoleFile) -> list[Rule]:
    """The rules of a file's role that its layout chose, for the file and then for each of its bands."""
    params = file.params
    rules = [
        _rule(d, file.table, file.prefix, params, file.path_column) for d in VOCABULARY[file.role] if d.id in file.ids
    ]
    for band_prefix, extra in file.bands:
        band_params = {**params, **extra}
        rules += [
            _rule(d, file.table, band_prefix, band_params, file.path_column) for d in SAR_BANDS if d.id in file.ids
        ]
    return rules


def required_columns(rules: list[Rule]) -> list[str]:
    """Columns the rules read, so that absent ones can be added as nulls instead of crashing a rule."""
    columns = {r.kwargs["column"] for r in rules if "column" in r.kwargs}
    columns |= {r.detail_column for r in rules if r.detail_column}
    return sorted(columns)
