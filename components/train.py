"""Train component: retrain or fine-tune CloudLULC-Net, tracked in MLflow, registered as challenger."""

from kfp import dsl

from components.images import CUDA_IMAGE


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def train_model(
    dataset: dsl.Input[dsl.Dataset],
    epochs: int,
    batch_size: int,
    crop_size: int,
    learning_rate: float,
    architecture: str,
    model_size: str,
    init: str,
    tracking_uri: str,
    model: dsl.Output[dsl.Model],
    metrics: dsl.Output[dsl.Metrics],
    kfp_run_id: str = "",
) -> str:
    """Train on the dataset (from ``init`` when given: fine-tuning), log to MLflow; return the new version.

    Checkpoints and the MLflow run id are kept beside the model artifact (``<model URI>.work``), which
    Kubeflow fixes once per task: a retried attempt (a preempted GPU node) resumes from the last
    finished epoch and continues the same MLflow run. The model artifact records the MLflow run, its
    page, the ``models:/`` URI and the registered version; the weights themselves live in MLflow's
    artifact store, where the gate and promotion load them.
    """
    import json
    import os
    import tempfile

    from cloudlulc.tracking import TrackingSettings, run_train_stage
    from cloudlulc.tracking.provenance import KFP_RUN_ID_ENV
    from cloudlulc.training.config import load_train_config
    from components.runtime import durable_work_uri, require_s3_credentials, tracking_uri_or_env

    uri = str(dataset.metadata["uri"])
    work_uri = durable_work_uri(model.uri)
    require_s3_credentials(uri, work_uri or "")
    if kfp_run_id:
        os.environ[KFP_RUN_ID_ENV] = kfp_run_id
    settings = TrackingSettings(tracking_uri=tracking_uri_or_env(tracking_uri))
    with tempfile.TemporaryDirectory(prefix="cloudlulc-train-") as output_dir:
        overrides = [
            f"dataset={uri}",
            f"output_dir={output_dir}",
            f"epochs={epochs}",
            f"batch_size={batch_size}",
            f"crop_size={crop_size}",
            f"learning_rate={learning_rate}",
            f"architecture={architecture}",
            f"size={model_size}",
        ] + ([f"init={init}"] if init else [])
        stage = run_train_stage(load_train_config(None, overrides), settings, progress=False, work_uri=work_uri)
    for name, value in stage.test_metrics.items():
        if isinstance(value, int | float):
            metrics.log_metric(name, float(value))
    model.metadata.update(
        {
            "run_id": stage.run_id,
            "model_uri": stage.model_uri,
            "registered_version": stage.version,
            "test_miou": float(stage.test_metrics["test_miou"]),
            "tracking_uri": settings.tracking_uri,
            "mlflow_run_url": stage.run_url or "",
            "work_uri": work_uri or "",
        }
    )
    with open(model.path, "w") as record:
        json.dump(dict(model.metadata), record, indent=2)
    print(
        f"registered {settings.registered_model} v{stage.version} as challenger; "
        f"test mIoU {stage.test_metrics['test_miou']:.2%} (run {stage.run_id})"
    )
    return stage.version
