"""What ``cloudlulc_cpu``'s ``model.py`` runs inside Triton's Python backend, importable and tested without it.

Triton hands ``model.py`` a batch of requests (dynamic batching) and the model's config; everything
that decides anything (which file to load, how requests are grouped into ONNX Runtime calls, how a
bad version fails) lives here, so tests call it directly and the adapter only converts tensors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloudlulc.errors import ServingError

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class VersionFiles:
    """Where one version's export lives and how to run it, from Triton's ``initialize`` arguments."""

    model_file: Path
    threads: int
    delay_s: float = 0.0
    """Seconds added to every execution: lets tests slow a model down to exercise client deadlines."""

    @classmethod
    def from_triton_args(cls, args: dict[str, str]) -> VersionFiles:
        """Read ``model_repository``, ``model_version`` and the config's parameters."""
        config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / str(args["model_version"])
        try:
            threads = int(parameters.get("onnx_threads", "0") or 0)
            delay_s = float(parameters.get("delay_s", "0") or 0)
        except ValueError as error:
            raise ServingError(f"{folder}: bad parameter in {config.get('name')}'s config ({error})") from None
        return cls(folder / parameters.get("model_file", "model.onnx"), threads, delay_s)


def load_runner(files: VersionFiles) -> Runner:
    """An ONNX Runtime session for the version; a one-line ServingError naming the file when it cannot load.

    The session is made here rather than through :mod:`cloudlulc.export`, which imports torch: every
    model instance Triton loads runs this in a fresh stub process.
    """
    import onnxruntime as ort

    if not files.model_file.is_file():
        raise ServingError(f"{files.model_file}: model file of this version not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = files.threads
    # Idle threads must not busy-wait: the stub shares the cores with Triton and the clients' reading.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(files.model_file), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ONNX Runtime raises its own Fail / InvalidProtobuf types
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ServingError(f"{files.model_file}: is not a loadable ONNX model ({reason})") from None
    output = session.get_outputs()[0].name

    def run(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([output], {"optical": optical, "sar": sar})[0])

    if files.delay_s <= 0:
        return run

    def slowed(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        time.sleep(files.delay_s)
        return run(optical, sar)

    return slowed


def run_requests(run: Runner, requests: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Answer a dynamic batch: requests with the same tile size share one ONNX Runtime call, in order.

    Each request is ``(optical [b,12,H,W], sar [b,2,H,W])``; the answer of each is its ``probs [b,6,H,W]``.
    """
    answers: list[np.ndarray | None] = [None] * len(requests)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (optical, sar) in enumerate(requests):
        if optical.shape[0] != sar.shape[0] or optical.shape[2:] != sar.shape[2:]:
            raise ServingError(f"request {index}: optical {optical.shape} and sar {sar.shape} do not match")
        groups.setdefault(tuple(optical.shape[2:]), []).append(index)
    for members in groups.values():
        optical = np.concatenate([requests[i][0] for i in members]).astype(np.float32, copy=False)
        sar = np.concatenate([requests[i][1] for i in members]).astype(np.float32, copy=False)
        probs = run(optical, sar)
        start = 0
        for i in members:
            size = requests[i][0].shape[0]
            answers[i] = probs[start : start + size]
            start += size
    return [answer for answer in answers if answer is not None]
