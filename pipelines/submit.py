"""Upload, run and schedule the compiled pipelines through the Kubeflow Pipelines API.

Parameters are checked against ``components.parameters`` before anything is sent, so a bad value is
refused here, naming it, instead of failing later in the cluster. Recurring runs of the mapping
pipeline are one per region, with at most one run at a time and no catch-up of missed runs by default;
``list_schedules``, ``pause_schedule``, ``resume_schedule`` and ``delete_schedule`` manage them by name
or id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cloudlulc.errors import CloudLULCError, UsageError
from components.parameters import MappingParams, PipelineParams, TrainingParams, checked
from pipelines.compile import COMPILED_DIR, compiled_path

PARAMETER_MODELS: dict[str, type[PipelineParams]] = {"training": TrainingParams, "regional-mapping": MappingParams}


class KubeflowError(CloudLULCError):
    """The Kubeflow Pipelines API is unreachable or refused a request."""

    exit_code = 4


@dataclass(frozen=True)
class Connection:
    """Where the Kubeflow Pipelines API is and how to authenticate.

    ``token`` is a bearer token (e.g. a service account token, or ``KF_PIPELINES_TOKEN``); ``cookies``
    an authenticated session cookie (Kubeflow behind Dex/oauth2-proxy: ``authservice_session=...``).
    """

    host: str
    namespace: str = "kubeflow-user"
    token: str | None = None
    cookies: str | None = None
    verify_ssl: bool = True

    def client(self) -> Any:
        """A ``kfp.Client`` that answered its health check."""
        import warnings

        import kfp

        try:
            with warnings.catch_warnings():  # "only works with Kubeflow Pipelines v2": we require v2
                warnings.simplefilter("ignore", FutureWarning)
                client = kfp.Client(
                    host=self.host,
                    namespace=self.namespace,
                    existing_token=self.token,
                    cookies=self.cookies,
                    verify_ssl=self.verify_ssl,
                )
            if not client.get_kfp_healthz():
                raise KubeflowError(f"Kubeflow Pipelines at {self.host} is not healthy")
        except KubeflowError:
            raise
        except Exception as error:  # urllib3 / kfp_server_api errors, connection refused
            raise KubeflowError(f"Kubeflow Pipelines API at {self.host} unreachable: {error}") from error
        return client


def parse_params(pipeline: str, pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``key=value`` pairs, typed and range-checked for ``pipeline``; only the given keys are returned."""
    raw: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise UsageError(f"parameter {pair!r} must look like name=value")
        raw[key.strip()] = value
    model = PARAMETER_MODELS[pipeline]
    values = checked(model, raw).model_dump()
    return {key: values[key] for key in raw}


def _experiment_id(client: Any, name: str, namespace: str) -> str:
    return str(client.create_experiment(name=name, namespace=namespace).experiment_id)


def submit(
    connection: Connection,
    pipeline: str,
    params: dict[str, Any],
    *,
    experiment: str = "cloudlulc",
    run_name: str | None = None,
    service_account: str | None = None,
) -> str:
    """Start one run of the compiled ``pipeline``; return its run id."""
    client = connection.client()
    try:
        result = client.create_run_from_pipeline_package(
            str(compiled_path(pipeline)),
            arguments=params,
            run_name=run_name or f"{pipeline}-manual",
            experiment_name=experiment,
            namespace=connection.namespace,
            service_account=service_account,
        )
    except Exception as error:
        raise KubeflowError(f"Kubeflow Pipelines at {connection.host} refused the run: {error}") from error
    return str(result.run_id)


def schedule(
    connection: Connection,
    pipeline: str,
    params: dict[str, Any],
    *,
    name: str,
    cron: str,
    experiment: str = "cloudlulc",
    max_concurrency: int = 1,
    catchup: bool = False,
    service_account: str | None = None,
) -> str:
    """Create a recurring run (Kubeflow's six-field cron, seconds first); return its id."""
    if len(cron.split()) != 6:
        raise UsageError(f"cron {cron!r}: Kubeflow wants six fields, seconds first (e.g. '0 0 6 * * *')")
    client = connection.client()
    try:
        experiment_id = _experiment_id(client, experiment, connection.namespace)
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=not catchup,
            params=params,
            pipeline_package_path=str(compiled_path(pipeline)),
            enabled=True,
            service_account=service_account,
        )
    except Exception as error:
        raise KubeflowError(f"Kubeflow Pipelines at {connection.host} refused the schedule: {error}") from error
    return str(job.recurring_run_id)


PAGE_SIZE = 100
"""Recurring runs asked for per page when listing them."""


@dataclass(frozen=True)
class Schedule:
    """A recurring run as ``cloudlulc pipelines schedules`` shows it."""

    id: str
    name: str
    cron: str
    enabled: bool
    pipeline: str

    @classmethod
    def from_api(cls, run: Any) -> Schedule:
        """From a ``V2beta1RecurringRun``: its trigger, its status and the pipeline it runs."""
        trigger = run.trigger
        if trigger is not None and trigger.cron_schedule is not None:
            cron = str(trigger.cron_schedule.cron)
        elif trigger is not None and trigger.periodic_schedule is not None:
            cron = f"every {trigger.periodic_schedule.interval_second}s"
        else:
            cron = "-"
        status = str(run.status or "")
        enabled = status == "ENABLED" if status not in ("", "STATUS_UNSPECIFIED") else str(run.mode) == "ENABLE"
        return cls(str(run.recurring_run_id), str(run.display_name or ""), cron, enabled, _pipeline_name(run))

    def line(self) -> str:
        """One line: name, id, cron, enabled or paused, pipeline."""
        state = "enabled" if self.enabled else "paused"
        return f"{self.name} ({self.id}): cron '{self.cron}', {state}, pipeline {self.pipeline}"


