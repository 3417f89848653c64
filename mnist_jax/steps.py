"""Pure jitted programs: the train step, the scanned epoch, evaluation and prediction.

Each `compilation.jit` is `jax.jit` with our compiler options (compilation.py); the functions are what they say.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from mnist_jax import augment, compilation, sharding, shuffle
from mnist_jax.augment import AffineRanges
from mnist_jax.initializers import INITS
from mnist_jax.losses import LossFn, accuracy, sparse_categorical_cross_entropy
from mnist_jax.models import prepare_images

Batch = dict[str, jax.Array]  # {"image": uint8 (B, 28, 28), "label": int32 (B,)}
Metrics = dict[str, jax.Array]
INIT_STREAM, EPOCH_STREAM = 0, 1  # independent random streams folded out of the seed
AUGMENT_STREAM = 1  # folded out of a step's dropout key for its augmentation


class TrainState(train_state.TrainState):
    """Parameters, optimizer state and step; the model's other variables; the moving average of the weights.

    The static fields (loss, augmentation, EMA decay) are part of the compiled program, not its inputs.
    """

    model_state: Any = None  # the model's non-parameter collections, e.g. {"batch_stats": ...}; {} for most models
    ema_params: Any = None  # the moving average of params, used for evaluation and checkpoints; None when off
    loss_fn: LossFn = struct.field(pytree_node=False, default=None)
    augment: AffineRanges = struct.field(pytree_node=False, default=AffineRanges())
    ema_decay: float = struct.field(pytree_node=False, default=0.0)

    def eval_variables(self) -> dict[str, Any]:
        """What evaluation and prediction apply the model with: the averaged weights when kept, and the state."""
        return {"params": self.params if self.ema_params is None else self.ema_params, **self.model_state}


@functools.partial(compilation.jit, static_argnames=("model", "optimizer", "loss_fn", "init", "augment",
                                                     "ema_decay"), fastest_compile=True)
def init_state(model: nn.Module, optimizer: optax.GradientTransformation, loss_fn: LossFn, seed: int,
               init: str = "flax", augment: AffineRanges = AffineRanges(), ema_decay: float = 0.0) -> TrainState:
    """Fresh parameters, model state and optimizer state, as one compiled program (not one per operation)."""
    rng = jax.random.fold_in(jax.random.key(seed), INIT_STREAM)  # derived inside: any seed, one program
    images = jnp.zeros((1, 28, 28, 1), jnp.float32)
    params = INITS[init](model, rng, images)
    model_state = {name: tree for name, tree in model.init(rng, images).items() if name != "params"}  # not random
    state = TrainState.create(apply_fn=model.apply, params=params, tx=optimizer, loss_fn=loss_fn,
                              model_state=model_state, ema_params=params if ema_decay else None, augment=augment,
                              ema_decay=ema_decay)
    # A plain int32 step (create's 0 is weakly typed), as a checkpoint restores it: a resumed run's training program
    # is then the very one compiled ahead for a fresh state.
    return sharding.replicated(state.replace(step=jnp.zeros((), jnp.int32)))


def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One optimizer step on a batch; dropout and augmentation randomness is `rng` folded with the step number."""
    step_rng = jax.random.fold_in(rng, state.step)
    images = prepare_images(augment.random_affine(jax.random.fold_in(step_rng, AUGMENT_STREAM),
                                                  batch["image"].astype(jnp.float32), state.augment))
    mutable = list(state.model_state)  # BatchNorm's running statistics; a plain model is applied without `mutable`

    def loss_fn(params):
        variables = {"params": params, **state.model_state}
        if mutable:
            logits, model_state = state.apply_fn(variables, images, train=True, rngs={"dropout": step_rng},
                                                 mutable=mutable)
        else:
            logits, model_state = state.apply_fn(variables, images, train=True, rngs={"dropout": step_rng}), {}
        return state.loss_fn(logits, batch["label"]).mean(), (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, model_state=model_state)
    if state.ema_params is not None:
        state = state.replace(ema_params=_averaged(state.ema_params, state.params, state.ema_decay, state.step))
    return state, {"loss": loss, "accuracy": accuracy(logits, batch["label"]).mean()}


def _averaged(ema_params: Any, params: Any, decay: float, step: jax.Array) -> Any:
    """One step of the weights' moving average; its decay ramps up over the first steps (as tf.train's does), so
    the average does not drag the random initial weights along for thousands of steps."""
    decay = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda average, new: decay * average + (1 - decay) * new, ema_params, params)


