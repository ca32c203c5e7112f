"""Promotion: the MLflow ``champion`` becomes the served model, checked on a golden sample, or rolled back.

Steps: export the champion to ONNX (parity-checked against PyTorch), publish it as the next version
in the model repository, make the server serve it, send the golden sample through gRPC and compare
with PyTorch's output, then keep it (tagging the registered model with the served version) or roll
back. Two targets share these steps and differ only in how a version becomes served:

- ``RepositoryTarget`` (production): Triton in explicit model-control mode; ``load_model`` over gRPC
  reloads the model, whose version policy keeps the newest two versions loaded, so the previous
  version keeps serving while the new one is checked. Rollback deletes the new version from the
  repository and reloads.
- ``LocalTarget`` (embedded default): the local Triton serves a Python callable and cannot load model
  folders, so it is restarted on the new version, checked, and restarted on the previous one if the
  check fails.
"""

from __future__ import annotations

import json
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cloudlulc.errors import ServingError
from cloudlulc.export.onnx import export_onnx
from cloudlulc.export.parity import ParityReport, check_parity, parity_samples, torch_runner
from cloudlulc.io.storage import atomic_local_path
from cloudlulc.models.networks import SegmentationNetwork
from cloudlulc.serving.client import TritonClient
from cloudlulc.serving.local_triton import LocalTriton
from cloudlulc.serving.model_config import ONNX_MODEL, TENSORRT_MODEL
from cloudlulc.serving.repository import GoldenSample, ModelRepository
from cloudlulc.tracking.registry import CHAMPION, Registry
from cloudlulc.tracking.settings import TrackingError, TrackingSettings
from cloudlulc.tracking.stages import load_registered_network


class ServingTarget(Protocol):
    """How a published version becomes the one a server answers with."""

    served_model: str
    """The model name clients call on this target."""
    repository_model: str
    """The repository folder versions are published to."""

    def activate(self, repository: ModelRepository, version: int) -> str:
        """Serve ``version``; return the gRPC URL to check it on."""
        ...

    def rollback(self, repository: ModelRepository, bad_version: int, previous: int | None) -> None:
        """Stop serving ``bad_version``; serve ``previous`` again when there is one."""
        ...


def replica_urls(replicas: str) -> list[str]:
    """Every address behind ``host:port`` (a headless Service resolves to one per Triton pod)."""
    host, _, port = replicas.rpartition(":")
    try:
        found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as error:
        raise ServingError(f"cannot resolve the Triton replicas {replicas!r}: {error}") from error
    addresses = sorted({str(info[4][0]) for info in found})
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


@dataclass
class RepositoryTarget:
    """A production Triton with explicit model control, reading the same repository.

    Explicit model control is per server process: with several replicas, ``replicas`` (a headless
    Service, ``TRITON_GRPC_REPLICAS``) names them all, and every one loads the new version before the
    check through ``url``; replicas started later load the repository at start.
    """

    url: str
    served_model: str = TENSORRT_MODEL
    repository_model: str = TENSORRT_MODEL
    replicas: str | None = None

    def _load_everywhere(self, version: int | None) -> None:
        for address in replica_urls(self.replicas) if self.replicas else [self.url]:
            with TritonClient(address) as client:
                client.load_model(self.repository_model)
                if version is not None:
                    client.wait_ready(self.repository_model, str(version), timeout_s=300)

    def activate(self, repository: ModelRepository, version: int) -> str:
        self._load_everywhere(version)
        return self.url

    def rollback(self, repository: ModelRepository, bad_version: int, previous: int | None) -> None:
        repository.remove_version(self.repository_model, bad_version)
        if previous is not None:
            self._load_everywhere(None)


