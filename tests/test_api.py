"""The researcher's API: your own model, loss and optimizer through the public entry points."""

import json

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mnist_jax
from mnist_jax import Predictor, TrainConfig, TrainResult, train_and_evaluate
from mnist_jax.cli import main
from mnist_jax.data import load_datasets
from mnist_jax.errors import CheckpointError


class TinyConvNet(nn.Module):
    """A researcher's own network, written the obvious way with Flax's own layers."""

    features: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(self.features, (3, 3), padding="VALID")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(10)(x)


def squared_hinge(logits_BxK, labels_B):
    """A loss no registry knows: the multi-class hinge loss (Weston-Watkins), per example."""
    correct = jnp.take_along_axis(logits_BxK, labels_B[:, None], axis=-1)
    margins = jnp.maximum(0.0, 1.0 + logits_BxK - correct).at[jnp.arange(len(labels_B)), labels_B].set(0.0)
    return margins.sum(-1)


@pytest.fixture(scope="module")
def digits():
    return load_datasets("digits", val_split=0.2, seed=0)


@pytest.fixture(scope="module")
def custom_run(digits, tmp_path_factory):
    """Three epochs of the researcher's network, loss and optimizer, recorded in a run directory."""
    run_path = tmp_path_factory.mktemp("custom") / "run"
    config = TrainConfig(dataset="digits", epochs=3, batch_size=32)
    result = train_and_evaluate(config, run_path, model=TinyConvNet(), loss_fn=squared_hinge,
                                optimizer=optax.sgd(0.05, momentum=0.9), datasets=digits)
    return run_path, result


def test_the_public_names_come_from_the_package():
    assert set(mnist_jax.__all__) == {"TrainConfig", "train_and_evaluate", "TrainResult", "Predictor"}
    assert TrainResult.__module__ == "mnist_jax.train" and Predictor.__module__ == "mnist_jax.predictor"


def test_a_custom_model_loss_and_optimizer_train_and_are_used(custom_run):
    run_path, result = custom_run
    assert set(result.state.params) == {"Conv_0", "Dense_0"}  # the given network, not the configured CNN
    assert result.state.loss_fn is squared_hinge
    assert isinstance(result.state.opt_state[0], optax.TraceState)  # SGD with momentum, not the configured Adam
    assert result.metrics["test_accuracy"] > 0.8  # chance is 0.1
    assert [record["epoch"] for record in result.history] == [1, 2, 3]
    assert (run_path / "checkpoints").is_dir()


def test_the_loss_given_is_the_one_minimised(digits):
    """With a loss that ignores the labels' class 0, that class is never learned."""
    def loss_without_zeros(logits_BxK, labels_B):
        return jnp.where(labels_B == 0, 0.0, optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B))

    config = TrainConfig(dataset="digits", model="mlp", epochs=3, batch_size=32)
    result = train_and_evaluate(config, loss_fn=loss_without_zeros, datasets=digits)
    logits = result.state.apply_fn({"params": result.state.params}, digits.test.images[..., None] / 255.0)
    predictions = np.asarray(logits.argmax(-1))
    assert (predictions[digits.test.labels != 0] == digits.test.labels[digits.test.labels != 0]).mean() > 0.8
    assert (predictions == 0).mean() < 0.02


def test_the_predictor_restores_a_custom_model_when_given_it(custom_run, digits):
    run_path, result = custom_run
    predictor = Predictor.load(run_path, which="latest", model=TinyConvNet())
    expected = result.state.apply_fn({"params": result.state.params}, digits.test.images[:16, ..., None] / 255.0)
    np.testing.assert_array_equal(predictor.predict(digits.test.images[:16]), np.asarray(expected).argmax(-1))


def test_a_custom_model_cannot_be_rebuilt_from_its_name(custom_run):
    run_path, _ = custom_run
    meta_model = json.loads(next((run_path / "checkpoints").glob("*/meta/metadata")).read_text())["model_class"]
    assert meta_model == "TinyConvNet"
    with pytest.raises(CheckpointError, match=r"model given in Python \(TinyConvNet\).*Predictor.load"):
        Predictor.load(run_path)


@pytest.mark.parametrize("command", ["evaluate", "predict", "report"])
def test_the_cli_explains_in_one_sentence_that_the_model_lives_in_python(custom_run, capsys, command):
    run_path, _ = custom_run
    extra = ["--random", "3"] if command == "predict" else []
    assert main([command, str(run_path), *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "trained with a model given in Python (TinyConvNet)" in error


def test_the_wrong_network_is_named_not_called_damaged(custom_run):
    run_path, _ = custom_run
    with pytest.raises(CheckpointError, match="does not restore into the given TinyConvNet"):
        Predictor.load(run_path, model=TinyConvNet(features=8))


def test_a_run_dir_may_be_a_plain_path_and_is_created(tmp_path, digits):
    config = TrainConfig(dataset="digits", model="mlp", epochs=1, batch_size=64)
    result = train_and_evaluate(config, str(tmp_path / "as_string"), datasets=digits)
    assert result.run_dir.path == tmp_path / "as_string"
    assert json.loads((tmp_path / "as_string" / "metrics.json").read_text())["epochs"] == 1
