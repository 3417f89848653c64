"""A run whose loss stops being finite ends at once, keeps its last good checkpoint and says so."""

import json

import pytest

from mnist_jax import TrainConfig, train_and_evaluate
from mnist_jax.cli import main
from mnist_jax.data import load_datasets
from mnist_jax.train import TrainingDiverged


@pytest.fixture(scope="module")
def digits():
    return load_datasets("digits", val_split=0.2, seed=0)


def test_a_diverging_run_stops_in_that_epoch_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    """Two good epochs at a sane rate, then a resumed run at an absurd one: it stops in its first epoch."""
    config = TrainConfig(dataset="digits", model="mlp", epochs=2, batch_size=32, schedule="constant")
    train_and_evaluate(config, tmp_path / "run", datasets=digits)
    exploding = config.replace(epochs=5, learning_rate=1e30)
    with pytest.raises(TrainingDiverged, match="diverged in epoch 3.*the checkpoint of epoch 2 is kept"):
        train_and_evaluate(exploding, tmp_path / "run", datasets=digits, resume=True)
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == [1, 2]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == {"status": "diverged", "diverged_epoch": 3, "kept_epoch": 2}
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # the diverged epoch is recorded, and nothing after it


def test_the_cli_exits_non_zero_with_one_sentence(tmp_path, capsys):
    code = main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "3", "--lr", "1e30",
                 "--run-dir", str(tmp_path / "run"), "--no-progress", "--no-report"])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == ["mnist-jax: error: Training diverged in epoch 1: the training loss is not finite. "
                     "Try a lower --lr."]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_flag_is_refused_before_training(tmp_path, capsys, value):
    assert main(["train", "--dataset", "digits", f"--lr={value}", "--run-dir", str(tmp_path / "run")]) == 2
    assert "--learning-rate must be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
