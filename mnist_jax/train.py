"""Pure, jitted training and evaluation steps, and the epoch loops built from them."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from mnist_jax.compilation import jit
from mnist_jax.initializers import initial_params
from mnist_jax.losses import LOSSES, accuracy, sparse_categorical_cross_entropy
from mnist_jax.models import prepare_images

Batch = dict[str, jax.Array]  # {"image": uint8 (B, 28, 28), "label": int32 (B,)}
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
    """Parameters, optimizer state and step, plus the (static) loss name and label smoothing."""

    loss: str = struct.field(pytree_node=False, default="sparse")
    label_smoothing: float = struct.field(pytree_node=False, default=0.0)


def create_train_state(model: nn.Module, optimizer: optax.GradientTransformation, rng: jax.Array,
                       loss: str = "sparse", label_smoothing: float = 0.0, init: str = "flax") -> TrainState:
    """Initialise parameters with a dummy batch and wrap them with the optimizer, as one compiled program."""
    return _jitted_init(model, optimizer, rng, loss, label_smoothing, init)  # not one program per op, as eagerly


def init_train_state(model: nn.Module, optimizer: optax.GradientTransformation, rng: jax.Array,
                     loss: str = "sparse", label_smoothing: float = 0.0, init: str = "flax") -> TrainState:
    """The traceable body of `create_train_state`, for callers that derive `rng` in the same program."""
    params = initial_params(init, model, rng, jnp.zeros((1, 28, 28, 1), jnp.float32))
    return TrainState.create(apply_fn=model.apply, params=params, tx=optimizer, loss=loss,
                             label_smoothing=label_smoothing)


_jitted_init = jit(init_train_state, static_argnums=(0, 1, 3, 4, 5), fastest_compile=True)  # runs once


def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One optimizer step on a batch; dropout randomness is `rng` folded with the step number."""
    images = prepare_images(batch["image"])
    dropout_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, images, train=True, rngs={"dropout": dropout_rng})
        return LOSSES[state.loss](logits, batch["label"], state.label_smoothing).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    return state, {"loss": loss, "accuracy": accuracy(logits, batch["label"]).mean()}


def shuffled_batches(rng: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """Shuffle the example indices and cut them into (steps, batch_size); the remainder is skipped."""
    steps = num_examples // batch_size
    order = jax.random.permutation(rng, num_examples)
    return order[: steps * batch_size].reshape(steps, batch_size)


# Compiled alone; inside another jitted function, call shuffled_batches (only a top-level jit takes compiler options).
epoch_batches = jit(shuffled_batches, static_argnames=("num_examples", "batch_size"), fastest_compile=True)


def scan_steps(state: TrainState, images: jax.Array, labels: jax.Array, batch_indices_SxB: jax.Array,
               rng: jax.Array) -> tuple[TrainState, Metrics]:
    """Run one train_step per row of batch indices in a single jitted lax.scan; return summed metrics."""

    def body(state, indices_B):
        return train_step(state, {"image": images[indices_B], "label": labels[indices_B]}, rng)

    state, metrics_S = jax.lax.scan(body, state, batch_indices_SxB)
    return state, jax.tree.map(jnp.sum, metrics_S)


train_steps = jit(scan_steps, donate_argnums=0)
# The same program compiled in about half the time, for slower steps: for short runs (TrainConfig.fast_compile).
train_steps_fast_compile = jit(scan_steps, donate_argnums=0, fastest_compile=True)


@functools.partial(jit, donate_argnums=0)
def train_one_step(state: TrainState, images: jax.Array, labels: jax.Array, indices_B: jax.Array,
                   rng: jax.Array) -> tuple[TrainState, Metrics]:
    """Gather one batch on the device and take one train_step (the per-step loop, for comparison)."""
    return train_step(state, {"image": images[indices_B], "label": labels[indices_B]}, rng)


def batched_logits(apply_fn: Any, params: Any, images: jax.Array, batch_size: int) -> jax.Array:
    """Logits (N, 10) for all images, batch by batch; the last batch is padded, never dropped."""
    count = images.shape[0]
    batch_size = max(1, min(batch_size, count))  # a small split is not padded up to a whole large batch
    num_batches = -(-count // batch_size)
    padded = jnp.zeros((num_batches * batch_size, *images.shape[1:]), images.dtype).at[:count].set(images)

    def body(_, batch_images):
        return None, apply_fn({"params": params}, prepare_images(batch_images))

    _, logits = jax.lax.scan(body, None, padded.reshape(num_batches, batch_size, *images.shape[1:]))
    return logits.reshape(-1, logits.shape[-1])[:count]


predict_logits = jit(batched_logits, static_argnames=("apply_fn", "batch_size"))  # batched_logits compiled alone


def evaluate(apply_fn: Any, params: Any, images: jax.Array, labels: jax.Array, batch_size: int) -> dict[str, float]:
    """Mean cross-entropy and accuracy over every image of a split (one-hot or not, the loss is the same)."""
    metrics = _evaluate(apply_fn, params, images, labels, batch_size)
    return {name: float(value) for name, value in metrics.items()}


def compile_evaluate(apply_fn: Any, params: Any, images: Any, labels: Any, batch_size: int) -> None:
    """Compile `evaluate` ahead of time for these arguments, which may be `jax.ShapeDtypeStruct`s."""
    _evaluate.lower(apply_fn, params, images, labels, batch_size).compile()  # later calls find it in jit's cache


@functools.partial(jit, static_argnames=("apply_fn", "batch_size"), fastest_compile=True)  # runs once a split
def _evaluate(apply_fn: Any, params: Any, images: jax.Array, labels: jax.Array, batch_size: int) -> Metrics:
    logits = batched_logits(apply_fn, params, images, batch_size)  # one program with the metrics
    return {"loss": sparse_categorical_cross_entropy(logits, labels).mean(),
            "accuracy": accuracy(logits, labels).mean()}
