"""Kubeflow pipelines of CloudLULC: ``training`` and ``regional-mapping``, their compiled YAML, and how to run them.

- ``training``: ingest new acquisitions -> validate -> retrain or fine-tune -> evaluate and gate ->
  compile (ONNX, TensorRT) -> promote to Triton; compile and promote run only when the gate passes.
- ``regional-mapping``: for a region and dates, ingest scene stacks -> validate -> map through Triton
  -> publish COGs, class areas and quicklooks.

``compiled/`` holds the YAML the Kubeflow UI uploads (kept current by a test); ``submit`` talks to a
Kubeflow Pipelines API; ``local`` runs both pipelines on one machine with ``kfp.local``; ``cli`` is the
``pipelines`` and ``demo`` commands of ``cloudlulc``. ``PIPELINES`` maps the names used in file names,
the CLI and the Kubeflow UI to the pipeline functions.
"""

from typing import Any

__all__ = ["PIPELINES", "regional_mapping", "training"]


def __getattr__(name: str) -> Any:
    """The pipeline functions, imported on first use: `cloudlulc` loads ``pipelines.cli`` without kfp."""
    if name not in __all__:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    from pipelines.regional_mapping import regional_mapping
    from pipelines.training import training

    found = {
        "training": training,
        "regional_mapping": regional_mapping,
        "PIPELINES": {"training": training, "regional-mapping": regional_mapping},
    }
    return found[name]
