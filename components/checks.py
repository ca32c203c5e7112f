"""First step of each pipeline: refuse a run whose parameters are of the wrong type or out of range.

Runs started from the Kubeflow UI skip the client-side check, so this step repeats it before any work;
the ranges live in ``components.parameters``.
"""

from kfp import dsl

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def check_training_params(
    catalog: str,
    bbox: str,
    start: str,
    end: str,
    max_cloud: float,
    s1_collection: str,
    data_uri: str,
    labels: str,
    label_table: str,
    chip_size: int,
    max_nodata: float,
    epochs: int,
    batch_size: int,
    crop_size: int,
    learning_rate: float,
    architecture: str,
    model_size: str,
    init: str,
    tracking_uri: str,
    min_gain: float,
    max_bin_regression: float,
    first_min_miou: float,
    first_min_oa: float,
    repository: str,
    tensorrt: bool,
    triton_url: str,
    local_dir: str,
) -> None:
    """Refuse the run before any work when a parameter is of the wrong type or out of range."""
    values = dict(locals())  # the parameters, before any name is imported
    from components.parameters import TrainingParams, checked

    checked(TrainingParams, values)
    print("training parameters checked")


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def check_mapping_params(
    catalog: str,
    bbox: str,
    start: str,
    end: str,
    max_cloud: float,
    s1_collection: str,
    labels: str,
    label_table: str,
    max_nodata: float,
    scenes_uri: str,
    maps_uri: str,
    region: str,
    model_name: str,
    tile: int,
    overlap: int,
    batch_size: int,
    window_days: int,
    min_change_confidence: float,
    reference: str,
    s2_only: bool,
    triton_url: str,
    local_dir: str,
) -> None:
    """Refuse the run before any work when a parameter is of the wrong type or out of range."""
    values = dict(locals())  # the parameters, before any name is imported
    from components.parameters import MappingParams, checked

    checked(MappingParams, values)
    print("mapping parameters checked")
