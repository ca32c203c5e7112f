"""Validate a CloudLULC-Set: measure, run the suites, name every failing sample and rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from cloudlulc import schema
from cloudlulc.data.layout import DatasetLayout, SampleRecord
from cloudlulc.data.metadata import compute_sample_metadata, metadata_frame, read_metadata
from cloudlulc.errors import DataError
from cloudlulc.validation.report import Failure, RuleSummary, ValidationReport
from cloudlulc.validation.stats import iter_sample_stats, split_facts
from cloudlulc.validation.suites import (
    DATASET,
    Rule,
    Thresholds,
    metadata_rules,
    required_columns,
    run_rules,
    sample_rules,
    split_rules,
)


def _metadata_table(layout: DatasetLayout, records: list[SampleRecord], readable: set[str]) -> pd.DataFrame:
    """The stored metadata table, completed from the rasters for readable samples it lacks."""
    stored = read_metadata(layout)
    known = set(stored["name"]) if stored is not None and "name" in stored else set()
    computed = []
    for record in records:
        if record.name in known or record.name not in readable:
            continue
        try:
            computed.append(compute_sample_metadata(layout, record))
        except DataError:
            continue  # an inconsistent sample fails its own rules (grid.agree, band counts)
    extra = metadata_frame(computed)
    frames = [f for f in (stored, extra) if f is not None and not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["name", "cloud_cover"])


def _observed(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _failures(rule: Rule, outcome: dict[str, Any], tables: dict[str, pd.DataFrame]) -> list[Failure]:
    if outcome["success"]:
        return []
    if outcome.get("exception"):
        return [Failure(DATASET, rule.id, rule.description, "rule could not run", str(outcome["exception"]))]
    indexed = outcome.get("unexpected_index_list")
    if not indexed:
        return [Failure(DATASET, rule.id, rule.description, _observed(outcome.get("observed_value")))]
    frame = tables[rule.table].set_index("name", drop=False)
    column = rule.kwargs.get("column", "")
    failures = []
    for entry in indexed:
        name = str(entry["name"])
        detail = ""
        if rule.detail_column and rule.detail_column != column and name in frame.index:
            detail_value = frame.loc[name, rule.detail_column]
            detail = str(detail_value.iloc[0] if isinstance(detail_value, pd.Series) else detail_value)
        failures.append(Failure(name, rule.id, f"{rule.description} [{column}]", _observed(entry.get(column)), detail))
    return failures


def collect_failures(
    outcomes: list[tuple[Rule, dict[str, Any]]], tables: dict[str, pd.DataFrame]
) -> tuple[list[Failure], list[RuleSummary]]:
    """Failures of the GX outcomes (by sample, rule, observed value and detail) and a count per rule.

    Failing rows are named by the ``name`` column of their table; rules that share an id and a
    description are summed into one summary line.
    """
    failures = [f for rule, outcome in outcomes for f in _failures(rule, outcome, tables)]
    counts: dict[tuple[str, str], int] = {}
    for rule, outcome in outcomes:
        key = (rule.id, rule.description)
        counts[key] = counts.get(key, 0) + len(_failures(rule, outcome, tables))
    return failures, [RuleSummary(rule_id, text, count) for (rule_id, text), count in counts.items()]


def validate_dataset(
    root: str,
    *,
    thresholds: Thresholds | None = None,
    quarantine: bool = False,
    workers: int = 1,
    progress: bool = True,
) -> ValidationReport:
    """Validate the dataset at ``root`` (folder or ``s3://``) and return the report (nothing is written).

    With ``quarantine``, failing samples are listed in the report instead of failing the whole set;
    failures of the dataset as a whole (an empty cloud-cover distribution, say) still fail it.
    Raises DataError when there is no dataset to validate (no split files, or empty ones).
    """
    limits = thresholds or Thresholds()
    layout = DatasetLayout(root)
    records = layout.read_records()
    splits = split_facts(layout, records)
    missing = frozenset(p for text in splits["missing_files"] if text for p in text.split(", "))
    stats_rows = list(
        tqdm(
            iter_sample_stats(layout, records, missing, workers),
            total=len(records),
            desc="validate",
            unit="sample",
            disable=not progress,
        )
    )
    complete = {r.name for r in records if not missing.intersection(r.files().values())}
    readable = {row["name"] for row in stats_rows if not row["read_error"]} & complete
    metadata = _metadata_table(layout, records, readable)
    rules = sample_rules(limits) + split_rules() + metadata_rules(limits, len(records))
    samples = pd.DataFrame(stats_rows)
    samples = samples.reindex(
        columns=sorted(set(samples.columns) | set(required_columns([r for r in rules if r.table == "samples"])))
    )
    for column in ("read_error", "grid_problem"):
        samples[column] = samples[column].fillna("")
    tables = {"samples": samples, "splits": splits, "metadata": metadata}
    failures, summaries = collect_failures(run_rules(tables, rules), tables)
    quarantined = sorted({f.sample for f in failures if f.sample != DATASET}) if quarantine else []
    return ValidationReport(
        dataset=layout.root,
        sample_count=len(records),
        failures=failures,
        rules=summaries,
        quarantined=quarantined,
        cloud_cover=[float(c) for c in metadata.get("cloud_cover", pd.Series(dtype=float)).dropna()],
        class_fractions=_class_balance(metadata),
    )


def _class_balance(metadata: pd.DataFrame) -> dict[str, float]:
    columns = [f"class_{c.id}" for c in schema.CLASSES]
    if not set(columns) <= set(metadata.columns) or metadata.empty:
        return {}
    means = metadata[columns].astype(float).mean().to_numpy()
    total = float(np.nansum(means)) or 1.0
    return {c.name: float(m / total) for c, m in zip(schema.CLASSES, means, strict=True)}


def assert_valid(report: ValidationReport) -> None:
    """Raise DataError summarising the first failures (for stages that must stop on bad data)."""
    if report.success:
        return
    blocking = [f for f in report.failures if f.sample not in set(report.quarantined)]
    lines = [f"{f.sample}: {f.rule} ({f.observed}) {f.detail}".strip() for f in blocking[:10]]
    raise DataError(report.dataset, f"{len(blocking)} validation failure(s): " + "; ".join(lines))
