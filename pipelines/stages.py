"""The opening both pipelines share: ingest new acquisitions, validate them, stop on bad data.

Written once so the two graphs cannot drift in how data enters (the same tasks, resources,
retries and timeouts); each pipeline then adds what it does with valid data.
"""

from __future__ import annotations

from typing import Any

from kfp import dsl

from components.ingest import ingest_acquisitions
from components.validate import require_valid, validate_data
from pipelines.platform import on_cpu, policy, with_settings

HOUR = 3600


def ingest_validated(
    after: dsl.PipelineTask, *, max_nodata: Any, **ingest_parameters: Any
) -> tuple[dsl.PipelineTask, dsl.PipelineTask]:
    """Tasks that ingest (``ingest_parameters`` go to the ingest component), validate and stop on bad data.

    Returns:
        The ingest task (its ``dataset`` output is what later steps read) and the task that fails the
        run on bad data (later steps run ``.after`` it).
    """
    ingest = ingest_acquisitions(**ingest_parameters).after(after)
    policy(with_settings(on_cpu(ingest, "4", "8G")), retries=3, timeout_s=6 * HOUR, cache=False, name="ingest")
    validate = validate_data(dataset=ingest.outputs["dataset"], max_nodata=max_nodata)
    policy(with_settings(on_cpu(validate, "4", "8G")), retries=1, timeout_s=2 * HOUR, cache=False, name="validate")
    valid = require_valid(verdict=validate.outputs["Output"], report=validate.outputs["report"])
    policy(on_cpu(valid, "500m", "1G"), retries=0, timeout_s=300, cache=False, name="stop on bad data")
    return ingest, valid
