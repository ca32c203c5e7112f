"""The `cloudlulc` command finds the pipeline side through its entry-point group; the library never imports it."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from cloudlulc.cli import cli


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_the_command_and_the_library_start_without_importing_kfp_or_dvc():
    loaded = _python(
        "import sys, cloudlulc.cli, cloudlulc.serving, cloudlulc.mapping, cloudlulc.training\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kfp', 'dvc', 'components'}))"
    )
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stderr[-2000:]


def test_pipelines_and_demo_are_plugged_in_through_the_entry_point_group():
    listed = CliRunner().invoke(cli, ["--help"])
    assert "pipelines" in listed.output and "demo" in listed.output, listed.output
    assert cli.commands["pipelines"].callback.__module__ == "pipelines.cli"  # type: ignore[union-attr]


def test_without_the_pipelines_extra_the_command_names_the_extra_and_exits_2():
    hidden = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'kfp' else real(name, *a)\n"
        "from cloudlulc.cli import main\n"
        "sys.argv = ['cloudlulc', 'pipelines', 'compile']\n"
        "main()\n"
    )
    ran = _python(hidden)
    assert ran.returncode == 2, ran.stderr[-2000:]
    assert "needs the pipelines extra: pip install 'cloudlulc[pipelines]'" in ran.stderr, ran.stderr
    assert "kfp is not installed" in ran.stderr and "Traceback" not in ran.stderr
    listed = _python(hidden.replace("'pipelines', 'compile'", "'--help'"))
    assert listed.returncode == 0 and "validate" in listed.stdout, listed.stderr[-2000:]