@dataclass
class LocalTarget:
    """The local Triton (nvidia-pytriton), restarted on the version to serve."""

    state_dir: Path
    served_model: str = TENSORRT_MODEL
    repository_model: str = ONNX_MODEL

    def _model_file(self, repository: ModelRepository, version: int) -> str:
        uri = repository.model_uri(self.repository_model, version)
        if not uri.startswith("s3://"):
            return uri
        local = self.state_dir / "models" / str(version) / "model.onnx"  # the local server reads files only
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(repository.storage.read_bytes(f"{self.repository_model}/{version}/model.onnx"))
        return str(local)

    def activate(self, repository: ModelRepository, version: int) -> str:
        server = LocalTriton(self.state_dir)
        server.stop()
        return server.start(self._model_file(repository, version), version).grpc_url

    def rollback(self, repository: ModelRepository, bad_version: int, previous: int | None) -> None:
        server = LocalTriton(self.state_dir)
        server.stop()
        repository.remove_version(self.repository_model, bad_version)
        if previous is not None:
            server.start(self._model_file(repository, previous), previous)


@dataclass(frozen=True)
class PromotionResult:
    """What was promoted, and the evidence."""

    registered_version: str
    served_version: int
    served_model: str
    grpc_url: str
    export_parity: ParityReport
    golden_parity: ParityReport


def _tag(registry: Registry, version: str, tags: dict[str, str]) -> None:
    from mlflow.exceptions import MlflowException

    try:
        for key, value in tags.items():
            registry.client.set_model_version_tag(registry.name, version, key, value)
    except MlflowException as error:
        raise TrackingError(f"registry at {registry.tracking_uri}: cannot tag version {version}: {error}") from error


@dataclass(frozen=True)
class ExportedModel:
    """A champion exported ahead of promotion (a pipeline's compile step), with its evidence."""

    path: Path
    """``model.onnx`` or ``model.plan``; its parity report is the ``.json`` sidecar beside it."""
    registered_version: str
    """The registered version it was exported from; promotion refuses it if the alias moved since."""
    parity: ParityReport


def _champion(settings: TrackingSettings, alias: str) -> tuple[Registry, str]:
    registry = Registry(settings.tracking_uri, settings.registered_model)
    registered_version = registry.alias_version(alias)
    if registered_version is None:
        raise TrackingError(f"{settings.registered_model} has no {alias!r} version at {settings.tracking_uri}; "
                            "train and gate a model first")  # fmt: skip
    return registry, registered_version


def export_champion(settings: TrackingSettings, dataset: str, out_dir: str | Path, *, tensorrt: bool = False,
                    alias: str = CHAMPION) -> ExportedModel:  # fmt: skip
    """Export ``models:/<name>@<alias>`` to ONNX (and compile a TensorRT plan), each parity-checked.

    Writes ``model.onnx`` (+ ``model.plan`` with ``tensorrt``) and their ``.json`` sidecars into
    ``out_dir``; the returned model is the one a Triton of the matching kind serves.
    """
    _, registered_version = _champion(settings, alias)
    network = load_registered_network(settings, alias)
    return _export(network, settings.registered_model, registered_version, alias, dataset, Path(out_dir), tensorrt)


def _export(network: SegmentationNetwork, registered_model: str, registered_version: str, alias: str, dataset: str,
            out: Path, tensorrt: bool) -> ExportedModel:  # fmt: skip
    onnx_path = out / "model.onnx"
    facts: dict[str, object] = {"registered_model": registered_model, "registered_version": registered_version,
                                "alias": alias}  # fmt: skip
    parity = export_onnx(network, onnx_path, dataset, metadata=facts)
    if not tensorrt:
        return ExportedModel(onnx_path, registered_version, parity)
    from cloudlulc.export.tensorrt import build_engine

    plan_path = out / "model.plan"
    parity = build_engine(onnx_path, plan_path, dataset)
    sidecar = {"parity": json.loads(parity.to_json()), **facts}
    with atomic_local_path(plan_path.with_suffix(".plan.json")) as temp_path:
        temp_path.write_text(json.dumps(sidecar, indent=2) + "\n")
    return ExportedModel(plan_path, registered_version, parity)


