"""The deployed registry's guard, on a real server: `mlflow server --app-name basic-auth` on loopback, started with
the basic_auth.ini the cluster's config map is generated from (k8s/base/mlflow/basic_auth.ini), only the database
swapped for SQLite. As in the cluster, the tracking store and the auth store share one database.

Who may move `champion`: nobody without credentials (401), not a user without a grant (default READ: 403), the
pipeline-runner user with EDIT on the registered model (docs/deploy.md, roles) through the same
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD the pipeline steps get from the cloudlulc-mlflow secret.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import requests
from servers import running_mlflow_server

from cloudlulc.tracking.registry import CHAMPION

REPO = Path(__file__).resolve().parents[1]
AUTH_INI = REPO / "k8s" / "base" / "mlflow" / "basic_auth.ini"
MODEL = "cloudlulc"
ADMIN = ("admin-test", "admin-test-password-1")
RUNNER = ("pipeline-runner", "runner-test-password-1")
READER = ("reader", "reader-test-password-1")
ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"


class AuthServer(NamedTuple):
    url: str
    folder: Path


def deployed_auth_config() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    assert config.read(AUTH_INI), f"{AUTH_INI} missing"
    return config


def deployed_settings() -> dict[str, str]:
    """The MLflow settings the Deployment gives the server as plain values (secrets and the config map aside)."""
    import yaml

    documents = yaml.safe_load_all((REPO / "k8s" / "base" / "mlflow" / "deployment.yaml").read_text())
    (deployment,) = [d for d in documents if d and d.get("kind") == "Deployment"]
    (server,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    return {e["name"]: e["value"] for e in server["env"] if "value" in e and e["name"].startswith("MLFLOW_")}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    from conftest import free_port

    try:
        import flask_wtf  # noqa: F401
    except ImportError:  # a failure, not a skip: the cluster's MLflow image would not start either
        pytest.fail(
            "Flask-WTF is not installed: `mlflow server --app-name basic-auth` refuses to start without it "
            "(mlflow[auth]); the server extra of pyproject.toml must pull it in for the MLflow image"
        )
    folder = tmp_path_factory.mktemp("mlflow-auth")
    database = f"sqlite:///{folder / 'mlflow.db'}"
    config = deployed_auth_config()
    config["mlflow"]["database_uri"] = database  # the only change: SQLite for the cluster's PostgreSQL
    ini = folder / "basic_auth.ini"
    with ini.open("w") as handle:
        config.write(handle)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    env.update(deployed_settings())
    # What the Deployment takes from the cloudlulc-mlflow secret and the config map.
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_AUTH_ADMIN_USERNAME=ADMIN[0],
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY="test-secret-key",
    )
    with running_mlflow_server(folder, free_port(), database, "--app-name", "basic-auth", env=env, timeout_s=90) as url:
        yield AuthServer(url, folder)


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch):
    """Point MLflow's clients at a user the way the pipeline steps are (environment variables)."""

    def login(user: tuple[str, str]) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user[1])

    return login


