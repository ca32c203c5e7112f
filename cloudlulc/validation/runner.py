"""Run rules with Great Expectations 1.x and turn the outcomes into named failures.

Great Expectations is imported lazily: it costs about 2 s and only validation needs it.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from cloudlulc.validation.report import Failure, RuleSummary
from cloudlulc.validation.rules import DATASET, Rule


def run_rules(tables: dict[str, pd.DataFrame], rules: list[Rule]) -> list[tuple[Rule, dict[str, Any]]]:
    """Run every rule, one suite per table; return (rule, GX result dict) pairs in rule order."""
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
            suite.add_expectation(getattr(gxe, rule.expectation)(**rule.kwargs, meta={"index": index}))
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
            outcome = dict(expectation_result.result)
            outcome["success"] = bool(expectation_result.success)
            exception = expectation_result.exception_info or {}
            if exception.get("raised_exception"):
                outcome["exception"] = exception.get("exception_message")
            outcomes.append((table_rules[config.meta["index"]], outcome))
    return outcomes


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
    failures: list[Failure] = []
    counts: dict[tuple[str, str], int] = {}
    for rule, outcome in outcomes:
        found = _failures(rule, outcome, tables)
        failures += found
        key = (rule.id, rule.description)
        counts[key] = counts.get(key, 0) + len(found)
    return failures, [RuleSummary(rule_id, text, count) for (rule_id, text), count in counts.items()]
