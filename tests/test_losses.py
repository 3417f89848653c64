"""Sparse and one-hot categorical cross-entropy agree in value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import losses
from tests.tolerances import CROSS_ENTROPY, assert_close


def test_sparse_and_categorical_give_same_loss_and_gradients():
    logits = jax.random.normal(jax.random.key(0), (16, 10))
    labels = jnp.arange(16) % 10
    sparse = lambda z: losses.sparse_categorical_cross_entropy(z, labels).mean()
    categorical = lambda z: losses.categorical_cross_entropy(z, labels).mean()
    assert_close(sparse(logits), categorical(logits), CROSS_ENTROPY + 16)  # and the mean over the batch
    assert_close(jax.grad(sparse)(logits), jax.grad(categorical)(logits), CROSS_ENTROPY + 1)  # softmax minus target


def test_cross_entropy_value():
    logits = jnp.array([[0.0, jnp.log(3.0)] + [-jnp.inf] * 8])
    # softmax = [1/4, 3/4]: the loss for label 1 is -log(3/4) = log(4) - log(3), a difference of terms near 1.4.
    assert_close(losses.sparse_categorical_cross_entropy(logits, jnp.array([1])), [-np.log(0.75)], CROSS_ENTROPY,
                 scale=np.log(4.0))


def test_accuracy():
    logits = jnp.eye(10)[:4]
    assert losses.accuracy(logits, jnp.array([0, 1, 0, 3])).tolist() == [1.0, 1.0, 0.0, 1.0]


def test_label_smoothing_spreads_the_target_and_agrees_across_loss_kinds():
    logits = jax.random.normal(jax.random.key(0), (8, 10))
    labels = jnp.arange(8)
    for loss in (losses.sparse_categorical_cross_entropy, losses.categorical_cross_entropy):
        assert_close(loss(logits, labels, 0.0), losses.sparse_categorical_cross_entropy(logits, labels), CROSS_ENTROPY)
    smoothed = losses.sparse_categorical_cross_entropy(logits, labels, 0.1)
    assert_close(smoothed, losses.categorical_cross_entropy(logits, labels, 0.1), CROSS_ENTROPY)
    # Target: 0.9 + 0.01 on the label, 0.01 elsewhere.
    log_probs = jax.nn.log_softmax(logits)
    expected = -(0.01 * log_probs.sum(-1) + 0.9 * log_probs[jnp.arange(8), labels])
    assert_close(smoothed, expected, CROSS_ENTROPY + 10)  # and the sum of the ten weighted log-probabilities
