"""Cross-entropy losses by name, on integer labels (sparse) or one-hot labels (categorical)."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from mnist_jax.models import NUM_CLASSES

LossFn = Callable[[jax.Array, jax.Array], jax.Array]  # (logits_BxK, labels_B) -> per-example loss (B,)


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


# name -> (logits_BxK, labels_B, label_smoothing) -> per-example loss; TrainConfig.loss takes these names.
LOSSES: dict[str, Callable[..., jax.Array]] = {
    "sparse": sparse_categorical_cross_entropy,
    "categorical": categorical_cross_entropy,
}


@functools.cache  # one function per choice: the training program is keyed on it, so equal configs share programs
def loss_from_config(name: str, label_smoothing: float = 0.0) -> LossFn:
    """The named loss with its label smoothing bound: `loss_fn(logits_BxK, labels_B)`."""
    return functools.partial(LOSSES[name], label_smoothing=label_smoothing)


def accuracy(logits_BxK: jax.Array, labels_B: jax.Array) -> jax.Array:
    """Per-example 1.0 where the arg-max class is the label, else 0.0."""
    return (jnp.argmax(logits_BxK, -1) == labels_B).astype(jnp.float32)
