"""Training and evaluation steps: correctness of the loops, masking, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import data, steps
from mnist_jax.config import TrainConfig
from mnist_jax.losses import sparse_categorical_cross_entropy
from mnist_jax.models import prepare_images
from mnist_jax.train import DeviceSplit, initial_state, train_and_evaluate, train_epoch
from tests.tolerances import (CNN_LOGITS, CROSS_ENTROPY, MLP_LOGITS, assert_close, assert_differ,
                              assert_trained_close, gradient_length)

BATCH = 32
# Reduction lengths (tests/tolerances.py) of the logits, and of a training step: the longest sum that makes a
# parameter's gradient is over the batch, times the 26x26 positions for the CNN's convolution kernel.
LOGITS = {"mlp": MLP_LOGITS, "cnn": CNN_LOGITS}
STEP_LENGTH = {"mlp": gradient_length(MLP_LOGITS, BATCH), "cnn": gradient_length(CNN_LOGITS, BATCH * 26 * 26)}


@pytest.fixture(scope="module")
def digits():
    return data.load_datasets("digits", val_split=0.2, seed=0)


def test_predict_logits_keeps_every_image_when_batches_do_not_divide(digits):
    config = TrainConfig(dataset="digits", model="mlp")
    state = initial_state(config, steps_per_epoch=1)
    images = jnp.asarray(digits.test.images[:23])
    logits = steps.predict_logits(state.apply_fn, state.eval_variables(), images, batch_size=10)
    direct = state.apply_fn({"params": state.params}, prepare_images(images))
    assert logits.shape == (23, 10)
    assert_close(logits, direct, MLP_LOGITS)


def test_evaluate_matches_a_direct_computation(digits):
    config = TrainConfig(dataset="digits", model="mlp")
    state = initial_state(config, steps_per_epoch=1)
    images, labels = jnp.asarray(digits.test.images), jnp.asarray(digits.test.labels)
    metrics = steps.evaluate(state.apply_fn, state.eval_variables(), images, labels, batch_size=100)  # 4 batches
    logits = state.apply_fn({"params": state.params}, prepare_images(images))
    expected_loss = sparse_categorical_cross_entropy(logits, labels).mean()
    assert_close(metrics["loss"], expected_loss, MLP_LOGITS + CROSS_ENTROPY + len(labels))  # and the mean
    # The accuracy is a count of images over 359: the same count, whatever the rounding of the division.
    assert round(metrics["accuracy"] * len(labels)) == int((logits.argmax(-1) == labels).sum())


def test_epoch_plan_is_a_permutation_without_the_remainder_and_differs_by_epoch():
    batches, _ = steps.epoch_plan(0, 1, 103, 10)
    assert batches.shape == (10, 10)
    assert len(set(np.asarray(batches).ravel().tolist())) == 100
    assert not np.array_equal(batches, steps.epoch_plan(0, 2, 103, 10)[0])
    assert not np.array_equal(batches, steps.epoch_plan(1, 1, 103, 10)[0])
    np.testing.assert_array_equal(batches, steps.epoch_plan(0, 1, 103, 10)[0])  # a resumed run repeats it


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_scan_loop_and_step_loop_train_identically(digits, model):
    """Many steps per jitted call is an optimisation only: it must not change what is computed."""
    split = DeviceSplit.put(digits.train)
    steps = len(split) // BATCH
    results = []
    for loop, steps_per_call in [("scan", 0), ("scan", 7), ("step", 0)]:
        config = TrainConfig(dataset="digits", model=model, batch_size=BATCH, loop=loop,
                             steps_per_call=steps_per_call, dropout=0.3)
        state = initial_state(config, steps_per_epoch=steps)
        state, metrics = train_epoch(config, state, split, epoch=1)
        results.append((state.params, metrics))
    for params, metrics in results[1:]:
        assert_trained_close(params, results[0][0], steps, config.learning_rate, STEP_LENGTH[model])
        # The epoch's loss: each step's mean over the batch, then the mean over the steps, summed in another order.
        assert_close(metrics["train_loss"], results[0][1]["train_loss"], LOGITS[model] + CROSS_ENTROPY + BATCH + steps)


def test_train_step_is_pure_and_reduces_the_loss(digits):
    config = TrainConfig(dataset="digits", model="mlp", learning_rate=1e-2, schedule="constant")
    state = initial_state(config, steps_per_epoch=1)
    batch = {"image": jnp.asarray(digits.train.images[:64]), "label": jnp.asarray(digits.train.labels[:64])}
    step = jax.jit(steps.train_step)
    first, metrics_a = step(state, batch, jax.random.key(0))
    again, metrics_b = step(state, batch, jax.random.key(0))
    # Same inputs, same outputs, bit for bit (within one machine and one XLA build, as tests run).
    assert float(metrics_a["loss"]) == float(metrics_b["loss"])
    for _ in range(20):
        first, metrics = step(first, batch, jax.random.key(0))
    assert float(metrics["loss"]) < 0.5 * float(metrics_a["loss"])
    assert int(first.step) == 21


def test_categorical_loss_trains_like_sparse(digits):
    results = {}
    for loss in ("sparse", "categorical"):
        config = TrainConfig(dataset="digits", model="mlp", loss=loss, epochs=1, batch_size=BATCH)
        results[loss] = train_and_evaluate(config, datasets=digits)
    steps = len(digits.train) // BATCH
    assert int(results["sparse"].state.step) == int(results["categorical"].state.step) == steps
    assert_trained_close(results["categorical"].state.params, results["sparse"].state.params, steps,
                         config.learning_rate, STEP_LENGTH["mlp"])


def test_cnn_learns_digits(digits):
    config = TrainConfig(dataset="digits", epochs=4, batch_size=32)
    result = train_and_evaluate(config, datasets=digits)
    assert result.metrics["test_accuracy"] > 0.9
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["val_accuracy"] > 0.9
    assert result.metrics["test_images"] == len(digits.test)


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "cosine"), ("adamw", "onecycle")])
def test_other_optimizers_and_schedules_learn(digits, optimizer, schedule):
    config = TrainConfig(dataset="digits", model="mlp", optimizer=optimizer, schedule=schedule, epochs=3,
                         batch_size=32, learning_rate=0.05 if optimizer == "sgd" else 3e-3)
    assert train_and_evaluate(config, datasets=digits).metrics["test_accuracy"] > 0.85


def test_bfloat16_compute_trains_with_float32_parameters(digits):
    config = TrainConfig(dataset="digits", dtype="bfloat16", epochs=2, batch_size=32)
    result = train_and_evaluate(config, datasets=digits)
    assert {leaf.dtype for leaf in jax.tree.leaves(result.state.params)} == {jnp.dtype("float32")}
    assert result.metrics["test_accuracy"] > 0.8


def test_label_smoothing_reaches_the_training_step(digits):
    plain = TrainConfig(dataset="digits", model="mlp", epochs=1, batch_size=32)
    a = train_and_evaluate(plain, datasets=digits)
    b = train_and_evaluate(plain.replace(label_smoothing=0.2), datasets=digits)
    assert b.state.loss_fn.keywords["label_smoothing"] == 0.2
    # More than rounding apart: an epoch's mean loss (tests/tolerances.py).
    steps = len(digits.train) // BATCH
    assert_differ(b.history[0]["train_loss"], a.history[0]["train_loss"], MLP_LOGITS + CROSS_ENTROPY + BATCH + steps)


@pytest.mark.parametrize("loop, steps_per_call", [("step", 0), ("scan", 5), ("scan", 0)])
def test_the_progress_bar_counts_every_step_of_the_epoch(digits, capsys, loop, steps_per_call):
    """A row per call in the step loop, a block of rows per call in the scan: the bar ends at the epoch's steps."""
    config = TrainConfig(dataset="digits", model="mlp", batch_size=64, epochs=1, loop=loop,
                         steps_per_call=steps_per_call)
    train = DeviceSplit.put(digits.train)
    train_epoch(config, initial_state(config, steps_per_epoch=1), train, epoch=1, progress=True)
    steps_per_epoch = len(train) // 64
    assert f"{steps_per_epoch}/{steps_per_epoch} [" in capsys.readouterr().err