def _pipeline_name(run: Any) -> str:
    """The pipeline's name from an embedded spec (a package upload), else the pipeline version it references."""
    spec = run.pipeline_spec if isinstance(run.pipeline_spec, dict) else {}
    spec = spec.get("pipeline_spec", spec)  # with a platform spec, the pipeline spec is nested
    name = spec.get("pipelineInfo", {}).get("name") if isinstance(spec, dict) else None
    if name:
        return str(name)
    reference = run.pipeline_version_reference
    if reference is not None and reference.pipeline_id:
        return f"{reference.pipeline_id} version {reference.pipeline_version_id or 'latest'}"
    return "-"


def _api_status(error: Exception) -> int | None:
    """The HTTP status of a ``kfp_server_api`` error, None for other errors (connection refused)."""
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


def _schedules(client: Any, connection: Connection) -> list[Schedule]:
    found: list[Schedule] = []
    token = ""
    while True:
        try:
            page = client.list_recurring_runs(page_token=token, page_size=PAGE_SIZE, namespace=connection.namespace)
        except Exception as error:
            raise KubeflowError(f"Kubeflow Pipelines at {connection.host} refused the listing: {error}") from error
        found.extend(Schedule.from_api(run) for run in page.recurring_runs or [])
        token = page.next_page_token or ""
        if not token:
            return found


def list_schedules(connection: Connection) -> list[Schedule]:
    """Every recurring run of the connection's namespace, in the API's order."""
    return _schedules(connection.client(), connection)


def _resolve(client: Any, connection: Connection, reference: str) -> Schedule:
    """The schedule named ``reference``, or whose id it is; UsageError when none or several are.

    A name must be unique to act on it: two schedules of one name are refused, naming both ids, so the
    wrong one is never paused or deleted.
    """
    schedules = _schedules(client, connection)
    for found in schedules:
        if found.id == reference:
            return found
    named = [found for found in schedules if found.name == reference]
    if len(named) > 1:
        ids = ", ".join(found.id for found in named)
        raise UsageError(f"{len(named)} schedules are named {reference!r} ({ids}): give the id of the one you mean")
    if named:
        return named[0]
    try:  # an id the listing of this namespace does not show
        return Schedule.from_api(client.get_recurring_run(recurring_run_id=reference))
    except Exception as error:
        if _api_status(error) in (400, 404):
            raise UsageError(
                f"no schedule named {reference!r} (or with that id) in namespace {connection.namespace!r} "
                f"at {connection.host}"
            ) from None
        raise KubeflowError(f"Kubeflow Pipelines at {connection.host} refused to get {reference!r}: {error}") from error


def _act(connection: Connection, reference: str, action: str) -> Schedule:
    """Pause, resume or delete the schedule ``reference`` (a name or an id); return it as it now stands."""
    client = connection.client()
    found = _resolve(client, connection, reference)
    call = {
        "pause": client.disable_recurring_run,
        "resume": client.enable_recurring_run,
        "delete": client.delete_recurring_run,
    }[action]
    try:
        call(recurring_run_id=found.id)
        if action == "delete":
            return found
        return Schedule.from_api(client.get_recurring_run(recurring_run_id=found.id))
    except Exception as error:
        raise KubeflowError(
            f"Kubeflow Pipelines at {connection.host} refused to {action} {found.name!r} ({found.id}): {error}"
        ) from error


def pause_schedule(connection: Connection, reference: str) -> Schedule:
    """Stop a recurring run from starting runs (kept, with its parameters, for ``resume_schedule``)."""
    return _act(connection, reference, "pause")


def resume_schedule(connection: Connection, reference: str) -> Schedule:
    """Let a paused recurring run start runs again (missed runs are backfilled only with catch-up)."""
    return _act(connection, reference, "resume")


def delete_schedule(connection: Connection, reference: str) -> Schedule:
    """Remove a recurring run; its past runs stay in the experiment."""
    return _act(connection, reference, "delete")


def connection_from(
    host: str | None, namespace: str, token: str | None, cookies: str | None, insecure: bool
) -> Connection:
    """A connection from options, falling back on ``KFP_HOST`` / ``KF_PIPELINES_TOKEN`` / ``KFP_COOKIES``."""
    host = host or os.environ.get("KFP_HOST")
    if not host:
        raise UsageError("no Kubeflow Pipelines host: pass --host or set KFP_HOST")
    return Connection(
        host=host,
        namespace=namespace,
        token=token or os.environ.get("KF_PIPELINES_TOKEN"),
        cookies=cookies or os.environ.get("KFP_COOKIES"),
        verify_ssl=not insecure,
    )


__all__ = [
    "COMPILED_DIR",
    "Connection",
    "KubeflowError",
    "Schedule",
    "connection_from",
    "delete_schedule",
    "list_schedules",
    "parse_params",
    "pause_schedule",
    "resume_schedule",
    "schedule",
    "submit",
]