@functools.partial(compilation.jit, donate_argnums=0, fastest_compile=None)  # compilation.speedups may ask
def train_steps(state: TrainState, images: jax.Array, labels: jax.Array, batch_indices_SxB: jax.Array,
                rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One train_step per row of batch indices, in a single jitted lax.scan; return the summed metrics.

    The uint8 dataset stays on the device and each batch is gathered inside the program.
    """

    def body(state, indices_B):
        return train_step(state, {"image": images[indices_B], "label": labels[indices_B]}, rng)

    state, metrics_S = jax.lax.scan(body, state, batch_indices_SxB)
    return state, jax.tree.map(jnp.sum, metrics_S)


@functools.partial(compilation.jit, donate_argnums=0)
def train_one_step(state: TrainState, images: jax.Array, labels: jax.Array, indices_B: jax.Array,
                   rng: jax.Array) -> tuple[TrainState, Metrics]:
    """Gather one batch on the device and take one train_step (the per-step loop, for comparison)."""
    return train_step(state, {"image": images[indices_B], "label": labels[indices_B]}, rng)


def epoch_plan(seed: int, epoch: int, num_examples: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """An epoch's shuffled batches (steps, batch_size) and dropout key, from the seed and epoch alone.

    A resumed run repeats them exactly, whatever the device count; the shuffled remainder that does not fill a batch
    is skipped. Under a mesh, each device gets its share of every batch.
    """
    batches, dropout_key = _shuffled_batches(seed, epoch, num_examples, batch_size)
    return sharding.put_batches(batches), _placed_key(dropout_key)


def epoch_calls(seed: int, epoch: int, num_examples: int, batch_size: int,
                steps_per_call: int) -> tuple[tuple[jax.Array, ...], jax.Array]:
    """`epoch_plan`'s batches cut into one block per `train_steps` call, `steps_per_call` rows each (0: the whole
    epoch), and the dropout key."""
    batches, dropout_key = _shuffled_batches(seed, epoch, num_examples, batch_size)
    rows = steps_per_call or max(1, len(batches))
    calls = tuple(sharding.put_batches(batches[start:start + rows]) for start in range(0, len(batches), rows))
    return calls, _placed_key(dropout_key)


def _shuffled_batches(seed: int, epoch: int, num_examples: int, batch_size: int) -> tuple[np.ndarray, shuffle.KeyData]:
    """Drawn on the host (shuffle.py): the very numbers jax.random.permutation gives, with no program to compile."""
    epoch_key = shuffle.fold_in(shuffle.fold_in(shuffle.key(seed), EPOCH_STREAM), epoch)
    shuffle_key, dropout_key = shuffle.split(epoch_key)
    steps = num_examples // batch_size
    order = shuffle.permutation(shuffle_key, num_examples)
    return order[: steps * batch_size].reshape(steps, batch_size), dropout_key


def _placed_key(key_data: shuffle.KeyData) -> jax.Array:
    """A Threefry key from its data, whole on every device."""
    return jax.random.wrap_key_data(sharding.put_whole(np.array(key_data, np.uint32)), impl="threefry2x32")


def batched_logits(apply_fn: Callable, variables: Any, images: jax.Array, batch_size: int) -> jax.Array:
    """Logits (N, 10) for all images, batch by batch; the last batch is padded, never dropped.

    `variables`: what the model is applied with, {"params": ...} and any other collections (TrainState.eval_variables).

    Under a mesh, each batch is split over the devices (rounded up to a multiple of their count).
    """
    count, devices = images.shape[0], sharding.data_devices()
    batch_size = max(1, min(batch_size, count))  # a small split is not padded up to a whole large batch
    batch_size = -(-batch_size // devices) * devices
    num_batches = -(-count // batch_size)
    padded = jnp.zeros((num_batches * batch_size, *images.shape[1:]), images.dtype).at[:count].set(images)

    def body(_, batch_images):
        return None, apply_fn(variables, prepare_images(batch_images), train=False)

    batches = sharding.split_batches(padded.reshape(num_batches, batch_size, *images.shape[1:]))
    _, logits = jax.lax.scan(body, None, batches)
    return logits.reshape(-1, logits.shape[-1])[:count]


@functools.partial(compilation.jit, static_argnames=("apply_fn", "batch_size"))
def predict_logits(apply_fn: Callable, variables: Any, images: jax.Array, batch_size: int) -> jax.Array:
    """`batched_logits` as one program."""
    return batched_logits(apply_fn, variables, images, batch_size)


@functools.partial(compilation.jit, static_argnames=("apply_fn", "batch_size"), fastest_compile=True)  # once a split
def eval_step(apply_fn: Callable, variables: Any, images: jax.Array, labels: jax.Array,
              batch_size: int) -> tuple[Metrics, jax.Array]:
    """Mean cross-entropy and accuracy over every image of a split (the loss without label smoothing), and the
    logits (N, 10) they came from."""
    logits = batched_logits(apply_fn, variables, images, batch_size)
    return {"loss": sparse_categorical_cross_entropy(logits, labels).mean(),
            "accuracy": accuracy(logits, labels).mean()}, logits


def evaluate(apply_fn: Callable, variables: Any, images: jax.Array, labels: jax.Array,
             batch_size: int) -> dict[str, float]:
    """`eval_step`'s metrics as Python floats."""
    metrics, _ = eval_step(apply_fn, variables, images, labels, batch_size)
    return {name: float(value) for name, value in metrics.items()}
