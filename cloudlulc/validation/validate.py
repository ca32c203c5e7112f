"""Validate a CloudLULC-Set: measure, run the suites, name every failing sample and rule."""

from __future__ import annotations

import logging

import pandas as pd
from tqdm import tqdm

from cloudlulc.data.layout import DatasetLayout, SampleRecord
from cloudlulc.data.metadata import compute_sample_metadata, metadata_frame, read_metadata
from cloudlulc.errors import DataError
from cloudlulc.logs import progress_enabled
from cloudlulc.validation.report import ValidationReport, class_balance
from cloudlulc.validation.rules import DATASET, required_columns
from cloudlulc.validation.runner import collect_failures, run_rules
from cloudlulc.validation.stats import iter_sample_stats, split_facts
from cloudlulc.validation.suites import metadata_rules, sample_rules, split_rules
from cloudlulc.validation.thresholds import Thresholds

log = logging.getLogger(__name__)


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
            disable=not progress_enabled(progress),
        )
    )
    log.info("validate: measured %d samples of %s", len(stats_rows), layout.root)
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
        class_fractions=class_balance(metadata),
    )
