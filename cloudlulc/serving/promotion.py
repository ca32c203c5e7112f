"""Promotion: the MLflow ``champion`` becomes the served model, checked on a golden sample, or rolled back.

Steps: export the champion to ONNX (parity-checked against PyTorch), then, holding the repository's
promotion lock (one promoter, hence one load call, at a time: server #7018), publish it as version
n+1, ``load_model`` it over gRPC (explicit model control; the ``latest 2`` version policy loads it
beside the served version n), send the golden sample to version n+1 exactly and compare with
PyTorch's output. Passed: ``<model>.served.json`` names n+1, so clients pin it from then on; n stays loaded
until the next promotion, so maps already pinned to it finish on it. Failed: n+1 is removed from the
repository and the model reloaded, while n keeps answering its pinned clients throughout.

``RepositoryTarget`` is a Triton reading the repository (production: every replica behind a headless
Service); ``LocalTarget`` is the local Triton of :mod:`cloudlulc.serving.local_triton`, started on the
repository when it is not running. Both run the same load calls against a real server.
"""

from __future__ import annotations

import json
import logging
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
from cloudlulc.serving.local_triton import LocalTriton, TritonExitedError
from cloudlulc.serving.model_config import CPU_MODEL, ONNX_MODEL, TENSORRT_MODEL, ServingSettings
from cloudlulc.serving.python_backend import VersionFiles, load_runner, run_requests
from cloudlulc.serving.repository import GoldenSample, ModelRepository
from cloudlulc.tracking.registry import CHAMPION, Registry
from cloudlulc.tracking.settings import TrackingError, TrackingSettings, ensure_reachable
from cloudlulc.tracking.stages import load_registered_network

log = logging.getLogger(__name__)


class ServingTarget(Protocol):
    """Where the repository's versions are loaded and checked."""

    served_model: str
    """The model name clients call on this target (its repository folder)."""

    def load(self, repository: ModelRepository, version: int | None) -> str:
        """Make every server (re)read the model's versions; wait for ``version``; return the gRPC URL to check on."""
        ...

    def client(self, url: str) -> TritonClient:
        """A client for ``url`` carrying the repository key."""
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
    """A Triton with explicit model control reading the same repository.

    Explicit model control is per server process: with several replicas, ``replicas`` (a headless
    Service, ``TRITON_GRPC_REPLICAS``) names them all, and every one loads the new version before the
    check through ``url``; replicas started later load the repository at start.
    """

    url: str
    served_model: str = TENSORRT_MODEL
    replicas: str | None = None
    repository_key: str | None = None
    """The restricted repository API's key (default: ``TRITON_REPOSITORY_KEY``)."""

    def client(self, url: str) -> TritonClient:
        return TritonClient(url, repository_key=self.repository_key)

    def load(self, repository: ModelRepository, version: int | None) -> str:
        model = self.served_model
        for address in replica_urls(self.replicas) if self.replicas else [self.url]:
            with self.client(address) as client:
                if repository.versions(model):
                    client.load_model(model)
                else:
                    client.unload_model(model)
                if version is not None:
                    client.wait_ready(model, str(version), timeout_s=300)
        return self.url


@dataclass
class LocalTarget:
    """The local Triton on the repository (started when not running), as a :class:`RepositoryTarget`."""

    state_dir: Path
    served_model: str = CPU_MODEL

    def _server(self, repository: ModelRepository) -> RepositoryTarget:
        server = LocalTriton(self.state_dir)
        state = server.state()
        if state is not None and state.repository != repository.uri:
            raise ServingError(
                f"the local Triton in {self.state_dir} serves {state.repository}, not {repository.uri}; stop it first"
            )
        if state is None:
            state = server.start(repository.uri, models=[])
        return RepositoryTarget(state.grpc_url, served_model=self.served_model, repository_key=server.key())

    def client(self, url: str) -> TritonClient:
        return TritonClient(url, repository_key=LocalTriton(self.state_dir).key())

    def load(self, repository: ModelRepository, version: int | None) -> str:
        """Load ``version`` into the local Triton, after a throwaway server has loaded it (:func:`canary_load`)."""
        if version is not None and version != repository.served_version(self.served_model):
            canary_load(repository, self.served_model, version, self.state_dir / "canary")
        return self._server(repository).load(repository, version)


