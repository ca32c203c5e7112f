"""Deployment artefacts, checked offline: no cluster and no container engine run here.

- k8s/: base and each overlay rendered with `kubectl kustomize`, every object validated against the
  Kubernetes JSON schemas bundled in kubernetes-validate (strict: unknown fields fail; the Prometheus Operator's
  ServiceMonitors, which it has no schema for, against the fields of their API that the monitors use), then the
  semantics a schema cannot see (locked-down containers, Triton's contract, MLflow's basic auth, the database
  backup, the monitors' targets, autoscaling, RBAC, network policies, services, settings and secret references,
  image tags). A real MLflow server with the same auth settings: tests/test_mlflow_auth.py.
- The secret templates (k8s/secrets/*.env.example): the names and keys the pipelines use, placeholder values.
- The images: both Dockerfiles and the Makefile run the one install script, components/install.sh.
The linters (hadolint, checkov) run in `make lint-deploy`.
"""

from __future__ import annotations

import configparser
import functools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import cloudlulc

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
RENDERS = ("base", "overlays/dev", "overlays/prod", "overlays/prod-monitoring")
MONITORED = "overlays/prod-monitoring"
"""prod plus k8s/components/monitoring: the one render with Prometheus Operator objects (they need its CRDs)."""
OPERATOR_API = "monitoring.coreos.com/v1"
SERVING_NAMESPACE = "cloudlulc"
PIPELINE_SETTINGS_KEYS = ("CLOUDLULC_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI", "TRITON_GRPC_URL")
"""The keys pipelines/platform.py maps from the cloudlulc-settings config map into every step."""
SECRET_KEYS = {
    "cloudlulc-s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "cloudlulc-mlflow": {
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_AUTH_ADMIN_USERNAME",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    },
    "cloudlulc-triton": {"TRITON_REPOSITORY_KEY"},
    "cloudlulc-postgres": {"POSTGRES_PASSWORD", "POSTGRES_USER"},
}
"""Secret names and keys the pipelines and manifests reference (docs/deploy.md): fixed, never renamed."""
NON_SECRET_VALUES = {("cloudlulc-postgres", "POSTGRES_USER")}
"""Template entries whose value is an account name, not a credential."""
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
RUN_TO_COMPLETION_KINDS = {"Job", "CronJob"}
"""Their pods serve nothing and end by themselves: no readiness or liveness probe to give."""
FORBIDDEN_VERBS = {"*", "list", "watch", "delete", "deletecollection", "escalate", "bind", "impersonate"}


def kubectl() -> str:
    """The kubectl that renders the kustomizations (it embeds kustomize); its absence is a failure, not a skip."""
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not path:
        pytest.fail(
            "kubectl not found: these tests render k8s/ with `kubectl kustomize` (kustomize is built into kubectl "
            "1.14+); install kubectl or set KUBECTL to its path"
        )
    return path


