"""The training pipeline: new acquisitions in, a better model served out (or the champion kept)."""

from kfp import dsl

from components.checks import check_training_params
from components.export import export_model
from components.gate import evaluate_and_gate, report_refusal
from components.parameters import TRAINING_DEFAULTS as D
from components.parameters import TrainingParams, documented
from components.promote import promote_model
from components.summary import summarize_training_run
from components.train import train_model
from pipelines.platform import on_cpu, on_gpu, policy, with_settings, with_triton_admin
from pipelines.stages import HOUR, ingest_validated


@dsl.pipeline(
    name="cloudlulc-training",
    description="Ingest new Sentinel-1/2 pairs, validate, retrain or fine-tune CloudLULC-Net, gate against the "
    "champion, compile TensorRT and promote to Triton (compile and promote only when the gate passes).",
)
@documented(TrainingParams)
def training(
    catalog: str = D.catalog,
    bbox: str = D.bbox,
    start: str = D.start,
    end: str = D.end,
    max_cloud: float = D.max_cloud,
    s1_collection: str = D.s1_collection,
    data_uri: str = D.data_uri,
    labels: str = D.labels,
    label_table: str = D.label_table,
    chip_size: int = D.chip_size,
    max_nodata: float = D.max_nodata,
    epochs: int = D.epochs,
    batch_size: int = D.batch_size,
    crop_size: int = D.crop_size,
    learning_rate: float = D.learning_rate,
    architecture: str = D.architecture,
    model_size: str = D.model_size,
    init: str = D.init,
    tracking_uri: str = D.tracking_uri,
    min_gain: float = D.min_gain,
    max_bin_regression: float = D.max_bin_regression,
    first_min_miou: float = D.first_min_miou,
    first_min_oa: float = D.first_min_oa,
    repository: str = D.repository,
    tensorrt: bool = D.tensorrt,
    triton_url: str = D.triton_url,
    local_dir: str = D.local_dir,
) -> None:
    """Parameters and their ranges: ``components.parameters.TrainingParams`` (also checked by the first step)."""
    done = summarize_training_run(tracking_uri=tracking_uri, repository=repository)
    policy(
        with_settings(on_cpu(done, "500m", "1G"), mlflow=True),
        retries=0,
        timeout_s=600,
        cache=False,
        name="run summary",
    )
    with dsl.ExitHandler(done, name="training"):
        check = check_training_params(
            catalog=catalog,
            bbox=bbox,
            start=start,
            end=end,
            max_cloud=max_cloud,
            s1_collection=s1_collection,
            data_uri=data_uri,
            labels=labels,
            label_table=label_table,
            chip_size=chip_size,
            max_nodata=max_nodata,
            epochs=epochs,
            batch_size=batch_size,
            crop_size=crop_size,
            learning_rate=learning_rate,
            architecture=architecture,
            model_size=model_size,
            init=init,
            tracking_uri=tracking_uri,
            min_gain=min_gain,
            max_bin_regression=max_bin_regression,
            first_min_miou=first_min_miou,
            first_min_oa=first_min_oa,
            repository=repository,
            tensorrt=tensorrt,
            triton_url=triton_url,
            local_dir=local_dir,
        )
        policy(on_cpu(check, "500m", "1G"), retries=0, timeout_s=300, cache=True, name="check parameters")

        ingest, valid = ingest_validated(
            check,
            max_nodata=max_nodata,
            catalog=catalog,
            bbox=bbox,
            start=start,
            end=end,
            max_cloud=max_cloud,
            s1_collection=s1_collection,
            out_uri=data_uri,
            mode="chips",
            chip_size=chip_size,
            labels=labels,
            label_table=label_table,
        )

        train = train_model(
            dataset=ingest.outputs["dataset"],
            epochs=epochs,
            batch_size=batch_size,
            crop_size=crop_size,
            learning_rate=learning_rate,
            architecture=architecture,
            model_size=model_size,
            init=init,
            tracking_uri=tracking_uri,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).after(valid)
        policy(with_settings(on_gpu(train), mlflow=True), retries=1, timeout_s=24 * HOUR, cache=False, name="train")

        gate = evaluate_and_gate(
            dataset=ingest.outputs["dataset"],
            model=train.outputs["model"],
            tracking_uri=tracking_uri,
            min_gain=min_gain,
            max_bin_regression=max_bin_regression,
            first_min_miou=first_min_miou,
            first_min_oa=first_min_oa,
        )
        policy(
            with_settings(on_cpu(gate, "4", "16G"), mlflow=True),
            retries=1,
            timeout_s=2 * HOUR,
            cache=False,
            name="evaluate and gate",
        )

        with dsl.If(gate.outputs["decision"] == "promote", name="gate-passed"):
            export = export_model(dataset=ingest.outputs["dataset"], tracking_uri=tracking_uri, tensorrt=tensorrt)
            policy(
                with_settings(on_gpu(export, cpu="4", memory="16G"), mlflow=True),
                retries=1,
                timeout_s=2 * HOUR,
                cache=False,
                name="export and compile",
            )
            promote = promote_model(
                dataset=ingest.outputs["dataset"],
                exported=export.outputs["exported"],
                tracking_uri=tracking_uri,
                repository=repository,
                triton_url=triton_url,
                local_dir=local_dir,
            )
            policy(
                with_triton_admin(with_settings(on_cpu(promote, "2", "8G"), mlflow=True)),
                retries=1,
                timeout_s=HOUR,
                cache=False,
                name="promote to Triton",
            )
        with dsl.Else(name="gate-refused"):
            refused = report_refusal(reason=gate.outputs["reason"])
            policy(on_cpu(refused, "500m", "1G"), retries=0, timeout_s=300, cache=False, name="champion kept")
