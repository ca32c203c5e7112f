"""Export/compile component: the new champion to ONNX and, on a GPU node, a TensorRT plan."""

from kfp import dsl

from components.images import CUDA_IMAGE


@dsl.component(base_image=CUDA_IMAGE, install_kfp_package=False)
def export_model(
    dataset: dsl.Input[dsl.Dataset], tracking_uri: str, tensorrt: bool, exported: dsl.Output[dsl.Model]
) -> None:
    """Export ``champion`` (ONNX, parity-checked against PyTorch) and compile it with TensorRT when asked.

    The artifact is a folder with ``model.onnx`` (+ ``model.plan``) and parity sidecars; its metadata
    names the registered version, so promotion can refuse an export of a version no longer champion.
    The plan is compiled here, on the same GPU type Triton runs on, because plans are GPU-specific.
    """
    from cloudlulc.serving import export_champion
    from cloudlulc.tracking import TrackingSettings
    from components.runtime import require_s3_credentials, tracking_uri_or_env

    uri = str(dataset.metadata["uri"])
    require_s3_credentials(uri)
    settings = TrackingSettings(tracking_uri=tracking_uri_or_env(tracking_uri))
    result = export_champion(settings, uri, exported.path, tensorrt=tensorrt)
    exported.metadata.update(
        {
            "file": result.path.name,
            "registered_version": result.registered_version,
            "max_abs_diff": result.parity.max_abs_diff,
            "argmax_agreement": result.parity.argmax_agreement,
        }
    )
    print(
        f"exported {settings.registered_model} v{result.registered_version} to {result.path.name}: "
        f"{result.parity.summary()}"
    )
