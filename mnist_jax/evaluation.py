"""Evaluate a saved run's checkpoint on the full test set."""

from pathlib import Path
from typing import Any

import jax

from mnist_jax.checkpoints import restore_for_inference
from mnist_jax.config import TrainConfig
from mnist_jax.data import load_train_test
from mnist_jax.models import create_model
from mnist_jax.rundir import CONFIG, RunDir
from mnist_jax.train import evaluate


def evaluate_run(path: str | Path, which: str | int = "best", data_dir: str | None = None) -> dict[str, Any]:
    """Test loss and accuracy of one checkpoint of a run, on every test image."""
    run_dir = RunDir.open(path)
    config = TrainConfig.load(run_dir.path / CONFIG)
    epoch, params, meta = restore_for_inference(run_dir.path, which)
    model = create_model(meta["model"], **meta["hparams"])
    _, test = load_train_test(config.dataset, config.source, data_dir or config.data_dir)
    images, labels = jax.device_put(test.images), jax.device_put(test.labels)
    metrics = evaluate(model.apply, params, images, labels, config.eval_batch_size)
    return {"epoch": epoch, "test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
            "test_images": len(test)}
