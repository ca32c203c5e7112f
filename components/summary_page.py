"""The run summary page of the exit-handler steps (``components.summary``), as plain functions.

Kept apart from the component definitions: inside a step, ``kfp.dsl`` is the executor's slim runtime,
which cannot define components, so the steps import their helpers from here.

What ran is read from the run's artifact folder (every step that finished left its outputs there).
Kubeflow tells an exit task only that the handler's group failed, so a step that stops a run on
purpose writes a failure note first (:func:`leave_failure_note`) and the page quotes it.
"""

from collections.abc import Callable
from typing import Any

FAILURE_NOTE = "failure.md"
"""The file a step that stops the run writes in its own artifact folder before it raises."""


def leave_failure_note(artifact_uri: str, message: str) -> None:
    """Write ``message`` beside the step's artifact, straight to the store (nothing of a failed step is uploaded)."""
    from cloudlulc.io.storage import open_storage

    folder = artifact_uri.rstrip("/").rsplit("/", 1)[0]
    if folder.startswith("s3://") or folder.startswith("/"):
        open_storage(folder).write_bytes(FAILURE_NOTE, message.encode())


def run_folder(own_uri: str, own_task: str) -> str | None:
    """The run's artifact folder: the part of this step's artifact URI before its task's folder."""
    marker = f"/{own_task}/"
    return own_uri[: own_uri.index(marker)] if marker in own_uri else None


def steps_with_outputs(folder: str, own_task: str) -> dict[str, list[str]]:
    """Task folder -> files under it (the summary's own left out): the steps that finished or left a note."""
    from cloudlulc.io.storage import open_storage

    steps: dict[str, list[str]] = {}
    for key in open_storage(folder).list():
        task, _, rest = key.partition("/")
        if task != own_task and rest:
            steps.setdefault(task, []).append(rest)
    return steps


def summary_markdown(
    state: str, error: str, steps: dict[str, list[str]], notes: dict[str, str], facts: dict[str, Callable[[], str]]
) -> str:
    """The page: the run's end state, the steps that left outputs, why it stopped, then what serves and is published."""
    lines = [f"# Run {state.lower()}", ""]
    if steps:
        lines += ["Steps with outputs: " + ", ".join(f"`{name}`" for name in sorted(steps)), ""]
    for step, note in sorted(notes.items()):
        lines += [f"**Stopped by `{step}`**: {note.strip()}", ""]
    if error and not notes:
        lines += [f"**Failed**: {error} (the failed step's log ends with its one-line `error:`)", ""]
    lines += ["| what | now |", "| --- | --- |"]
    for name, look_up in facts.items():
        try:
            value = look_up()
        except Exception as problem:  # any store may be down when a run fails; say so rather than fail here
            value = f"unknown ({type(problem).__name__}: {str(problem).splitlines()[0][:200] if str(problem) else ''})"
        lines.append(f"| {name} | {value.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write_summary(summary: Any, own_task: str, state: str, error: str, facts: dict[str, Callable[[], str]]) -> str:
    """Build the page for the step whose Markdown output (a kfp artifact) is ``summary``; write it, return it."""
    from cloudlulc.io.storage import open_storage

    own_uri = str(summary.uri)
    folder = run_folder(own_uri, own_task)
    steps = steps_with_outputs(folder, own_task) if folder else {}
    notes = {
        step: open_storage(f"{folder}/{step}").read_bytes(path).decode()
        for step, paths in steps.items()
        for path in paths
        if folder and path.rsplit("/", 1)[-1] == FAILURE_NOTE
    }
    page = summary_markdown(state, error, steps, notes, facts)
    summary.uri = own_uri + ".md"  # opens as text where a person downloads it
    with open(summary.path, "w") as handle:
        handle.write(page)
    return page


def training_facts(tracking_uri: str, repository: str) -> dict[str, Callable[[], str]]:
    """Champion and challenger in the registry, and what the model repository serves."""
    from cloudlulc.serving.repository import ModelRepository
    from cloudlulc.tracking import Registry, TrackingSettings
    from components.runtime import tracking_uri_or_env

    def registry() -> Registry:
        settings = TrackingSettings(tracking_uri=tracking_uri_or_env(tracking_uri))
        return Registry(settings.tracking_uri, settings.registered_model)

    def served() -> str:
        store = ModelRepository(repository)
        records = {name: store.served_record(name) for name in ("cloudlulc", "cloudlulc_onnx", "cloudlulc_cpu")}
        shown = [f"{name} v{record.get('version')}" for name, record in records.items() if record]
        return ", ".join(shown) or "nothing"

    return {
        "champion (registry)": lambda: f"version {registry().alias_version('champion') or 'none'}",
        "challenger (registry)": lambda: f"version {registry().alias_version('challenger') or 'none'}",
        f"served from {repository}": served,
    }


def mapping_facts(maps_uri: str, region: str) -> dict[str, Callable[[], str]]:
    """The region's newest published product."""
    from cloudlulc.products.catalog import read_items

    def newest() -> str:
        items = read_items(maps_uri, region)
        return f"{items[-1].id} ({len(items)} product(s) in the catalogue)" if items else "none yet"

    return {f"newest product of {region}": newest}
