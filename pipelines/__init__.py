"""Kubeflow pipelines of CloudLULC: ``training`` and ``regional-mapping``, their compiled YAML, and how to run them.

- ``training``: ingest new acquisitions -> validate -> retrain or fine-tune -> evaluate and gate ->
  compile (ONNX, TensorRT) -> promote to Triton; compile and promote run only when the gate passes.
- ``regional-mapping``: for a region and dates, ingest scene stacks -> validate -> map through Triton
  -> publish COGs, class areas and quicklooks.

``compiled/`` holds the YAML the Kubeflow UI uploads (kept current by a test); ``submit`` talks to a
Kubeflow Pipelines API; ``local`` runs both pipelines on one machine with ``kfp.local``.
"""

from pipelines.regional_mapping import regional_mapping
from pipelines.training import training

PIPELINES = {"training": training, "regional-mapping": regional_mapping}
"""Pipeline functions by the name used in file names, the CLI and the Kubeflow UI."""

__all__ = ["PIPELINES", "regional_mapping", "training"]