@pytest.fixture(scope="module")
def registry(auth_server: AuthServer) -> dict[str, str]:
    """The admin's setup of docs/deploy.md: the experiment and the registered model made by the admin, the runner
    with EDIT on both, a reader without grants; two versions, `champion` on 1. Returns {alias: version}."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = ADMIN
    try:
        auth = get_app_client("basic-auth", tracking_uri=auth_server.url)
        auth.create_user(*RUNNER)
        auth.create_user(*READER)
        client = MlflowClient(tracking_uri=auth_server.url, registry_uri=auth_server.url)
        experiment = client.create_experiment(MODEL)
        client.create_registered_model(MODEL)
        for _ in range(2):
            run = client.create_run(experiment)
            client.create_model_version(MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias(MODEL, CHAMPION, "1")
        # EDIT is enough to log runs, add versions and move aliases (docs/deploy.md); MANAGE would add deletes
        # and granting others.
        auth.grant_user_permission(RUNNER[0], "experiment", experiment, "EDIT")
        auth.grant_user_permission(RUNNER[0], "registered_model", MODEL, "EDIT")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {CHAMPION: "1"}


def champion_version(url: str) -> str:
    response = requests.get(
        f"{url}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL, "alias": CHAMPION},
        auth=ADMIN,
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["model_version"]["version"]


def test_the_mlflow_image_installs_what_the_server_flags_need():
    """The MLflow pods run the CPU image, which installs the `server` extra: `--app-name basic-auth` refuses to start
    without Flask-WTF (mlflow[auth]), `--expose-prometheus` and the metrics sidecar (k8s/components/monitoring)
    without prometheus-flask-exporter (which brings prometheus_client)."""
    import tomllib

    from packaging.requirements import Requirement

    server = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["server"]
    requirements = [Requirement(line) for line in server]
    names = {r.name.lower().replace("_", "-") for r in requirements}
    auth = "flask-wtf" in names or any(r.name == "mlflow" and "auth" in r.extras for r in requirements)
    assert auth, "the server extra must bring Flask-WTF (mlflow[auth]) for --app-name basic-auth"
    assert "prometheus-flask-exporter" in names, "the server extra must bring prometheus-flask-exporter"


def test_the_deployed_config_reads_only_by_default():
    section = deployed_auth_config()["mlflow"]
    assert section["default_permission"] == "READ", "users without a grant must not move aliases"
    assert section["authorization_function"] == "mlflow.server.auth:authenticate_request_basic_auth"
    assert "admin_password" not in section and "admin_username" not in section, "the admin comes from the secret"


def test_without_credentials_champion_cannot_move(auth_server: AuthServer, registry: dict[str, str]):
    body = {"name": MODEL, "alias": CHAMPION, "version": "2"}
    assert requests.post(f"{auth_server.url}{ALIAS_PATH}", json=body, timeout=10).status_code == 401
    wrong = requests.post(f"{auth_server.url}{ALIAS_PATH}", json=body, auth=(RUNNER[0], "not-it"), timeout=10)
    assert wrong.status_code == 401
    assert requests.get(f"{auth_server.url}/health", timeout=10).status_code == 200, "the probes' path stays open"
    assert champion_version(auth_server.url) == registry[CHAMPION]


def test_a_reader_sees_the_registry_but_cannot_move_champion(
    auth_server: AuthServer, registry: dict[str, str], as_user
):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    as_user(READER)
    client = MlflowClient(tracking_uri=auth_server.url, registry_uri=auth_server.url)
    assert client.get_model_version_by_alias(MODEL, CHAMPION).version == registry[CHAMPION]
    # The server answers 403 with a plain-text body, which MLflow's client raises as an MlflowException.
    with pytest.raises(MlflowException, match="error code 403"):
        client.set_registered_model_alias(MODEL, CHAMPION, "2")
    with pytest.raises(MlflowException, match="error code 403"):
        client.delete_registered_model_alias(MODEL, CHAMPION)
    body = {"name": MODEL, "alias": CHAMPION, "version": "2"}
    assert requests.post(f"{auth_server.url}{ALIAS_PATH}", json=body, auth=READER, timeout=10).status_code == 403
    assert champion_version(auth_server.url) == registry[CHAMPION]


def test_the_pipeline_runner_registers_and_moves_champion(auth_server: AuthServer, registry: dict[str, str], as_user):
    from mlflow import MlflowClient

    as_user(RUNNER)
    client = MlflowClient(tracking_uri=auth_server.url, registry_uri=auth_server.url)
    # What a training step does with EDIT: a run in the experiment, a new version of the model, then the gate's move.
    run = client.create_run(client.get_experiment_by_name(MODEL).experiment_id)
    client.log_metric(run.info.run_id, "miou", 0.5)
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(MODEL, CHAMPION, version.version)
    assert champion_version(auth_server.url) == version.version
    client.set_registered_model_alias(MODEL, CHAMPION, registry[CHAMPION])  # as found, for the other tests
    assert champion_version(auth_server.url) == registry[CHAMPION]


def test_the_deployed_server_starts_no_job_runner(auth_server: AuthServer):
    """CloudLULC runs no MLflow jobs: the server's process group is the launcher and its uvicorn workers only."""
    port = auth_server.url.rsplit(":", 1)[1]
    commands = {
        int(p.name): (p / "cmdline").read_bytes().split(b"\0") for p in Path("/proc").iterdir() if p.name.isdigit()
    }
    (launcher,) = [
        pid for pid, argv in commands.items() if b"server" in argv and port.encode() in argv and b"--app-name" in argv
    ]
    group = [b" ".join(argv).decode() for pid, argv in commands.items() if _group_of(pid) == os.getpgid(launcher)]
    assert group and not [c for c in group if "mlflow.server.jobs" in c], group
    assert deployed_settings()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
