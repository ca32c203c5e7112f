"""How pipeline tasks meet the cluster: images' resources, GPUs, credentials, retries, timeouts, caching.

Kept apart from the pipeline graphs so each policy is stated once. Local runs (``kfp.local``) ignore
all of it; compiled YAML carries it to Kubeflow (kfp-kubernetes writes the Kubernetes parts).
"""

from __future__ import annotations

from kfp import dsl, kubernetes

from cloudlulc.serving.client import REPOSITORY_KEY_ENV
from components.runtime import MLFLOW_SECRET, S3_KEYS, S3_SECRET, SETTINGS_CONFIG_MAP, TRITON_SECRET, WORK_DIR_ENV

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")
"""Label the NVIDIA GPU operator puts on GPU nodes."""
SETTINGS_KEYS = (
    "CLOUDLULC_S3_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
    "TRITON_GRPC_URL",
    "TRITON_GRPC_REPLICAS",
    "CLOUDLULC_LOG_LEVEL",
    "CLOUDLULC_LOG_FORMAT",
)
MLFLOW_KEYS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
WORK_CLAIM = "cloudlulc-work"
"""PersistentVolumeClaim (k8s/base/pipeline-runner/work-volume.yaml) that keeps partial maps across retries."""
WORK_MOUNT = "/var/lib/cloudlulc-work"


def with_settings(task: dsl.PipelineTask, *, mlflow: bool = False) -> dsl.PipelineTask:
    """Endpoints from the settings config map, S3 keys (and MLflow credentials) from secrets, as env."""
    kubernetes.use_config_map_as_env(task, SETTINGS_CONFIG_MAP, {key: key for key in SETTINGS_KEYS})
    kubernetes.use_secret_as_env(task, S3_SECRET, {key: key for key in S3_KEYS})
    if mlflow:  # the cluster's MLflow requires basic auth (k8s/base/mlflow): a missing secret fails the pod at start
        kubernetes.use_secret_as_env(task, MLFLOW_SECRET, {key: key for key in MLFLOW_KEYS})
    return task


def with_work_volume(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The work volume at ``WORK_MOUNT``: a retried attempt (a new pod) finds the partial maps of the last one."""
    kubernetes.mount_pvc(task, pvc_name=WORK_CLAIM, mount_path=WORK_MOUNT)
    task.set_env_variable(WORK_DIR_ENV, WORK_MOUNT)
    return task


def with_triton_admin(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The key of Triton's restricted model-repository protocol (load / unload), for the promote step only."""
    kubernetes.use_secret_as_env(task, TRITON_SECRET, {REPOSITORY_KEY_ENV: REPOSITORY_KEY_ENV})
    return task


def on_cpu(task: dsl.PipelineTask, cpu: str, memory: str) -> dsl.PipelineTask:
    """Requests equal to limits: predictable scheduling for batch steps."""
    return task.set_cpu_request(cpu).set_cpu_limit(cpu).set_memory_request(memory).set_memory_limit(memory)


def on_gpu(task: dsl.PipelineTask, cpu: str = "8", memory: str = "48G") -> dsl.PipelineTask:
    """One NVIDIA GPU on a GPU node: accelerator limit, node selector and the GPU taint's toleration."""
    on_cpu(task, cpu, memory)
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
    kubernetes.add_node_selector(task, *GPU_NODE_LABEL)
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    return task


def policy(task: dsl.PipelineTask, *, retries: int, timeout_s: int, cache: bool, name: str) -> dsl.PipelineTask:
    """Retries with exponential backoff (preempted or flaky pods), a hard timeout, and the cache choice.

    Kubeflow's cache key ignores the data behind a URI parameter, so steps that read the latest data or
    change shared state (registry, model repository) never use the cache.
    """
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="600s")
    kubernetes.set_timeout(task, timeout_s)
    task.set_caching_options(cache)
    task.set_display_name(name)
    return task