THROWAWAY_PORTS = {"grpc": 0, "http": 0, "metrics": 0}
"""Ports the system picks: clients that look for the served Triton on its usual ports never reach the throwaway one."""


def canary_load(repository: ModelRepository, model: str, version: int, state_dir: Path) -> None:
    """Load the repository's ``model`` (so ``version`` too) in a throwaway local Triton first, then stop it.

    Measured with Triton 2.51: a Python-backend version that raises while the server loads it takes
    the whole server down (``Signal (11) received`` in its log, then exit), and with it the versions it
    was serving. The throwaway server takes that blow instead (a few seconds per promotion); the
    serving one never loads a version that did not load there. A server that exits while starting is
    started once more (:meth:`LocalTriton.start`) before the version is refused: a version that brings
    it down does so again, while a one-off exit (seen once in the project's CI: code 1, no error logged)
    does not roll a good version back. A ServingError names the version.
    """
    canary = LocalTriton(state_dir)
    canary.stop()  # a leftover of a killed promotion
    try:
        canary.start(repository.uri, models=[model], ports=THROWAWAY_PORTS, stop_with_caller=True)
    except TritonExitedError as error:  # LocalTriton.start has started it twice
        raise ServingError(f"version {version} of {model} brought a throwaway Triton down twice: {error}") from None
    except ServingError as error:
        raise ServingError(f"version {version} of {model} failed to load in a throwaway Triton: {error}") from None
    finally:
        canary.stop()


@dataclass(frozen=True)
class ServedVersion:
    """The outcome of publishing and checking one version."""

    version: int
    previous: int | None
    grpc_url: str
    golden_parity: ParityReport


def check_golden(client: TritonClient, model: str, version: int, golden: GoldenSample) -> ParityReport:
    """The golden sample through ``version`` exactly (the client refuses an answer from any other version)."""
    client.check_contract(model, str(version))
    served = client.predictor(model, str(version))
    return check_parity(lambda o, s: golden.expected, served, iter([(golden.optical, golden.sar)]))


def preflight(model: str, model_file: Path, version: int, golden: GoldenSample) -> None:
    """Run an ONNX version through the Python backend's own loading code before any server loads it.

    A version that fails to load in Triton leaves the server not ready until it restarts (Triton 2.51
    keeps the failed version in its strict readiness check), and a Python-backend one crashes it, so a
    corrupt export is refused here (on one machine :func:`canary_load` then catches what only fails
    inside Triton).
    """
    if model == TENSORRT_MODEL:
        return  # a plan only deserializes on the serving GPU: the server's load is its check
    try:
        run = load_runner(VersionFiles(model_file, threads=1))
        run_requests(run, [(golden.optical, golden.sar)])
    except Exception as error:  # ONNX Runtime's own error types: one line, naming the version
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ServingError(f"version {version} of {model} does not load outside Triton: {reason}") from None


def publish_and_serve(
    repository: ModelRepository,
    target: ServingTarget,
    model_file: Path,
    golden: GoldenSample,
    facts: dict[str, object],
    settings: ServingSettings | None = None,
) -> ServedVersion:
    """Publish ``model_file`` as the next version, load it beside the served one, check it, keep it or roll back.

    The served version (``<model>.served.json``) keeps answering its pinned clients throughout; on failure the
    new version is removed and a ServingError (exit 6) names what serves.
    """
    model = target.served_model
    with repository.promotion_lock(model):
        for leftover in repository.unchecked_versions(model):
            log.warning(
                "%s: removing version %d of %s, left unchecked by a killed promotion", repository.uri, leftover, model
            )
            repository.remove_version(model, leftover)
        previous = repository.served_version(model)
        version = repository.publish(model, model_file, golden, facts, settings)
        url = ""
        try:
            preflight(model, model_file, version, golden)
            url = target.load(repository, version)
            with target.client(url) as client:
                parity = check_golden(client, model, version, golden)
            if not parity.passed:
                raise ServingError(f"golden sample check failed on version {version}: {parity.summary()}")
        except ServingError as error:
            repository.remove_version(model, version)
            try:
                target.load(repository, previous)
                back = f"version {previous} serves" if previous is not None else "no version serves"
            except ServingError as reload_error:
                back = (
                    f"version {previous} stays the served version in the repository"
                    if previous is not None
                    else "no version serves"
                ) + f"; reloading failed too: {reload_error}"
            raise ServingError(f"{model} version {version} rolled back ({back}): {error}") from error
        repository.mark_served(model, version, facts)
    return ServedVersion(version, previous, url, parity)


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
    ensure_reachable(settings.tracking_uri)
    registry = Registry(settings.tracking_uri, settings.registered_model)
    registered_version = registry.alias_version(alias)
    if registered_version is None:
        raise TrackingError(
            f"{settings.registered_model} has no {alias!r} version at {settings.tracking_uri}; "
            "train and gate a model first"
        )
    return registry, registered_version