def read_exported(path: str | Path) -> ExportedModel:
    """An export written by :func:`export_champion`, from the model file and its sidecar."""
    model_path = Path(path)
    sidecar_path = model_path.with_suffix(model_path.suffix + ".json")
    try:
        sidecar = json.loads(sidecar_path.read_text())
        report = {k: v for k, v in sidecar["parity"].items() if k != "passed"}
        return ExportedModel(model_path, str(sidecar["registered_version"]), ParityReport(**report))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ServingError(f"{sidecar_path}: not an export of cloudlulc ({error})") from error


def promote(settings: TrackingSettings, repository: ModelRepository, dataset: str, target: ServingTarget, *,
            alias: str = CHAMPION, exported: ExportedModel | None = None) -> PromotionResult:  # fmt: skip
    """Serve the model behind ``models:/<name>@<alias>`` through ``target``, or roll back and raise.

    ``exported`` skips the export (a pipeline compiled it in an earlier step, on a GPU for TensorRT);
    it must come from the version the alias names now, else the promotion is refused.
    """
    registry, registered_version = _champion(settings, alias)
    if exported is not None and exported.registered_version != registered_version:
        raise ServingError(f"{exported.path} was exported from {settings.registered_model} "
                           f"v{exported.registered_version}, but {alias} is now v{registered_version}; "
                           "export again")  # fmt: skip
    if exported is not None and (exported.path.suffix == ".onnx") != (target.repository_model == ONNX_MODEL):
        raise ServingError(f"{exported.path} does not fit {target.repository_model}: ONNX files go to "
                           f"{ONNX_MODEL}, TensorRT plans to {TENSORRT_MODEL}")  # fmt: skip
    network = load_registered_network(settings, alias)
    reference = torch_runner(network)
    optical, sar = next(iter(parity_samples(dataset, 1)))
    golden = GoldenSample(optical, sar, reference(optical, sar))
    model = target.repository_model
    with tempfile.TemporaryDirectory(prefix="cloudlulc-promote-") as folder:
        if exported is not None:
            onnx_path, export_parity = exported.path, exported.parity
        else:
            built = _export(network, settings.registered_model, registered_version, alias, dataset, Path(folder),
                            tensorrt=model != ONNX_MODEL)  # fmt: skip
            onnx_path, export_parity = built.path, built.parity
        previous_versions = repository.versions(model)
        previous = previous_versions[-1] if previous_versions else None
        facts: dict[str, object] = {"registered_model": settings.registered_model,
                                    "registered_version": registered_version,
                 "alias": alias, "export_parity": export_parity.summary()}  # fmt: skip
        version = repository.publish(model, onnx_path, golden, facts)
    try:
        url = target.activate(repository, version)
        with TritonClient(url) as client:
            client.check_contract(target.served_model, str(version))
            served = client.predictor(target.served_model, str(version))
            golden_parity = check_parity(lambda o, s: golden.expected, served, iter([(golden.optical, golden.sar)]))
        if not golden_parity.passed:
            raise ServingError(f"golden sample check failed on version {version}: {golden_parity.summary()}")
    except ServingError as error:
        target.rollback(repository, version, previous)
        _tag(registry, registered_version, {"serving.status": f"rolled back: {error}"[:500]})
        back = f"version {previous} serves again" if previous is not None else "no earlier version to serve"
        raise ServingError(f"promotion of {settings.registered_model} v{registered_version} as {model} "
                           f"version {version} rolled back ({back}): {error}") from error  # fmt: skip
    served_tags = {"serving.status": "served", "serving.model": target.served_model,
                   "serving.version": str(version), "serving.repository": repository.uri}  # fmt: skip
    _tag(registry, registered_version, served_tags)
    try:
        registry.client.set_registered_model_tag(settings.registered_model, "served_version", str(version))
    except Exception as error:  # MlflowException; the version tag above already records the promotion
        raise TrackingError(f"registry at {settings.tracking_uri}: cannot tag the registered model: {error}") from error
    return PromotionResult(registered_version, version, target.served_model, url, export_parity, golden_parity)
