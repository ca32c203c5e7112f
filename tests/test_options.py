"""One options model per stage: every face (CLI flags, pipeline parameters, params.yaml) is derived from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from cloudlulc.cli import cli
from cloudlulc.errors import UsageError
from cloudlulc.ingest.options import ChipOptions
from cloudlulc.mapping.options import MapOptions
from cloudlulc.options import build, click_option, field_like
from cloudlulc.tracking.options import GateConfig
from cloudlulc.training.config import TrainConfig
from cloudlulc.validation.thresholds import Thresholds
from components.parameters import MappingParams, TrainingParams

ROOT = Path(__file__).resolve().parents[1]


def _bounds(info: Any) -> dict[str, float]:
    found = {}
    for item in info.metadata:
        for name in ("ge", "gt", "le", "lt", "multiple_of"):
            if hasattr(item, name):
                found[name] = getattr(item, name)
    return found


def _narrows(face: Any, library: Any) -> bool:
    """Every bound of the library's field holds on the face's field, with the face free to add tighter ones."""
    face_bounds, library_bounds = _bounds(face), _bounds(library)
    for name, value in library_bounds.items():
        if name not in face_bounds:
            return False
        if (name in ("ge", "gt") and face_bounds[name] < value) or (name in ("le", "lt") and face_bounds[name] > value):
            return False
        if name == "multiple_of" and face_bounds[name] % value:
            return False
    return True


@pytest.mark.parametrize(
    ("params", "library", "shared"),
    [
        (MappingParams, MapOptions, {"tile": "tile", "overlap": "overlap", "batch_size": "batch_size"}),
        (TrainingParams, TrainConfig, {n: n for n in ("epochs", "batch_size", "crop_size", "learning_rate")}),
        (TrainingParams, ChipOptions, {"chip_size": "chip_size"}),
        (MappingParams, Thresholds, {"max_nodata": "max_nodata_fraction"}),
        (
            TrainingParams,
            GateConfig,
            {
                "min_gain": "min_miou_gain",
                "max_bin_regression": "max_bin_regression",
                "first_min_miou": "first_min_miou",
                "first_min_oa": "first_min_oa",
            },
        ),
    ],
)
def test_pipeline_parameters_take_ranges_and_texts_from_the_library_models(
    params: Any, library: Any, shared: dict[str, str]
):
    for face_name, library_name in shared.items():
        face, own = params.model_fields[face_name], library.model_fields[library_name]
        assert _narrows(face, own), f"{params.__name__}.{face_name} widens {library.__name__}.{library_name}"
        if own.description:
            assert face.description, f"{params.__name__}.{face_name} lost its description"
    assert MappingParams().tile == MapOptions().tile and MappingParams().overlap == MapOptions().overlap


def test_a_bound_added_on_a_face_narrows_and_the_library_bound_still_holds():
    class Face(BaseModel):
        tile: int = field_like(MapOptions, "tile", le=1024)

    assert Face(tile=1024).tile == 1024
    for refused in (2048, 80, 0):
        with pytest.raises(ValueError, match="tile"):
            Face(tile=refused)


def test_cli_flags_come_from_the_model_with_their_ranges_and_defaults():
    @click.command()
    @click_option(MapOptions, "tile")
    @click_option(MapOptions, "batch_size", "--batch-size", "--batch")
    def show(tile: int, batch_size: int) -> None:
        click.echo(f"{tile} {batch_size}")

    runner = CliRunner()
    assert runner.invoke(show, []).output.strip() == "512 4"
    assert runner.invoke(show, ["--batch", "8", "--tile", "256"]).output.strip() == "256 8"
    refused = runner.invoke(show, ["--tile", "8"])
    assert refused.exit_code == 2 and "--tile" in refused.output and "32<=x<=4096" in refused.output
    helped = runner.invoke(show, ["--help"]).output
    assert MapOptions.model_fields["tile"].description.split(",")[0] in helped


def test_build_names_the_flag_and_the_value_of_each_bad_option():
    with pytest.raises(UsageError, match=r"^--tile 80: .*multiple of 32$"):
        build(MapOptions, tile=80)
    with pytest.raises(UsageError, match=r"^--batch 0: .*greater than or equal to 1$"):
        build(MapOptions, {"batch_size": "--batch"}, batch_size=0)
    with pytest.raises(UsageError, match=r"--overlap 64: .*\[0, 64\).*with tile 128"):
        build(MapOptions, tile=128, overlap=64)
    assert build(MapOptions, tile=128, overlap=63) == MapOptions(tile=128, overlap=63)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--tile", "80"], "--tile 80"),
        (["--tile", "64", "--overlap", "64"], "--overlap 64"),
        (["--batch", "0"], "--batch"),
        (["--request-timeout", "inf"], "--request-timeout"),
    ],
)
def test_cloudlulc_map_refuses_bad_options_with_exit_2_naming_them(arguments: list[str], named: str, tmp_path: Path):
    scene = tmp_path / "s2.tif"
    scene.write_bytes(b"")
    result = CliRunner().invoke(
        cli, ["map", "--optical", str(scene), "--out", str(tmp_path / "m.tif"), *arguments], standalone_mode=False
    )
    error = result.exception
    message = str(error) if not isinstance(error, click.ClickException) else error.format_message()
    assert isinstance(error, UsageError | click.UsageError), repr(error)
    assert named in message, message
    assert not (tmp_path / "m.tif").exists()


def test_params_yaml_keys_are_options_of_their_stage_and_pass_its_checks():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    train = dict(params["train"])
    unknown = set(train) - set(TrainConfig.model_fields)
    assert not unknown, f"params.yaml train keys that are not TrainConfig fields: {sorted(unknown)}"
    config = TrainConfig(dataset="data/CloudLULC-Set", **train)
    chips = ChipOptions(chip_size=params["ingest"]["chip_size"])
    Thresholds(max_nodata_fraction=params["validate"]["max_nodata"])
    assert config.crop_size <= chips.chip_size, "params.yaml: train.crop_size is larger than ingest.chip_size"
    dvc = (ROOT / "dvc.yaml").read_text()
    for key in train:
        assert f"{key}=${{train.{key}}}" in dvc, f"dvc.yaml does not pass train.{key} to `cloudlulc train`"