def export_champion(
    settings: TrackingSettings, dataset: str, out_dir: str | Path, *, tensorrt: bool = False, alias: str = CHAMPION
) -> ExportedModel:
    """Export ``models:/<name>@<alias>`` to ONNX (and compile a TensorRT plan), each parity-checked.

    Writes ``model.onnx`` (+ ``model.plan`` with ``tensorrt``) and their ``.json`` sidecars into
    ``out_dir``; the returned model is the one a Triton of the matching kind serves.
    """
    _, registered_version = _champion(settings, alias)
    network = load_registered_network(settings, alias)
    return _export(network, settings.registered_model, registered_version, alias, dataset, Path(out_dir), tensorrt)


def _export(
    network: SegmentationNetwork,
    registered_model: str,
    registered_version: str,
    alias: str,
    dataset: str,
    out: Path,
    tensorrt: bool,
) -> ExportedModel:
    onnx_path = out / "model.onnx"
    facts: dict[str, object] = {
        "registered_model": registered_model,
        "registered_version": registered_version,
        "alias": alias,
    }
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


def promote(
    settings: TrackingSettings,
    repository: ModelRepository,
    dataset: str,
    target: ServingTarget,
    *,
    alias: str = CHAMPION,
    exported: ExportedModel | None = None,
) -> PromotionResult:
    """Serve the model behind ``models:/<name>@<alias>`` through ``target``, or roll back and raise.

    ``exported`` skips the export (a pipeline compiled it in an earlier step, on a GPU for TensorRT);
    it must come from the version the alias names now, else the promotion is refused.
    """
    registry, registered_version = _champion(settings, alias)
    if exported is not None and exported.registered_version != registered_version:
        raise ServingError(
            f"{exported.path} was exported from {settings.registered_model} "
            f"v{exported.registered_version}, but {alias} is now v{registered_version}; "
            "export again"
        )
    if exported is not None and (exported.path.suffix == ".plan") != (target.served_model == TENSORRT_MODEL):
        raise ServingError(
            f"{exported.path} does not fit {target.served_model}: ONNX files go to "
            f"{ONNX_MODEL} or {CPU_MODEL}, TensorRT plans to {TENSORRT_MODEL}"
        )
    network = load_registered_network(settings, alias)
    reference = torch_runner(network)
    optical, sar = next(iter(parity_samples(dataset, 1)))
    golden = GoldenSample(optical, sar, reference(optical, sar))
    model = target.served_model
    facts: dict[str, object] = {
        "registered_model": settings.registered_model,
        "registered_version": registered_version,
        "alias": alias,
    }
    with tempfile.TemporaryDirectory(prefix="cloudlulc-promote-") as folder:
        if exported is not None:
            model_path, export_parity = exported.path, exported.parity
        else:
            built = _export(
                network,
                settings.registered_model,
                registered_version,
                alias,
                dataset,
                Path(folder),
                tensorrt=model == TENSORRT_MODEL,
            )
            model_path, export_parity = built.path, built.parity
        facts["export_parity"] = export_parity.summary()
        try:
            served = publish_and_serve(repository, target, model_path, golden, facts)
        except ServingError as error:
            _tag(registry, registered_version, {"serving.status": f"rolled back: {error}"[:500]})
            raise ServingError(f"promotion of {settings.registered_model} v{registered_version}: {error}") from error
    served_tags = {
        "serving.status": "served",
        "serving.model": model,
        "serving.version": str(served.version),
        "serving.repository": repository.uri,
    }
    _tag(registry, registered_version, served_tags)
    try:
        registry.client.set_registered_model_tag(settings.registered_model, "served_version", str(served.version))
    except Exception as error:  # MlflowException; the version tag above already records the promotion
        raise TrackingError(f"registry at {settings.tracking_uri}: cannot tag the registered model: {error}") from error
    return PromotionResult(
        registered_version, served.version, model, served.grpc_url, export_parity, served.golden_parity
    )
