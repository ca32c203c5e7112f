"""Upload, run and schedule the compiled pipelines through the Kubeflow Pipelines API.

Parameters are checked against ``components.parameters`` before anything is sent, so a bad value is
refused here, naming it, instead of failing later in the cluster. Recurring runs of the mapping
pipeline are one per region, with at most one run at a time and no catch-up of missed runs by default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cloudlulc.errors import CloudLULCError
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
            raise CloudLULCError(f"parameter {pair!r} must look like name=value")
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
        raise CloudLULCError(f"cron {cron!r}: Kubeflow wants six fields, seconds first (e.g. '0 0 6 * * *')")
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


def connection_from(
    host: str | None, namespace: str, token: str | None, cookies: str | None, insecure: bool
) -> Connection:
    """A connection from options, falling back on ``KFP_HOST`` / ``KF_PIPELINES_TOKEN`` / ``KFP_COOKIES``."""
    host = host or os.environ.get("KFP_HOST")
    if not host:
        raise CloudLULCError("no Kubeflow Pipelines host: pass --host or set KFP_HOST")
    return Connection(
        host=host,
        namespace=namespace,
        token=token or os.environ.get("KF_PIPELINES_TOKEN"),
        cookies=cookies or os.environ.get("KFP_COOKIES"),
        verify_ssl=not insecure,
    )


__all__ = ["COMPILED_DIR", "Connection", "KubeflowError", "connection_from", "parse_params", "schedule", "submit"]
