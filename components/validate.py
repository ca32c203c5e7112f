"""Validation components: Great Expectations on the ingested data, then a stop on bad data."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def validate_data(
    dataset: dsl.Input[dsl.Dataset], max_nodata: float, report: dsl.Output[dsl.HTML], summary: dsl.Output[dsl.Metrics]
) -> str:
    """Validate chips (CloudLULC-Set) or scene stacks; return ``passed`` or ``failed``, never raise on bad data.

    The HTML report is an artifact either way (the Kubeflow UI shows it), so a failing run still
    carries the evidence; :func:`require_valid` then stops the pipeline.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from cloudlulc.validation import Thresholds, validate_dataset, write_report
    from components.runtime import require_s3_credentials

    uri = str(dataset.metadata["uri"])
    require_s3_credentials(uri)
    if dataset.metadata.get("mode") == "scenes":
        from cloudlulc.validation.scene_stacks import SceneThresholds, validate_scenes

        result = validate_scenes(uri, SceneThresholds(max_nodata_fraction=max_nodata))
    else:
        result = validate_dataset(uri, thresholds=Thresholds(max_nodata_fraction=max_nodata))
    report.uri = report.uri + ".html"  # opens as a page where a person downloads it; the UI shows it either way
    with tempfile.TemporaryDirectory() as folder:
        written = write_report(result, folder)
        shutil.copyfile(written["html"], report.path)
        Path(report.path).with_suffix(".json").write_text(Path(written["json"]).read_text())
    summary.log_metric("samples", result.sample_count)
    summary.log_metric("failures", len(result.failures))
    for failure in result.failures[:20]:
        print(f"FAIL {failure.sample}: {failure.rule} observed={failure.observed} {failure.detail}".rstrip())
    verdict = "passed" if result.success else "failed"
    print(f"validation {verdict}: {result.sample_count} samples, {len(result.failures)} failure(s)")
    return verdict


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def require_valid(verdict: str, report: dsl.Input[dsl.HTML], note: dsl.Output[dsl.Markdown]) -> None:
    """Stop the pipeline on failed validation, pointing at the report artifact (the run summary quotes why)."""
    from cloudlulc.errors import DataError
    from components.summary_page import leave_failure_note

    if verdict != "passed":
        error = DataError(
            report.uri,
            "validation failed: the data breaks the contract; nothing was trained or "
            "mapped. Open this report for the failing samples and rules.",
        )
        leave_failure_note(note.uri, str(error))
        raise error
    with open(note.path, "w") as handle:
        handle.write("Validation passed.\n")
    print("validation passed")