@functools.cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl kustomize k8s/<target>` emits."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize k8s/{target} failed:\n{result.stderr}")
    objects = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    assert objects, f"k8s/{target} rendered nothing"
    return objects


@pytest.fixture(params=RENDERS)
def objects(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    return render(request.param)


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    matches = [
        obj
        for obj in objects
        if obj["kind"] == kind
        and obj["metadata"]["name"] == name
        and (namespace is None or obj["metadata"].get("namespace") == namespace)
    ]
    assert len(matches) == 1, f"expected one {kind} {name!r} (namespace {namespace}), found {len(matches)}"
    return matches[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload object, else None."""
    if obj["kind"] not in WORKLOAD_KINDS:
        return None
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def workloads(objects: tuple[dict[str, Any], ...]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in objects:
        spec = pod_spec(obj)
        if spec is not None:
            yield obj, spec


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pods_selected(
    objects: tuple[dict[str, Any], ...], namespace: str, selector: dict[str, Any]
) -> list[dict[str, Any]]:
    return [
        obj
        for obj, _ in workloads(objects)
        if obj["metadata"].get("namespace") == namespace and selects(selector, pod_labels(obj))
    ]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def settings(objects: tuple[dict[str, Any], ...], namespace: str = SERVING_NAMESPACE) -> dict[str, str]:
    return find(objects, "ConfigMap", "cloudlulc-settings", namespace)["data"]


def pipeline_namespace(objects: tuple[dict[str, Any], ...]) -> str:
    return find(objects, "ServiceAccount", "cloudlulc-pipeline-runner")["metadata"]["namespace"]


# --- schemas --------------------------------------------------------------------------------------------------


def kubernetes_versions() -> tuple[str, ...]:
    try:
        import kubernetes_validate
    except ImportError:  # pragma: no cover - an environment without the dev dependency
        pytest.fail(
            "kubernetes-validate is not installed: it carries the Kubernetes JSON schemas these tests validate "
            "against offline (a dev dependency: pip install -c constraints.txt -e '.[dev]')"
        )
    return ("1.30", kubernetes_validate.latest_version())


@pytest.mark.parametrize("target", RENDERS)
def test_render_validates_against_the_kubernetes_schemas(target: str):
    import kubernetes_validate

    objects = render(target)
    errors = []
    for version in kubernetes_versions():
        for obj in objects:
            if obj["apiVersion"] == OPERATOR_API:
                continue  # no schema in kubernetes-validate: test_service_monitors_use_known_fields_only
            where = f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version})"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                errors.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(f"{where}: {error.message}")
    assert not errors, "\n".join(errors)


def test_render_holds_the_whole_deployment(objects):
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    expected = {
        ("Namespace", "cloudlulc"),
        ("ConfigMap", "cloudlulc-settings"),
        ("Deployment", "triton"),
        ("Service", "triton"),
        ("Service", "triton-replicas"),
        ("HorizontalPodAutoscaler", "triton"),
        ("PodDisruptionBudget", "triton"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("CronJob", "postgres-backup"),
        ("PersistentVolumeClaim", "postgres-backup"),
        ("ServiceAccount", "cloudlulc-pipeline-runner"),
        ("Role", "cloudlulc-pipeline-runner"),
        ("RoleBinding", "cloudlulc-pipeline-runner"),
        ("NetworkPolicy", "default-deny"),
    }
    assert expected <= kinds, f"missing: {sorted(expected - kinds)}"
    assert ("ConfigMap", "cloudlulc-deploy-params") not in kinds, "the local-config parameters leaked into the output"
    assert not [obj for obj in objects if obj["kind"] == "Secret"], "secrets are created from k8s/secrets, not rendered"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace"), f"{obj['kind']}/{obj['metadata']['name']} has no namespace"
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "cloudlulc", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "kustomize", obj["metadata"]["name"]


# --- containers -----------------------------------------------------------------------------------------------


def test_every_container_is_pinned_bounded_and_locked_down(objects):
    seen = 0
    for obj, spec in workloads(objects):
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        pod_security = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False, f"{name}: mounts an API token it does not use"
        assert spec.get("serviceAccountName") not in (None, "default"), f"{name}: runs as the default account"
        for container in containers(spec):
            seen += 1
            where = f"{name} container {container['name']}"
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert "/" not in tag and repository and tag and tag != "latest", f"{where}: image {image!r} not pinned"
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in container.get("resources", {}).get(bound, {}), f"{where}: no {bound}.{resource}"
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, f"{where}: may run as root"
            assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0, f"{where}: runs as UID 0"
            assert security.get("privileged", False) is False, f"{where}: privileged"
            assert security.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed"
            assert security.get("readOnlyRootFilesystem") is True, f"{where}: writable root filesystem"
            assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities not dropped"
            assert not security.get("capabilities", {}).get("add"), f"{where}: adds capabilities"
            seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", f"{where}: no RuntimeDefault seccomp profile"
            if obj["kind"] not in RUN_TO_COMPLETION_KINDS:
                for probe in ("readinessProbe", "livenessProbe"):
                    assert probe in container, f"{where}: no {probe}"
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
    assert seen >= 3, "expected the Triton, MLflow and PostgreSQL containers"


def test_cloudlulc_images_carry_the_package_version(objects):
    images = [
        c["image"] for _, spec in workloads(objects) for c in containers(spec) if "ghcr.io/cloudlulc/" in c["image"]
    ]
    assert images, "the MLflow server runs the CloudLULC CPU image"
    for image in images:
        assert image.rpartition(":")[2] == cloudlulc.__version__, f"{image}: tag is not {cloudlulc.__version__}"


# --- Triton -----------------------------------------------------------------------------------------------------


def test_triton_serves_with_explicit_model_control_and_a_restricted_repository_api(objects):
    deployment = find(objects, "Deployment", "triton", SERVING_NAMESPACE)
    spec = deployment["spec"]["template"]["spec"]
    (server,) = spec["containers"]
    assert server["image"].startswith("nvcr.io/nvidia/tritonserver:") and server["image"].endswith("-py3")
    assert "command" not in server, "the image's entrypoint (CUDA compatibility setup) must run"
    args = server["args"]
    assert args[0] == "tritonserver"
    assert "--model-control-mode=explicit" in args
    assert "--load-model=*" in args, "a restarted or added replica must load what the repository holds"
    assert "--model-repository=$(TRITON_MODEL_REPOSITORY)" in args
    assert "--disable-auto-complete-config" in args, "configs come from triton_models/, never auto-completed"
    restricted = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in args if "-restricted-" in arg}
    assert set(restricted) == {"--grpc-restricted-protocol", "--http-restricted-api"}
    for value in restricted.values():
        apis, _, header = value.partition(":")
        assert {"model-repository", "model-config"} <= set(apis.split(","))
        assert not {"health", "inference", "metadata"} & set(apis.split(",")), "probes and clients must stay open"
        assert header == "admin-key=$(TRITON_REPOSITORY_KEY)"
    env = env_of(server)
    assert env["TRITON_REPOSITORY_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "cloudlulc-triton",
        "key": "TRITON_REPOSITORY_KEY",
    }
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "cloudlulc-s3"
    assert "AWS_DEFAULT_REGION" in env
    ports = {port["containerPort"]: port["name"] for port in server["ports"]}
    assert ports == {8000: "http", 8001: "grpc", 8002: "metrics"}
    for flag, port in (("--http-port", 8000), ("--grpc-port", 8001), ("--metrics-port", 8002)):
        assert f"{flag}={port}" in args
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/models/cloudlulc/ready", "model, not server, readiness"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert spec["nodeSelector"], "Triton must land on GPU nodes"
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert "/tmp" in {mount["mountPath"] for mount in server["volumeMounts"]}, "S3 repository copy needs /tmp"
    assert "replicas" not in deployment["spec"], "the autoscaler owns Triton's replica count"


def test_triton_model_repository_agrees_with_the_s3_settings(objects):
    data = settings(objects)
    triton_uri = urlsplit(data["TRITON_MODEL_REPOSITORY"])
    assert triton_uri.scheme == "s3"
    # Triton's form: s3://[http(s)://]host:port/bucket/path, the endpoint inside the URI
    location = data["TRITON_MODEL_REPOSITORY"].removeprefix("s3://")
    scheme, _, rest = location.rpartition("://")
    endpoint = urlsplit(data["CLOUDLULC_S3_ENDPOINT_URL"])
    host, _, path = rest.partition("/")
    assert (scheme or "http") == endpoint.scheme, "Triton and the library must use the same scheme"
    assert host.split(":")[0] == endpoint.hostname
    assert int(host.split(":")[1]) == (endpoint.port or {"http": 80, "https": 443}[endpoint.scheme])
    assert f"s3://{path}" == data["CLOUDLULC_MODEL_REPOSITORY"], "Triton must serve the repository promote writes"
    assert data["CLOUDLULC_MODEL_REPOSITORY"].startswith(f"s3://{data['CLOUDLULC_BUCKET']}/")
    assert data["MLFLOW_S3_ENDPOINT_URL"] == data["CLOUDLULC_S3_ENDPOINT_URL"]


def test_tensorrt_of_the_cuda_image_is_the_one_triton_serves_with(objects):
    triton = find(objects, "Deployment", "triton", SERVING_NAMESPACE)
    served = triton["metadata"]["annotations"]["cloudlulc.io/tensorrt-version"]
    pins = re.findall(r"^ARG TENSORRT_VERSION=(\S+)$", (REPO / "components/Dockerfile.cuda").read_text(), re.M)
    assert pins, "components/Dockerfile.cuda pins tensorrt with ARG TENSORRT_VERSION"
    assert set(pins) == {served}, f"Dockerfile.cuda pins {pins}, Triton's image has TensorRT {served}"


def mlflow_server(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    deployment = find(objects, "Deployment", "mlflow", SERVING_NAMESPACE)
    (server,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    return server


def server_args(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.removeprefix("--").partition("=")[::2] for arg in container["args"])


def test_mlflow_serves_artifacts_from_postgresql_without_a_password_in_its_arguments(objects):
    server = mlflow_server(objects)
    assert server["command"] == ["mlflow", "server"]
    args = dict(arg.removeprefix("--").partition("=")[::2] for arg in server["args"])
    store = urlsplit(args["backend-store-uri"])
    assert store.scheme == "postgresql+psycopg" and store.password is None, "the password comes as PGPASSWORD"
    assert store.hostname == "postgres.cloudlulc.svc" and store.port == 5432
    env = env_of(server)
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "cloudlulc-postgres", "key": "POSTGRES_PASSWORD"}
    assert args["artifacts-destination"] == "$(MLFLOW_ARTIFACTS_DESTINATION)" and "serve-artifacts" in args
    assert "MLFLOW_S3_ENDPOINT_URL" in env
    allowed = args["allowed-hosts"].split(",")
    assert "mlflow.cloudlulc.svc:5000" in allowed, "MLflow 3.5+ refuses the Host header of its own service otherwise"
    assert "*" not in allowed
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["path"] == "/health", "the one path exempt from the Host check"


def test_mlflow_requires_basic_auth_with_the_tested_settings(objects):
    """The settings tests/test_mlflow_auth.py runs a real server with are the ones the pods mount."""
    deployment = find(objects, "Deployment", "mlflow", SERVING_NAMESPACE)
    spec = deployment["spec"]["template"]["spec"]
    server = mlflow_server(objects)
    args = server_args(server)
    assert args["app-name"] == "basic-auth"
    env = env_of(server)
    config_path = env["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    folder, _, key = config_path.rpartition("/")
    (mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == folder]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    config_map = find(objects, "ConfigMap", volume["configMap"]["name"], SERVING_NAMESPACE)
    assert config_map["metadata"]["name"].startswith("mlflow-auth-"), "generated: a content hash rolls the pods"
    text = config_map["data"][key]
    assert text == (K8S / "base" / "mlflow" / "basic_auth.ini").read_text(), "tests/test_mlflow_auth.py's file"
    auth = configparser.ConfigParser()
    auth.read_string(text)
    assert auth["mlflow"]["default_permission"] == "READ", "only grants (EDIT, MANAGE) may move aliases"
    assert "admin_password" not in auth["mlflow"], "the admin password comes from the secret"
    auth_store, store = urlsplit(auth["mlflow"]["database_uri"]), urlsplit(args["backend-store-uri"])
    assert auth_store.username is None and auth_store.password is None, "libpq takes PGUSER and PGPASSWORD"
    assert (auth_store.scheme, auth_store.hostname, auth_store.port, auth_store.path) == (
        store.scheme,
        store.hostname,
        store.port,
        store.path,
    ), "one database: a backup holds the models and who may move their aliases together"
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == {"name": "cloudlulc-postgres", "key": "POSTGRES_USER"}
    for variable in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "cloudlulc-mlflow", "key": variable}
    assert not {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} & set(env), "the server needs no client login"


# --- database backup ------------------------------------------------------------------------------------------------


def backup_job(objects: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(CronJob, its pod spec, its container)."""
    cron = find(objects, "CronJob", "postgres-backup", SERVING_NAMESPACE)
    spec = pod_spec(cron)
    (container,) = spec["containers"]
    return cron, spec, container


def test_database_backup_dumps_the_mlflow_database_nightly_onto_its_volume(objects):
    cron, spec, container = backup_job(objects)
    assert len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid", "never two dumps at once"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 0
    assert spec["restartPolicy"] == "Never"
    statefulset = find(objects, "StatefulSet", "postgres", SERVING_NAMESPACE)
    (database,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == database["image"], "pg_dump of the server's own version"
    env = env_of(container)
    assert env["PGHOST"]["value"] == f"{statefulset['spec']['serviceName']}.{SERVING_NAMESPACE}.svc"
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == {"name": "cloudlulc-postgres", "key": "POSTGRES_USER"}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "cloudlulc-postgres", "key": "POSTGRES_PASSWORD"}
    assert int(env["RETENTION_DAYS"]["value"]) >= 7
    (script,) = container["args"]
    assert f"--dbname={env_of(database)['POSTGRES_DB']['value']}" in script, "the database MLflow uses"
    assert "--format=custom" in script, "compressed, restorable with pg_restore"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    (volume,) = [v for v in spec["volumes"] if v["name"] == mounts["/backup"]]
    find(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], SERVING_NAMESPACE)
    policies = [obj for obj in objects if obj["kind"] == "NetworkPolicy"]
    egress_to_database = [
        rule
        for policy in policies
        if "Egress" in policy["spec"]["policyTypes"] and selects(policy["spec"]["podSelector"], pod_labels(cron))
        for rule in policy["spec"].get("egress", [])
        if {"port": 5432, "protocol": "TCP"} in rule.get("ports", [])
        and any(selects(peer.get("podSelector", {}), pod_labels(statefulset)) for peer in rule["to"])
    ]
    assert egress_to_database, "the backup job may not reach the database"


@pytest.mark.parametrize("dump_fails", [False, True])
def test_backup_script_keeps_the_retention_and_never_prunes_after_a_failed_dump(tmp_path: Path, dump_fails: bool):
    """The CronJob's script itself, with stand-ins for pg_dump and pg_restore and a folder for the volume."""
    _, _, container = backup_job(render("base"))
    (script,) = container["args"]
    backups, tools = tmp_path / "backup", tmp_path / "bin"
    backups.mkdir()
    tools.mkdir()
    dump = 'for a in "$@"; do case $a in --file=*) printf dump > "${a#--file=}";; esac; done\n'
    (tools / "pg_dump").write_text("#!/bin/sh\n" + ("exit 1\n" if dump_fails else dump))
    (tools / "pg_restore").write_text('#!/bin/sh\ntest -s "$2"\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    day = 24 * 3600
    now = time.time()
    ages = {"mlflow-20200101T021700Z.dump": 20 * day, "mlflow-20200120T021700Z.dump": day}
    ages["mlflow-20200101T021700Z.dump.partial"] = 3 * 3600  # left by a killed job
    for name, age in ages.items():
        (backups / name).write_text("old")
        os.utime(backups / name, (now - age, now - age))
    result = subprocess.run(
        ["sh", "-c", script.replace("/backup", str(backups))],
        env={
            **os.environ,
            "PATH": f"{tools}:{os.environ['PATH']}",
            "RETENTION_DAYS": env_of(container)["RETENTION_DAYS"]["value"],
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    left = sorted(path.name for path in backups.iterdir())
    if dump_fails:
        assert result.returncode != 0
        assert "mlflow-20200101T021700Z.dump" in left, "a failed dump must not prune the old ones"
        assert not [name for name in left if name not in ages], "no new file from a failed dump"
    else:
        assert result.returncode == 0, result.stderr
        new = [name for name in left if name not in ages]
        assert len(new) == 1 and re.fullmatch(r"mlflow-\d{8}T\d{6}Z\.dump", new[0]), left
        assert (backups / new[0]).read_text() == "dump"
        assert "mlflow-20200120T021700Z.dump" in left, "within the retention"
        assert "mlflow-20200101T021700Z.dump" not in left, "past the retention"
        assert "mlflow-20200101T021700Z.dump.partial" not in left


# --- Prometheus Operator monitors -------------------------------------------------------------------------------------

SERVICE_MONITOR_FIELDS = {
    "spec": {"selector", "endpoints", "namespaceSelector", "jobLabel"},
    "endpoint": {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels"},
}
"""Fields of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) these monitors may use."""


def test_only_the_monitored_overlay_needs_the_operator_crds():
    for target in RENDERS:
        operator_objects = [obj for obj in render(target) if obj["apiVersion"] == OPERATOR_API]
        if target == MONITORED:
            assert {(o["kind"], o["metadata"]["name"]) for o in operator_objects} == {
                ("ServiceMonitor", "triton"),
                ("ServiceMonitor", "mlflow"),
            }
        else:
            assert not operator_objects, f"k8s/{target} would not apply on a cluster without the operator's CRDs"


def test_service_monitors_use_known_fields_only():
    for monitor in [obj for obj in render(MONITORED) if obj["apiVersion"] == OPERATOR_API]:
        name = monitor["metadata"]["name"]
        assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}, name
        assert set(monitor["spec"]) <= SERVICE_MONITOR_FIELDS["spec"], name
        assert set(monitor["spec"]["selector"]) <= {"matchLabels", "matchExpressions"}, name
        assert monitor["spec"]["endpoints"], name
        for endpoint in monitor["spec"]["endpoints"]:
            assert set(endpoint) <= SERVICE_MONITOR_FIELDS["endpoint"], f"{name}: {endpoint}"
            for duration in ("interval", "scrapeTimeout"):
                assert re.fullmatch(r"\d+[smh]", endpoint.get(duration, "1s")), f"{name}: {duration}"


def scraped_container_ports(objects: tuple[dict[str, Any], ...], monitor: dict[str, Any]) -> list[int]:
    """The container ports a ServiceMonitor's endpoints reach, through the Services it selects."""
    namespace = monitor["metadata"]["namespace"]
    reached = []
    for endpoint in monitor["spec"]["endpoints"]:
        for service in [obj for obj in objects if obj["kind"] == "Service"]:
            labels = service["metadata"].get("labels", {})
            if service["metadata"]["namespace"] != namespace or not selects(monitor["spec"]["selector"], labels):
                continue
            for port in service["spec"]["ports"]:
                if port["name"] != endpoint["port"]:
                    continue
                for workload in pods_selected(objects, namespace, {"matchLabels": service["spec"]["selector"]}):
                    for container in pod_spec(workload)["containers"]:
                        for container_port in container.get("ports", []):
                            if port["targetPort"] in (container_port["name"], container_port["containerPort"]):
                                reached.append(container_port["containerPort"])
    return reached


def test_monitors_scrape_triton_and_the_mlflow_metrics_sidecar():
    objects = render(MONITORED)
    triton = find(objects, "ServiceMonitor", "triton", SERVING_NAMESPACE)
    assert scraped_container_ports(objects, triton) == [8002], "once per replica: not through triton-replicas too"
    assert (
        "--metrics-port=8002"
        in find(objects, "Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    mlflow = find(objects, "ServiceMonitor", "mlflow", SERVING_NAMESPACE)
    assert scraped_container_ports(objects, mlflow) == [9090], "the sidecar, not the authenticated API"
    spec = find(objects, "Deployment", "mlflow", SERVING_NAMESPACE)["spec"]["template"]["spec"]
    (sidecar,) = [c for c in spec["containers"] if c["name"] != "mlflow"]
    server = mlflow_server(objects)
    folder = server_args(server)["expose-prometheus"]
    volumes = {c["name"]: {m["name"] for m in c["volumeMounts"] if m["mountPath"] == folder} for c in (server, sidecar)}
    assert volumes[server["name"]] and volumes[server["name"]] == volumes[sidecar["name"]], "one shared folder"
    (volume,) = volumes[server["name"]]
    assert "emptyDir" in {key for v in spec["volumes"] if v["name"] == volume for key in v}
    assert f'path="{folder}"' in sidecar["args"][0] and "9090" in sidecar["args"][0]
    assert sidecar["image"] == server["image"], "the MLflow image carries prometheus_client"
    for target in ("base", "overlays/dev", "overlays/prod"):
        assert "expose-prometheus" not in server_args(mlflow_server(render(target))), "only with its sidecar"


def test_autoscaler_targets_the_triton_deployment(objects):
    hpa = find(objects, "HorizontalPodAutoscaler", "triton", SERVING_NAMESPACE)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    deployment = find(objects, "Deployment", target["name"], hpa["metadata"]["namespace"])
    assert deployment["metadata"]["name"] == "triton"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    if metric["resource"]["target"]["type"] == "Utilization":
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "cpu" in container["resources"]["requests"], "utilization is relative to the CPU request"


def test_disruption_budgets_cover_running_pods(objects):
    budgets = [obj for obj in objects if obj["kind"] == "PodDisruptionBudget"]
    assert {pdb["metadata"]["name"] for pdb in budgets} >= {"triton", "mlflow"}
    for pdb in budgets:
        assert pods_selected(objects, pdb["metadata"]["namespace"], pdb["spec"]["selector"]), pdb["metadata"]["name"]
        assert "minAvailable" not in pdb["spec"], "a minAvailable budget blocks drains of a single replica"


# --- services and network policies ------------------------------------------------------------------------------


def test_services_select_pods_and_their_ports(objects):
    services = [obj for obj in objects if obj["kind"] == "Service"]
    assert len(services) >= 4
    for service in services:
        name = service["metadata"]["name"]
        selected = pods_selected(
            objects, service["metadata"]["namespace"], {"matchLabels": service["spec"]["selector"]}
        )
        assert selected, f"Service {name} selects no pod"
        for workload in selected:
            ports = {p["name"]: p["containerPort"] for c in pod_spec(workload)["containers"] for p in c["ports"]}
            for port in service["spec"]["ports"]:
                target = port["targetPort"]
                assert target in ports or target in ports.values(), f"Service {name}: no container port {target}"
    statefulset = find(objects, "StatefulSet", "postgres", SERVING_NAMESPACE)
    governing = find(objects, "Service", statefulset["spec"]["serviceName"], SERVING_NAMESPACE)
    assert governing["spec"]["clusterIP"] == "None"


def test_settings_point_at_services_that_exist(objects):
    for namespace in (SERVING_NAMESPACE, pipeline_namespace(objects)):
        data = settings(objects, namespace)
        assert set(PIPELINE_SETTINGS_KEYS) <= set(data)
        assert not [key for key, value in data.items() if value == "set-by-deploy-params"], "parameters not applied"
    assert settings(objects) == settings(objects, pipeline_namespace(objects)), "the two copies drifted apart"
    data = settings(objects)
    services = {
        (obj["metadata"]["name"], obj["metadata"]["namespace"]): {p["port"] for p in obj["spec"]["ports"]}
        for obj in objects
        if obj["kind"] == "Service"
    }
    mlflow = urlsplit(data["MLFLOW_TRACKING_URI"])
    endpoints = [f"{mlflow.hostname}:{mlflow.port}", data["TRITON_GRPC_URL"], data["TRITON_GRPC_REPLICAS"]]
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        name, namespace, svc = host.split(".")
        assert svc == "svc" and int(port) in services[name, namespace], f"{endpoint} is no rendered service port"


def test_environment_references_resolve(objects):
    for obj, spec in workloads(objects):
        namespace = obj["metadata"]["namespace"]
        for container in containers(spec):
            for item in container.get("env", []):
                source = item.get("valueFrom", {})
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    data = find(objects, "ConfigMap", ref["name"], namespace)["data"]
                    assert ref["key"] in data, f"{obj['metadata']['name']}: config map key {ref['key']} missing"
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    assert ref["key"] in SECRET_KEYS.get(ref["name"], set()), f"unknown secret key {ref}"
                    assert ref["key"] in template_entries(ref["name"]), f"{ref} missing from its .env.example"


def test_network_policies_select_pods_that_exist(objects):
    policies = [obj for obj in objects if obj["kind"] == "NetworkPolicy"]
    assert policies
    pipeline = pipeline_namespace(objects)
    deny = find(objects, "NetworkPolicy", "default-deny", SERVING_NAMESPACE)
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for policy in policies:
        namespace, name = policy["metadata"]["namespace"], policy["metadata"]["name"]
        assert pods_selected(objects, namespace, policy["spec"]["podSelector"]), f"NetworkPolicy {name} selects no pod"
        for rule in [*policy["spec"].get("ingress", []), *policy["spec"].get("egress", [])]:
            for peer in rule.get("from", rule.get("to", [])):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert pods_selected(objects, namespace, peer["podSelector"]), f"{name}: peer selects no pod"
                for expression in peer.get("namespaceSelector", {}).get("matchExpressions", []):
                    assert expression["key"] == "kubernetes.io/metadata.name"
    ingress = {
        policy["metadata"]["name"]: policy["spec"]["ingress"]
        for policy in policies
        if "Ingress" in policy["spec"]["policyTypes"] and "ingress" in policy["spec"]
    }
    namespaces = {
        name: {
            value
            for rule in rules
            for peer in rule["from"]
            for e in peer.get("namespaceSelector", {}).get("matchExpressions", [])
            for value in e["values"]
        }
        for name, rules in ingress.items()
    }
    assert pipeline in namespaces["triton-ingress"] and pipeline in namespaces["mlflow-ingress"]
    postgres_peers = [peer for rule in ingress["postgres-ingress"] for peer in rule["from"]]
    assert postgres_peers == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}} for name in ("mlflow", "postgres-backup")
    ]
    monitoring = find(objects, "NetworkPolicy", "triton-ingress")["spec"]["ingress"][1]
    (mlflow_metrics,) = [
        rule for rule in ingress["mlflow-ingress"] if rule["ports"] == [{"port": 9090, "protocol": "TCP"}]
    ]
    assert mlflow_metrics["from"] == monitoring["from"], "MLflow's metrics port is for the monitoring namespace only"


# --- RBAC ---------------------------------------------------------------------------------------------------------


def test_pipeline_runner_role_is_least_privilege(objects):
    assert not [obj for obj in objects if obj["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    namespace = pipeline_namespace(objects)
    assert namespace != SERVING_NAMESPACE
    role = find(objects, "Role", "cloudlulc-pipeline-runner", namespace)
    assert role["rules"]
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard {field} in {rule}"
        assert not set(rule["verbs"]) & FORBIDDEN_VERBS, f"{rule} grants {set(rule['verbs']) & FORBIDDEN_VERBS}"
        if {"secrets", "configmaps"} & set(rule["resources"]):
            assert rule.get("resourceNames"), f"{rule}: secrets and config maps only by name"
            assert rule["verbs"] == ["get"]
    binding = find(objects, "RoleBinding", "cloudlulc-pipeline-runner", namespace)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "cloudlulc-pipeline-runner",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cloudlulc-pipeline-runner", "namespace": namespace}
    ]
    find(objects, "ConfigMap", "cloudlulc-settings", namespace)  # the steps' settings beside their account


# --- secret templates ---------------------------------------------------------------------------------------------


@functools.cache
def template_entries(name: str) -> dict[str, str]:
    path = K8S / "secrets" / f"{name}.env.example"
    assert path.exists(), f"{path} missing"
    entries = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, separator, value = line.partition("=")
            assert separator, f"{path}: {line!r} is not KEY=value"
            entries[key.strip()] = value.strip()
    return entries


@pytest.mark.parametrize("name", sorted(SECRET_KEYS))
def test_secret_templates_hold_placeholders_only(name: str):
    entries = template_entries(name)
    assert set(entries) == SECRET_KEYS[name]
    for key, value in entries.items():
        assert not re.search(r"(AKIA|ASIA)[A-Z0-9]{16}", value), f"{name}.{key} looks like a real AWS key"
        if (name, key) in NON_SECRET_VALUES:
            assert re.fullmatch(r"[a-z_][a-z0-9_]*", value), f"{name}.{key}: an account name"
        else:
            assert value.startswith("change-me"), f"{name}.{key} must be a change-me placeholder, not {value!r}"
    real = (K8S / "secrets" / f"{name}.env").relative_to(REPO)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(real)], cwd=REPO, check=False)
    assert ignored.returncode == 0, f"{real} (real secrets) must be gitignored"


def test_no_secret_values_in_manifests():
    for path in K8S.rglob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"^kind:\s*Secret\b", text, re.M), f"{path}: secrets come from k8s/secrets/*.env"
        assert not re.search(r"(AKIA|ASIA)[A-Z0-9]{16}", text), f"{path}: looks like an AWS key"


# --- images and the shared install --------------------------------------------------------------------------------


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """(INSTRUCTION, arguments) per build stage, continuation lines joined and comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    logical = ""
    for line in path.read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip().removesuffix("\\") + " "
        if line.rstrip().endswith("\\"):
            continue
        instruction, _, arguments = logical.strip().partition(" ")
        logical = ""
        if instruction.upper() == "FROM":
            stages.append([])
        elif not stages:
            continue
        stages[-1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


@pytest.mark.parametrize(("dockerfile", "profile"), [("Dockerfile", "cpu"), ("Dockerfile.cuda", "cuda")])
def test_images_run_the_shared_install_in_a_slim_non_root_runtime(dockerfile: str, profile: str):
    builder, runtime = dockerfile_stages(REPO / "components" / dockerfile)
    bases = {builder[0][1].split()[0], runtime[0][1].split()[0]}
    (base,) = bases
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), f"{base}: python 3.11 slim, pinned to a patch release"
    runs = [arguments for instruction, arguments in builder if instruction == "RUN"]
    assert any(re.search(rf"sh components/install\.sh /opt/venv {profile}$", run) for run in runs), runs
    instructions = [instruction for instruction, _ in runtime]
    assert "ENTRYPOINT" not in instructions and "CMD" not in instructions, "Kubeflow gives each step its command"
    assert ("HEALTHCHECK", "NONE") in runtime
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime
    assert not [run for instruction, run in runtime if instruction == "RUN" and "apt-get" in run], "no compiler at run"
    (user,) = [arguments for instruction, arguments in runtime if instruction == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"USER {user}: numeric and non-root"
    env = " ".join(arguments for instruction, arguments in runtime if instruction == "ENV")
    for setting in ("MLFLOW_DISABLE_TELEMETRY=true", "DVC_NO_ANALYTICS=1", "GX_ANALYTICS_ENABLED=false"):
        assert setting in env
    assert ("ARG", f"VERSION={cloudlulc.__version__}") in runtime
    labels = " ".join(arguments for instruction, arguments in runtime if instruction == "LABEL")
    for label in ("title", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels


def test_makefile_installs_through_the_shared_script_and_lints_the_deployment():
    makefile = (REPO / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\):.*\n((?:\t.*\n)+)", makefile, re.M)
    assert stamp, "the $(STAMP) rule"
    assert "sh components/install.sh $(VENV) dev" in stamp.group(1)
    assert 'grep -v "^WARNING: Location"' in stamp.group(1)
    assert "import cloudlulc, torch" in stamp.group(1), "the post-install import check stays"
    lint = re.search(r"^lint-deploy:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert lint and "k8s/lint.sh" in lint.group(1)


@pytest.mark.parametrize(
    ("arguments", "environment", "message"),
    [(["gpu"], {}, "unknown profile 'gpu'"), (["cuda"], {"TENSORRT_VERSION": ""}, "needs TENSORRT_VERSION")],
)
def test_install_script_refuses_bad_requests_before_installing(tmp_path, arguments, environment, message):
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["sh", str(REPO / "components/install.sh"), str(venv), *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        check=False,
        timeout=60,
    )
    assert result.returncode == 2 and message in result.stderr
    assert not venv.exists()


def test_build_context_is_an_allow_list():
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "cloudlulc", "components", "pipelines"}
