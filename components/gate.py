"""Gate components: challenger against champion on the test split; a refusal ends the run green."""

from typing import NamedTuple

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate_and_gate(
    dataset: dsl.Input[dsl.Dataset],
    model: dsl.Input[dsl.Model],
    tracking_uri: str,
    min_gain: float,
    max_bin_regression: float,
    first_min_miou: float,
    first_min_oa: float,
    metrics: dsl.Output[dsl.Metrics],
    confusion: dsl.Output[dsl.ClassificationMetrics],
) -> NamedTuple("GateOutputs", [("decision", str), ("reason", str)]):  # type: ignore[valid-type]
    """Evaluate challenger and champion with the protocol and move ``champion`` only if the gate passes.

    ``decision`` is ``promote`` or ``refuse`` and ``reason`` says why in one line. A refusal is a
    normal outcome (the champion stays); only a broken evaluation raises. ``metrics`` carries the
    challenger's test scores and ``confusion`` its test confusion matrix, which the Kubeflow UI draws.
    """
    from collections import namedtuple

    from cloudlulc import schema
    from cloudlulc.tracking import GateConfig, TrackingSettings, run_gate_stage
    from components.runtime import require_s3_credentials, tracking_uri_or_env

    uri = str(dataset.metadata["uri"])
    require_s3_credentials(uri)
    settings = TrackingSettings(tracking_uri=tracking_uri_or_env(tracking_uri or str(model.metadata["tracking_uri"])))
    limits = GateConfig(
        min_miou_gain=min_gain,
        max_bin_regression=max_bin_regression,
        first_min_miou=first_min_miou,
        first_min_oa=first_min_oa,
    )
    decision = run_gate_stage(uri, settings, limits)
    metrics.log_metric("promoted", 1.0 if decision.promote else 0.0)
    metrics.log_metric("challenger_version", float(model.metadata["registered_version"]))
    for name, value in decision.challenger_metrics.items():
        metrics.log_metric(name, round(value, 6))
    confusion.log_confusion_matrix(list(schema.CLASS_NAMES), decision.challenger_confusion)
    metrics.metadata["reason"] = decision.reason
    print(f"{'PROMOTED' if decision.promote else 'REFUSED'}: {decision.reason}")
    GateOutputs = namedtuple("GateOutputs", ["decision", "reason"])
    return GateOutputs("promote" if decision.promote else "refuse", decision.reason)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def report_refusal(reason: str, note: dsl.Output[dsl.Markdown]) -> None:
    """Record why the gate kept the champion: nothing is compiled or promoted, and the run ends green."""
    with open(note.path, "w") as text:
        text.write(
            f"# Gate refused the challenger\n\n{reason}\n\nThe champion keeps serving; nothing was "
            "compiled or promoted.\n"
        )
    print(f"gate refused the challenger: {reason}")
