"""Promote component: publish the compiled champion to the Triton model repository and serve it."""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def promote_model(
    dataset: dsl.Input[dsl.Dataset],
    exported: dsl.Input[dsl.Model],
    tracking_uri: str,
    repository: str,
    triton_url: str,
    local_dir: str,
    served: dsl.Output[dsl.Artifact],
) -> str:
    """Publish the export as the next version, load it, check the golden sample; keep it or roll back.

    With ``local_dir`` (one-machine runs) the local Triton serves the ONNX export as ``cloudlulc_cpu``;
    otherwise Triton at ``triton_url`` (or ``TRITON_GRPC_URL``) loads it from ``repository``. Both run
    explicit model control with the repository API key (``TRITON_REPOSITORY_KEY`` in the cluster).
    Returns the gRPC URL that now serves it.
    """
    import json
    import os
    from pathlib import Path

    from cloudlulc.serving import ModelRepository, promote, read_exported
    from cloudlulc.serving.targets import serving_target
    from cloudlulc.tracking import TrackingSettings
    from components.runtime import require_s3_credentials, tracking_uri_or_env

    uri = str(dataset.metadata["uri"])
    require_s3_credentials(uri, repository)
    settings = TrackingSettings(tracking_uri=tracking_uri_or_env(tracking_uri))
    export = read_exported(Path(exported.path) / str(exported.metadata["file"]))
    url = "" if local_dir else (triton_url or os.environ.get("TRITON_GRPC_URL", ""))
    target = serving_target(
        url, local_dir, tensorrt=export.path.suffix != ".onnx", replicas=os.environ.get("TRITON_GRPC_REPLICAS") or None
    )
    result = promote(settings, ModelRepository(repository), uri, target, exported=export)
    served.metadata.update(
        {
            "registered_version": result.registered_version,
            "served_model": result.served_model,
            "served_version": result.served_version,
            "grpc_url": result.grpc_url,
            "repository": repository,
        }
    )
    with open(served.path, "w") as record:
        json.dump(
            {
                **served.metadata,
                "export_parity": result.export_parity.summary(),
                "golden_parity": result.golden_parity.summary(),
            },
            record,
            indent=2,
        )
    print(
        f"PROMOTED: {settings.registered_model} v{result.registered_version} serves as {result.served_model} "
        f"version {result.served_version} at {result.grpc_url}; "
        f"golden sample {result.golden_parity.summary()}"
    )
    return result.grpc_url
