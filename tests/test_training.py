from pathlib import Path

import pytest
import torch

from cloudlulc.errors import DataError
from cloudlulc.training.checkpoints import list_checkpoints
from cloudlulc.training.config import ConfigError, load_train_config
from cloudlulc.training.trainer import train, warmup_cosine


@pytest.fixture(scope="module")
def train_set(synthetic_set) -> Path:
    return synthetic_set(24, 3)


def _config(dataset: Path, output: Path, *extra: str):
    return load_train_config(
        None,
        [
            f"dataset={dataset}",
            f"output_dir={output}",
            "epochs=4",
            "batch_size=4",
            "crop_size=64",
            "learning_rate=0.003",
            "warmup_steps=4",
            *extra,
        ],
    )


def test_tiny_training_lowers_the_loss_and_checkpoints(train_set: Path, tmp_path: Path):
    torch.set_num_threads(1)
    result = train(_config(train_set, tmp_path / "run", "epochs=5"), progress=False)
    losses = [h["train_total"] for h in result.history]
    assert losses[-1] < 0.9 * losses[0], losses
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
    assert all(0 <= h["val_miou"] <= 1 for h in result.history)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["epoch_0003.pt", "epoch_0004.pt", "epoch_0005.pt"]
    assert (tmp_path / "run" / "history.json").exists()


def test_killed_run_resumes_to_the_same_weights(train_set: Path, tmp_path: Path):
    torch.set_num_threads(1)
    uninterrupted = train(_config(train_set, tmp_path / "a"), progress=False).model.state_dict()

    class KilledError(Exception):
        pass

    def kill_after_second_epoch(epoch: int, record: dict[str, float]) -> None:
        if epoch == 2:
            raise KilledError

    with pytest.raises(KilledError):
        train(_config(train_set, tmp_path / "b"), progress=False, on_epoch_end=kill_after_second_epoch)
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["epoch_0001.pt", "epoch_0002.pt"]
    resumed = train(_config(train_set, tmp_path / "b"), progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, uninterrupted[name]), name


def test_corrupt_checkpoint_is_named_and_older_ones_kept(train_set: Path, tmp_path: Path):
    config = _config(train_set, tmp_path / "run", "epochs=2")
    train(config, progress=False)
    newest = list_checkpoints(tmp_path / "run")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"epoch_0002.pt: checkpoint is corrupt.*older checkpoints kept: epoch_0001.pt"):
        train(config, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["epoch_0001.pt", "epoch_0002.pt"]


def test_resume_with_another_config_is_refused(train_set: Path, tmp_path: Path):
    train(_config(train_set, tmp_path / "run", "epochs=1"), progress=False)
    with pytest.raises(DataError, match="another config"):
        train(_config(train_set, tmp_path / "run", "epochs=1", "learning_rate=0.01"), progress=False)


def test_baselines_train_through_the_same_loop(train_set: Path, tmp_path: Path):
    for architecture in ("reconstruction_first", "sar_only"):
        result = train(
            _config(
                train_set, tmp_path / architecture, "epochs=1", f"architecture={architecture}", "max_steps_per_epoch=2"
            ),
            progress=False,
        )
        assert result.history[0]["train_total"] > 0
    recon = _config(
        train_set, tmp_path / "r2", "epochs=1", "max_steps_per_epoch=1", "architecture=reconstruction_first"
    )
    assert "train_reconstruction" in train(recon, progress=False).history[0]


def test_config_errors_list_every_bad_key(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"dataset: Field required.*epocs: Extra inputs are not permitted"):
        load_train_config(None, ["epocs=3"])
    with pytest.raises(ConfigError, match=r"crop_size.*multiple of 32"):
        load_train_config(None, ["dataset=x", "crop_size=100"])
    with pytest.raises(ConfigError, match="unknown architecture"):
        load_train_config(None, ["dataset=x", "architecture=unet"])
    with pytest.raises(ConfigError, match=r"loss.anchor"):
        load_train_config(None, ["dataset=x", "loss.anchor=-1"])
    config_file = tmp_path / "train.yaml"
    config_file.write_text("dataset: data/set\nepochs: 2\nloss:\n  anchor: 0.0\n")
    config = load_train_config(config_file, ["epochs=3"])
    assert (config.epochs, config.loss.anchor, config.dataset) == (3, 0.0, "data/set")
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_train_config(config_file, ["epochs"])


def test_warmup_cosine_schedule():
    factor = warmup_cosine(warmup_steps=4, total_steps=14)
    assert [round(factor(s), 3) for s in (0, 3, 4, 9, 14)] == [0.25, 1.0, 1.0, 0.5, 0.0]


def test_fine_tune_from_checkpoint_with_frozen_encoders(train_set: Path, tmp_path: Path):
    base = train(_config(train_set, tmp_path / "base", "epochs=1", "max_steps_per_epoch=2"), progress=False)
    start = {k: v.clone() for k, v in base.model.state_dict().items()}
    checkpoint = list_checkpoints(tmp_path / "base")[-1]
    tuned = train(
        _config(
            train_set,
            tmp_path / "tuned",
            "epochs=1",
            "max_steps_per_epoch=2",
            f"init={checkpoint}",
            "freeze_encoders=true",
        ),
        progress=False,
    ).model.state_dict()
    encoder_weights = [k for k in start if "encoder" in k and k.endswith("weight") and "bn" not in k]
    assert encoder_weights and all(torch.equal(tuned[k], start[k]) for k in encoder_weights)
    assert not torch.equal(tuned["decoder.classify.weight"], start["decoder.classify.weight"])
    with pytest.raises(DataError, match="weights do not fit sar_only"):
        train(
            _config(train_set, tmp_path / "wrong", "epochs=1", f"init={checkpoint}", "architecture=sar_only"),
            progress=False,
        )
    with pytest.raises(DataError, match="init checkpoint not found"):
        train(_config(train_set, tmp_path / "missing", "epochs=1", f"init={tmp_path / 'nope.pt'}"), progress=False)
