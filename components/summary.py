"""Exit-handler step of both pipelines: one page saying how the run ended and what it left published.

It runs whether the body succeeded or failed (``dsl.ExitHandler``), so an operator opening a failed run
reads which step failed and why, and what serves and is published now (the champion, the served
version, the newest product), without opening every step. Each look-up that fails is written as such:
the summary itself never fails the run.
"""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def summarize_training_run(
    status: dsl.PipelineTaskFinalStatus, tracking_uri: str, repository: str, summary: dsl.Output[dsl.Markdown]
) -> None:
    """Write the training run's summary page (also printed to the step's log)."""
    from components.summary_page import training_facts, write_summary

    facts = training_facts(tracking_uri, repository)
    print(write_summary(summary, "summarize-training-run", status.state, status.error_message, facts))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def summarize_mapping_run(
    status: dsl.PipelineTaskFinalStatus, maps_uri: str, region: str, summary: dsl.Output[dsl.Markdown]
) -> None:
    """Write the mapping run's summary page (also printed to the step's log)."""
    from components.summary_page import mapping_facts, write_summary

    facts = mapping_facts(maps_uri, region)
    print(write_summary(summary, "summarize-mapping-run", status.state, status.error_message, facts))
