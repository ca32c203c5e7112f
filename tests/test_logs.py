"""Logs you can watch: one setup per process (level and format from flags or env), bars only on a terminal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudlulc import logs
from cloudlulc.errors import UsageError

CLI = str(Path(sys.executable).with_name("cloudlulc"))


@pytest.fixture(autouse=True)
def _logging_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test configures the process's logging: put handlers and levels back for the tests after it."""
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    own = {name: logging.getLogger(name).level for name in logs.OWN_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, own_level in own.items():
        logging.getLogger(name).setLevel(own_level)
    logging.captureWarnings(False)


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, logs._Stderr)]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The console script with stdout and stderr on pipes: no terminal, as in a pod or a CI job."""
    environment = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=environment, timeout=600, check=False)


def test_configure_twice_keeps_one_handler_and_takes_the_new_level():
    logs.configure("info", "plain")
    logs.configure("debug", "json")
    assert len(_ours()) == 1
    assert logging.getLogger("cloudlulc").level == logging.DEBUG
    assert logging.getLogger().level == logging.WARNING, "other libraries stay at warnings"
    assert isinstance(_ours()[0].formatter, logs.JsonFormatter)


def test_other_libraries_show_warnings_only_even_when_they_set_info(capsys: pytest.CaptureFixture[str]):
    logs.configure("debug", "plain")
    chatty = logging.getLogger("chatty_library")
    chatty.setLevel(logging.INFO)  # as Great Expectations does with its own loggers
    chatty.info("created a temporary directory")
    chatty.warning("deprecated option")
    logging.getLogger("cloudlulc.test").debug("ours at debug")
    err = capsys.readouterr().err
    assert "temporary directory" not in err and "warning: deprecated option" in err and "debug: ours at debug" in err


def test_json_lines_parse_with_message_level_logger_and_extra_fields(capsys: pytest.CaptureFixture[str]):
    logs.configure("info", "json")
    logger = logging.getLogger("cloudlulc.test")
    logger.info("epoch %d/%d", 3, 10, extra={"epoch": 3, "val_miou": 0.5, "val_oa": float("nan")})
    logger.debug("not shown at info")
    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception("failed")
    lines = capsys.readouterr().err.splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "epoch 3/10" and first["level"] == "INFO" and first["logger"] == "cloudlulc.test"
    assert first["epoch"] == 3 and first["val_miou"] == 0.5 and first["time"].endswith("+00:00")
    assert first["val_oa"] is None and "NaN" not in lines[0], "strict JSON: an undefined score is null"
    assert second["level"] == "ERROR" and "ValueError: broken" in second["exception"]


def test_plain_lines_keep_the_cli_style_of_warnings(capsys: pytest.CaptureFixture[str]):
    logs.configure()
    logging.getLogger("cloudlulc.test").warning("%s: converted", "a.tif")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(" warning: a.tif: converted") and line[:4].isdigit()


def test_environment_sets_level_and_format(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv(logs.LEVEL_ENV, "warning")
    monkeypatch.setenv(logs.FORMAT_ENV, "json")
    logs.configure()
    logging.getLogger("cloudlulc.test").info("hidden")
    logging.getLogger("cloudlulc.test").warning("shown")
    assert [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()] == ["shown"]
    assert logs.resolve("debug", None) == ("DEBUG", "json"), "an argument wins over the environment"


def test_a_bad_level_or_format_is_a_usage_error(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(UsageError, match="--log-level: unknown log level 'LOUD'"):
        logs.configure("loud")
    monkeypatch.setenv(logs.FORMAT_ENV, "xml")
    with pytest.raises(UsageError, match=f"{logs.FORMAT_ENV}: unknown log format 'xml'"):
        logs.configure()
    assert UsageError.exit_code == 2


def test_cli_refuses_a_bad_level_in_one_line_with_exit_2(tmp_path: Path):
    flagged = run("--log-level", "nonsense", "synth", "--out", str(tmp_path / "set"))
    from_env = run("synth", "--out", str(tmp_path / "set"), env={logs.LEVEL_ENV: "nonsense"})
    for result in (flagged, from_env):
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("error: Invalid value for '--log-level'") and "nonsense" in result.stderr
    assert not (tmp_path / "set").exists()


def test_without_a_terminal_bars_are_off_and_steps_log_lines(capsys: pytest.CaptureFixture[str]):
    assert not logs.progress_enabled(True), "pytest's captured stderr is no terminal"
    assert not logs.progress_enabled(False)
    logs.configure("info", "json")
    progress = logs.Progress(25, desc="mapping", unit="tile", requested=True, logger=logging.getLogger("cloudlulc.t"))
    assert progress.bar is None
    for _ in range(25):
        progress.update()
    progress.close()
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["done"] for r in records] == [3, 6, 9, 12, 15, 18, 21, 24, 25], "a line per tenth, one at the end"
    assert records[-1]["message"].startswith("mapping: 25/25 tiles (100%), ")
    resumed = logs.Progress(
        100, desc="mapping", unit="tile", requested=False, logger=logging.getLogger("cloudlulc.t"), initial=40
    )
    resumed.pixels_per_unit = 4096
    resumed.update(5)
    resumed.update(5)
    (line,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert line["done"] == 50 and "Mpx/s" in line["message"]


def test_synth_and_train_without_a_terminal_log_lines_instead_of_bar_frames(tmp_path: Path):
    dataset = tmp_path / "set"
    synth = run("synth", "--out", str(dataset), "--n", "12", "--size", "64")
    assert synth.returncode == 0, synth.stderr
    assert "\r" not in synth.stderr and "synth: 12 samples at" in synth.stderr, synth.stderr
    arguments = [f"dataset={dataset}", f"output_dir={tmp_path / 'run'}", "epochs=2", "batch_size=4", "crop_size=32"]
    trained = run("--log-format", "json", "train", "--no-track", *arguments, "max_steps_per_epoch=1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "\r" not in trained.stderr, "no progress-bar frames in a captured log"
    records = [json.loads(line) for line in trained.stderr.splitlines() if line.startswith("{")]
    epochs = [r for r in records if r["logger"] == "cloudlulc.training.trainer"]
    assert [r["epoch"] for r in epochs] == [1, 2] and all(r["level"] == "INFO" for r in epochs)
    assert epochs[0]["message"].startswith("epoch 1/2: loss ") and "val mIoU" in epochs[0]["message"]
    assert {"train_total", "val_miou", "val_oa", "seconds"} <= set(epochs[1])


@pytest.mark.parametrize("in_step", [True, False])
def test_a_running_component_step_configures_logging_once_and_the_host_does_not(in_step: bool):
    script = (
        "import logging, components.runtime, cloudlulc.logs as logs; "
        "logging.getLogger('components.test').info('step started'); "
        "print(sum(isinstance(h, logs._Stderr) for h in logging.getLogger().handlers))"
    )
    environment = {key: value for key, value in os.environ.items() if key != "_KFP_RUNTIME"}
    environment.update({logs.FORMAT_ENV: "json", **({"_KFP_RUNTIME": "true"} if in_step else {})})
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("1" if in_step else "0")
    if in_step:
        assert json.loads(result.stderr.splitlines()[-1])["message"] == "step started"
