"""The default CNN on the real MNIST files (runs where MNIST_JAX_DATA_DIR points at them, as in CI)."""

import numpy as np
import pytest

from mnist_jax import data
from mnist_jax.config import TrainConfig
from mnist_jax.train import train_and_evaluate


def test_full_mnist_shapes_and_checksummed_counts(real_mnist_dir):
    train, test = data.load_mnist_dir(real_mnist_dir)
    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.slow
def test_default_cnn_one_epoch_reaches_98_percent(real_mnist_dir):
    datasets = data.load_datasets("mnist", data_dir=str(real_mnist_dir))
    config = TrainConfig(epochs=1)  # the default model and recipe, one epoch
    result = train_and_evaluate(config, datasets=datasets)
    assert result.metrics["test_images"] == 10_000
    assert result.metrics["test_accuracy"] >= 0.98
