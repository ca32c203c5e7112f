"""Packages import their names on first use: every exported name resolves, and the CLI starts light."""

import importlib
import subprocess
import sys

import pytest

LAZY_PACKAGES = ["cloudlulc.data", "cloudlulc.export", "cloudlulc.ingest", "cloudlulc.serving", "cloudlulc.tracking"]
HEAVY = ["torch", "mlflow", "onnxruntime", "tritonclient", "great_expectations", "pystac_client"]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_resolves_and_an_unknown_one_is_an_attribute_error(package: str):
    module = importlib.import_module(package)
    resolved = {name: getattr(module, name) for name in module.__all__}  # an AttributeError names a wrong home
    assert all(value is not None for value in resolved.values())
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018


def test_the_cli_and_its_help_start_without_torch_mlflow_or_the_serving_clients():
    probe = "import sys, cloudlulc.cli; print(' '.join(m for m in sys.argv[1:] if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe, *HEAVY], capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == [], f"imported when the CLI starts: {loaded.stdout}"
    helped = subprocess.run(
        [sys.executable, "-m", "cloudlulc", "--help"], capture_output=True, text=True, check=True, timeout=120
    )
    assert "map" in helped.stdout and "export" in helped.stdout
