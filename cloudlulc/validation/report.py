"""The validation report: which sample broke which rule, as JSON for machines and HTML for people."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cloudlulc import schema
from cloudlulc.io.storage import open_storage


@dataclass(frozen=True)
class Failure:
    """One broken rule: by one sample, or by the whole dataset (sample ``(dataset)``)."""

    sample: str
    rule: str
    description: str
    observed: str
    detail: str = ""


@dataclass(frozen=True)
class RuleSummary:
    """How many failures one rule produced."""

    rule: str
    description: str
    failed: int


@dataclass
class ValidationReport:
    """Outcome of validating one dataset."""

    dataset: str
    sample_count: int
    failures: list[Failure]
    rules: list[RuleSummary]
    quarantined: list[str] = field(default_factory=list)
    cloud_cover: list[float] = field(default_factory=list)
    class_fractions: dict[str, float] = field(default_factory=dict)
    kind: str = "CloudLULC-Set"
    """What was validated, for the page title: ``CloudLULC-Set`` (chips) or ``Scene-stack``."""

    @property
    def success(self) -> bool:
        """True when nothing failed, or every failure belongs to a quarantined sample."""
        blocking = [f for f in self.failures if f.sample not in set(self.quarantined)]
        return not blocking

    def to_json(self) -> str:
        """The report as an indented JSON document."""
        document: dict[str, Any] = asdict(self)
        document["success"] = self.success
        return json.dumps(document, indent=2, default=float) + "\n"


def class_balance(table: pd.DataFrame) -> dict[str, float]:
    """Mean share of each class over the rows' ``class_<id>`` columns, normalised ({} without them)."""
    columns = [f"class_{c.id}" for c in schema.CLASSES]
    if not set(columns) <= set(table.columns) or table[columns].isna().all(axis=None):
        return {}
    means = table[columns].astype(float).mean().to_numpy()
    total = float(np.nansum(means)) or 1.0
    return {c.name: float(m / total) for c, m in zip(schema.CLASSES, means, strict=True)}


def write_report(report: ValidationReport, out_dir: str) -> dict[str, str]:
    """Write report.json, report.html and (when quarantining) quarantine.txt; return their URIs."""
    storage = open_storage(out_dir)
    storage.write_bytes("report.json", report.to_json().encode())
    storage.write_bytes("report.html", render_html(report).encode())
    written = {"json": storage.join("report.json"), "html": storage.join("report.html")}
    if report.quarantined:
        storage.write_bytes("quarantine.txt", ("\n".join(report.quarantined) + "\n").encode())
        written["quarantine"] = storage.join("quarantine.txt")
    return written


def _distribution_png(report: ValidationReport) -> str:
    """Cloud-cover histogram and class shares as a base64 PNG for the HTML page ("" if no data)."""
    if not report.cloud_cover:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.hist([100 * c for c in report.cloud_cover], bins=[0, 10, 30, 60, 90, 100], color="#7a9cc6", edgecolor="k")
    left.set(xlabel="cloud cover (%)", ylabel="samples", title="Cloud cover per sample (evaluation bins)")
    names = list(report.class_fractions)
    colours = [tuple(v / 255 for v in c.colour) for c in schema.CLASSES if c.name in names]
    right.barh(names, [100 * report.class_fractions[n] for n in names], color=colours, edgecolor="k")
    right.set(xlabel="share of labelled pixels (%)", title="Class balance")
    right.invert_yaxis()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def render_html(report: ValidationReport) -> str:
    """A self-contained page: verdict, rules with failure counts, the failures, and distributions."""
    escape = html.escape
    verdict = "PASSED" if report.success else "FAILED"
    colour = "#1b7f3b" if report.success else "#b42318"
    rule_rows = "".join(
        f"<tr class='{'bad' if r.failed else 'ok'}'><td>{escape(r.rule)}</td><td>{escape(r.description)}</td>"
        f"<td>{r.failed}</td></tr>"
        for r in report.rules
    )
    failures = pd.DataFrame([asdict(f) for f in report.failures])
    failure_table = (
        failures.to_html(index=False, escape=True, border=0, classes="failures")
        if not failures.empty
        else "<p>No failures.</p>"
    )
    quarantine = (
        f"<p>{len(report.quarantined)} sample(s) quarantined (listed in quarantine.txt, nothing deleted): "
        f"{escape(', '.join(report.quarantined[:50]))}{' ...' if len(report.quarantined) > 50 else ''}</p>"
        if report.quarantined
        else ""
    )
    png = _distribution_png(report)
    picture = f"<h2>Distributions</h2><img alt='distributions' src='data:image/png;base64,{png}'>" if png else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>CloudLULC validation: {escape(report.dataset)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
.verdict {{ color: white; background: {colour}; display: inline-block; padding: .3em .8em; border-radius: 4px; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ padding: .25em .7em; border-bottom: 1px solid #ddd; }}
tr.bad td {{ background: #fdecea; }} th {{ text-align: left; background: #f2f2f2; }}
</style></head><body>
<h1>{escape(report.kind)} validation</h1>
<p><b>Dataset:</b> {escape(report.dataset)}<br><b>Samples:</b> {report.sample_count}<br>
<b>Failures:</b> {len(report.failures)}</p>
<p class="verdict">{verdict}</p>
{quarantine}
<h2>Rules</h2><table><tr><th>rule</th><th>what it checks</th><th>failed</th></tr>{rule_rows}</table>
<h2>Failures</h2>{failure_table}
{picture}
</body></html>
"""
