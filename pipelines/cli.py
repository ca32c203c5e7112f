"""The ``pipelines`` and ``demo`` commands of ``cloudlulc``, plugged in through the ``cloudlulc.commands`` entry points.

They live on the pipelines side so that the library never imports the pipelines (or kfp and dvc): the
``cloudlulc`` command finds them through its entry-point group, like any other plugin, and says which
extra to install when they are missing.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import click

for _needed in ("kfp", "dvc"):  # found, not imported: the `cloudlulc` command stays quick to start
    if find_spec(_needed) is None:
        raise ImportError(f"{_needed} is not installed")


@click.command()
@click.option(
    "--out",
    "out_dir",
    default="outputs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for everything the job writes (a rerun adds to it).",
)
@click.option("--epochs", type=click.IntRange(1, 500), default=20, show_default=True, help="Training epochs.")
@click.option(
    "--scene-size",
    type=click.IntRange(256, 4096),
    default=1024,
    show_default=True,
    help="Side of the synthetic scenes, pixels.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, same run.")
@click.option("--keep-serving", is_flag=True, help="Leave the local Triton running at the end.")
def demo(out_dir: str, epochs: int, scene_size: int, seed: int, keep_serving: bool) -> None:
    """Run the main job on the embedded defaults: both pipelines locally (kfp.local), acquisitions to maps.

    Synthetic acquisitions -> training pipeline (ingest, validate, train tiny, evaluate and gate, export,
    promote to the local Triton) -> regional-mapping pipeline (ingest, validate, map through Triton) ->
    COG, class areas, quicklook and an MLflow run; prints where each result is.
    """
    from pipelines.local import MainJobConfig, run_main_job

    result = run_main_job(
        out_dir,
        MainJobConfig(epochs=epochs, scene_size=scene_size, seed=seed),
        keep_serving=keep_serving,
        echo=click.echo,
    )
    click.echo("\n" + result.summary())


def _connection_options(command: Callable[..., None]) -> Callable[..., None]:
    """Where the Kubeflow Pipelines API is and how to authenticate (``connection_from``'s arguments)."""
    options = [
        click.option("--host", help="Kubeflow Pipelines API, e.g. https://kubeflow.example.org/pipeline [KFP_HOST]."),
        click.option("--namespace", default="kubeflow-user", show_default=True, help="Kubeflow profile namespace."),
        click.option("--token", help="Bearer token [KF_PIPELINES_TOKEN]."),
        click.option("--cookies", help="Session cookie, e.g. authservice_session=... [KFP_COOKIES]."),
        click.option("--insecure", is_flag=True, help="Do not verify the API's TLS certificate."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _kfp_options(command: Callable[..., None]) -> Callable[..., None]:
    """The connection options, then what a run needs: experiment, service account, parameters, pipeline."""
    options: list[Callable[[Callable[..., None]], Callable[..., None]]] = [
        _connection_options,
        click.option("--experiment", default="cloudlulc", show_default=True),
        click.option(
            "--service-account",
            default="cloudlulc-pipeline-runner",
            show_default=True,
            help="Kubernetes service account the run's pods use (k8s/ grants it least privilege).",
        ),
        click.option("--param", "params", multiple=True, help="Pipeline parameter name=value (repeatable)."),
        click.argument("pipeline", type=click.Choice(["training", "regional-mapping"])),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group()
def pipelines() -> None:
    """Compile, submit and schedule the Kubeflow pipelines (training, regional-mapping); manage schedules."""


@pipelines.command("compile")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder [default: pipelines/compiled].")
def pipelines_compile(out_dir: str | None) -> None:
    """Compile both pipelines to the YAML the Kubeflow UI uploads (Pipelines > Upload pipeline)."""
    from pipelines.compile import COMPILED_DIR, compile_all

    for path in compile_all(Path(out_dir) if out_dir else COMPILED_DIR):
        click.echo(f"compiled {path}")


@pipelines.command("submit")
@_kfp_options
@click.option("--run-name", help="Name of the run [default: <pipeline>-manual].")
def pipelines_submit(
    pipeline: str, experiment: str, service_account: str, params: tuple[str, ...], run_name: str | None, **kfp: Any
) -> None:
    """Start one run of PIPELINE on Kubeflow (parameters are checked before anything is sent)."""
    from pipelines.submit import connection_from, parse_params, submit

    values = parse_params(pipeline, params)
    connection = connection_from(**kfp)  # host, namespace, token, cookies, insecure
    run_id = submit(
        connection, pipeline, values, experiment=experiment, run_name=run_name, service_account=service_account
    )
    click.echo(f"started {pipeline} run {run_id} in experiment {experiment!r} at {connection.host}")


@pipelines.command("schedule")
@_kfp_options
@click.option("--name", "job_name", required=True, help="Recurring run name, e.g. mapping-lyon-weekly.")
@click.option("--cron", required=True, help="Six-field cron, seconds first: '0 0 6 * * 1' = Mondays 06:00 UTC.")
@click.option("--max-concurrency", type=click.IntRange(1, 10), default=1, show_default=True)
@click.option("--catchup/--no-catchup", default=False, show_default=True, help="Backfill runs missed while paused.")
def pipelines_schedule(
    pipeline: str,
    experiment: str,
    service_account: str,
    params: tuple[str, ...],
    job_name: str,
    cron: str,
    max_concurrency: int,
    catchup: bool,
    **kfp: Any,
) -> None:
    """Create a recurring run of PIPELINE, e.g. the regional-mapping of one region every week."""
    from pipelines.submit import connection_from, parse_params, schedule

    values = parse_params(pipeline, params)
    if pipeline == "regional-mapping" and values.get("end"):
        click.echo(
            f"warning: end={values['end']} is fixed: every run of {job_name!r} maps that date again; leave end "
            "empty to map each run's scheduled day",
            err=True,
        )
    connection = connection_from(**kfp)  # host, namespace, token, cookies, insecure
    job_id = schedule(
        connection,
        pipeline,
        values,
        name=job_name,
        cron=cron,
        experiment=experiment,
        max_concurrency=max_concurrency,
        catchup=catchup,
        service_account=service_account,
    )
    click.echo(
        f"scheduled {pipeline} as {job_name!r} ({job_id}): cron {cron!r}, at most {max_concurrency} at a "
        f"time, {'with' if catchup else 'no'} catch-up"
    )


@pipelines.group("schedules")
def pipelines_schedules() -> None:
    """List, pause, resume and delete recurring runs (a schedule is named by its name or its id)."""


@pipelines_schedules.command("list")
@_connection_options
def schedules_list(**kfp: Any) -> None:
    """List the namespace's recurring runs.

    One line each: name, id, cron, enabled or paused, pipeline.
    """
    from pipelines.submit import connection_from, list_schedules

    connection = connection_from(**kfp)  # host, namespace, token, cookies, insecure
    found = list_schedules(connection)
    for item in found:
        click.echo(item.line())
    if not found:
        click.echo(f"no schedule in namespace {connection.namespace!r} at {connection.host}")


def _schedule_command(action: str, done: str, summary: str) -> click.Command:
    """``schedules pause|resume|delete SCHEDULE``: one command per action, the same arguments."""

    @_connection_options
    @click.argument("reference", metavar="SCHEDULE")
    def command(reference: str, **kfp: Any) -> None:
        from pipelines.submit import connection_from, delete_schedule, pause_schedule, resume_schedule

        act = {"pause": pause_schedule, "resume": resume_schedule, "delete": delete_schedule}[action]
        item = act(connection_from(**kfp), reference)  # host, namespace, token, cookies, insecure
        click.echo(f"{done} {item.line()}")

    command.__doc__ = summary
    return pipelines_schedules.command(action)(command)


_schedule_command("pause", "paused", "Pause SCHEDULE (a name or an id): no run starts until it is resumed.")
_schedule_command("resume", "resumed", "Resume the paused SCHEDULE (a name or an id).")
_schedule_command("delete", "deleted", "Delete SCHEDULE (a name or an id); the runs it started stay.")


@pipelines.command("run")
@click.argument("pipeline", type=click.Choice(["training", "regional-mapping"]))
@click.option("--param", "params", multiple=True, help="Pipeline parameter name=value (repeatable).")
@click.option(
    "--root",
    "pipeline_root",
    default="outputs/pipeline-runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the steps' artifacts.",
)
def pipelines_run(pipeline: str, params: tuple[str, ...], pipeline_root: str) -> None:
    """Run PIPELINE on this machine with kfp.local (each step a subprocess; no cluster)."""
    from pipelines.local import run_mapping, run_training
    from pipelines.submit import parse_params

    values = parse_params(pipeline, params)
    runner = run_training if pipeline == "training" else run_mapping
    runner(values, Path(pipeline_root))
    click.echo(f"{pipeline} finished; artifacts under {pipeline_root}")
