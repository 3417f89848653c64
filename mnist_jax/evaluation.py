"""A saved run's data and its evaluation on the full test set."""

from pathlib import Path
from typing import Any

import jax

from mnist_jax.checkpoints import restore_for_inference
from mnist_jax.config import TrainConfig
from mnist_jax.data import Split, load_train_test
from mnist_jax.errors import CheckpointError
from mnist_jax.rundir import CONFIG, RunDir
from mnist_jax.train import evaluate


def evaluate_run(path: str | Path, which: str | int = "best", data_dir: str | None = None) -> dict[str, Any]:
    """Test loss and accuracy of one checkpoint of a run, on every test image."""
    run_dir = RunDir.open(path)
    epoch, model, params, meta = restore_for_inference(run_dir.path, which)
    config, _, test = run_splits(run_dir.path, meta, data_dir)
    images, labels = jax.device_put(test.images), jax.device_put(test.labels)
    metrics = evaluate(model.apply, params, images, labels, config.eval_batch_size)
    return {"epoch": epoch, "test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
            "test_images": len(test)}


def run_splits(run_path: str | Path, meta: dict[str, Any],
               data_dir: str | None = None) -> tuple[TrainConfig, Split, Split]:
    """The run's configuration and the train and test splits of the data it was trained on."""
    config = run_config(run_path, meta)
    train, test = load_train_test(config.dataset, config.source, data_dir or config.data_dir)
    return config, train, test


def run_config(run_path: str | Path, meta: dict[str, Any]) -> TrainConfig:
    """The run's config.json (beside or above its checkpoints), else the copy saved in the checkpoint."""
    path = Path(run_path)
    for candidate in (path / CONFIG, path.parent / CONFIG):
        if candidate.is_file():
            return TrainConfig.load(candidate)
    if "config" not in meta:
        raise CheckpointError(f"{path} has no {CONFIG} and its checkpoint does not record the training data.")
    return TrainConfig.from_dict(meta["config"])
