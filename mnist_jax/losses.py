"""Cross-entropy losses on integer labels (sparse) or one-hot labels (categorical)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from mnist_jax.models import NUM_CLASSES

LossFn = Callable[..., jax.Array]  # (logits_BxK, labels_B, label_smoothing=0.0) -> per-example loss


def sparse_categorical_cross_entropy(logits_BxK: jax.Array, labels_B: jax.Array,
                                     label_smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy against integer labels."""
    if label_smoothing:  # smoothed targets are a full distribution, not an index
        return categorical_cross_entropy(logits_BxK, labels_B, label_smoothing)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BxK, labels_B)


def categorical_cross_entropy(logits_BxK: jax.Array, labels_B: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy against one-hot labels (as in the article's first version), optionally smoothed."""
    targets_BxK = optax.smooth_labels(jax.nn.one_hot(labels_B, NUM_CLASSES), label_smoothing)
    return optax.softmax_cross_entropy(logits_BxK, targets_BxK)


LOSSES: dict[str, LossFn] = {
    "sparse": sparse_categorical_cross_entropy,
    "categorical": categorical_cross_entropy,
}


def accuracy(logits_BxK: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Per-example 1.0 where the arg-max class is the label, else 0.0."""
    return (jnp.argmax(logits_BxK, -1) == labels_B).astype(jnp.float32)
