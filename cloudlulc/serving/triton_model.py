"""Triton Python-backend entry point of ``cloudlulc_cpu``: copied as ``model.py`` into each version folder.

A thin adapter: tensors in and out of Triton's types; the work is :mod:`cloudlulc.serving.python_backend`.
"""

from __future__ import annotations

from typing import Any

import triton_python_backend_utils as pb_utils

from cloudlulc.serving.python_backend import VersionFiles, load_runner, run_requests


class TritonPythonModel:
    """One instance per Triton model instance: one ONNX Runtime session of this version."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the version's export; raising here makes Triton mark the version UNAVAILABLE."""
        self.run = load_runner(VersionFiles.from_triton_args(args))

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request of the dynamic batch (errors go back per request, the model stays up)."""
        inputs = [
            (
                pb_utils.get_input_tensor_by_name(r, "optical").as_numpy(),
                pb_utils.get_input_tensor_by_name(r, "sar").as_numpy(),
            )
            for r in requests
        ]
        try:
            answers = run_requests(self.run, inputs)
        except Exception as error:  # every failure becomes the requests' error, not a dead stub
            failure = pb_utils.TritonError(str(error).splitlines()[0] if str(error) else type(error).__name__)
            return [pb_utils.InferenceResponse(output_tensors=[], error=failure) for _ in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("probs", probs)]) for probs in answers]
