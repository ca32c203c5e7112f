"""Validate the scene stacks of ``cloudlulc ingest run --mode scenes`` with the chip validation's machinery.

The manifest (``manifest.csv``, written last by ingest) says which stacks are committed
(``scene_manifest.py``); each stack is measured into one row of a pandas table (``scene_facts.py``,
with the statistics the chips use too) and judged by the rules of the shared vocabulary
(``suites.scene_rules``). The result is the same :class:`ValidationReport` as for chips, so
``write_report`` renders it the same way; a broken stack is a failure naming the pair, the rule and
the file, never a traceback.
"""

from __future__ import annotations

import logging

import pandas as pd
from tqdm import tqdm

from cloudlulc.data.layout import SceneLayout
from cloudlulc.io.storage import open_storage
from cloudlulc.logs import progress_enabled
from cloudlulc.validation.report import ValidationReport, class_balance
from cloudlulc.validation.rules import DATASET, required_columns
from cloudlulc.validation.runner import collect_failures, run_rules
from cloudlulc.validation.scene_facts import iter_scene_facts, scene_facts
from cloudlulc.validation.scene_manifest import ManifestScene, is_scene_layout, read_scene_manifest
from cloudlulc.validation.suites import manifest_rules, scene_rules
from cloudlulc.validation.thresholds import SceneThresholds

log = logging.getLogger(__name__)

__all__ = [
    "ManifestScene",
    "SceneThresholds",
    "is_scene_layout",
    "read_scene_manifest",
    "scene_facts",
    "scene_rules",
    "validate_scenes",
]


def validate_scenes(
    root: str, thresholds: SceneThresholds | None = None, *, workers: int = 1, progress: bool = False
) -> ValidationReport:
    """Validate the scene stacks under ``root`` (an ingest output folder or ``s3://`` prefix); nothing is written.

    Every stack ``manifest.csv`` lists with ``mode=scenes`` is measured (see ``scene_facts`` for what
    is read and the memory bound) and checked by the rules of :func:`scene_rules`. A missing,
    unreadable or empty manifest is not an exception but the failure ``manifest.scenes`` ("no scenes
    under <root>: ..."), so the report says why; S3 that cannot be reached raises StorageError.

    Args:
        root: the ``--out`` of ``cloudlulc ingest run --mode scenes``.
        thresholds: limits of the rules (defaults: :class:`SceneThresholds`).
        workers: stacks measured at once (threads; GDAL and hashing release the GIL).
        progress: show a progress bar.
    """
    limits = thresholds or SceneThresholds()
    storage = open_storage(root)
    scenes, problem = read_scene_manifest(storage)
    manifest = pd.DataFrame(
        [{"name": DATASET, "manifest": SceneLayout.of(storage).manifest_uri(), "manifest_problem": problem}]
    )
    tables: dict[str, pd.DataFrame] = {"manifest": manifest}
    rules = manifest_rules()
    frame = pd.DataFrame()
    if scenes:
        facts = iter_scene_facts(storage, scenes, limits, workers)
        bar = tqdm(facts, total=len(scenes), desc="validate", unit="scene", disable=not progress_enabled(progress))
        rows = list(bar)
        log.info("validate: measured %d scene stacks of %s", len(rows), storage.uri)
        per_scene = scene_rules(limits)
        frame = pd.DataFrame(rows)
        frame = frame.reindex(columns=sorted(set(frame.columns) | set(required_columns(per_scene))))
        tables["scenes"] = frame
        rules += per_scene
    failures, summaries = collect_failures(run_rules(tables, rules), tables)
    return ValidationReport(
        dataset=storage.uri,
        sample_count=len(scenes),
        failures=failures,
        rules=summaries,
        cloud_cover=[s.cloud_cover for s in scenes if s.cloud_cover is not None],
        class_fractions=class_balance(frame),
        kind="Scene-stack",
    )
