"""dvc.yaml runs the real CLI: every stage command, with params substituted as DVC does, succeeds."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _substitute(command: str, params: dict) -> str:
    def value(match: re.Match[str]) -> str:
        node = params
        for key in match.group(1).split("."):
            node = node[key]
        return str(node)

    return re.sub(r"\$\{([\w.]+)\}", value, command)


def test_dvc_stages_run_in_order_on_small_params(tmp_path: Path):
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert list(stages) == ["synth", "validate"]
    params["synth"].update(n=10, size=48, workers=1)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GX_ANALYTICS_ENABLED": "false"}
    for name, stage in stages.items():
        assert set(stage.get("params", [])) <= set(params), f"stage {name} names unknown params"
        command = shlex.split(_substitute(stage["cmd"], params))
        assert command[0] == "cloudlulc"
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"stage {name}: {result.stderr}"
        for out in stage["outs"]:
            assert (tmp_path / out).exists(), f"stage {name} did not write {out}"
        for dep in stage.get("deps", []):
            assert (tmp_path / dep).exists()
