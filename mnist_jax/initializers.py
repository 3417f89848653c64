"""Initial parameters: Flax's own per-layer draws, or the same distributions from one random draw."""

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# jax.nn.initializers.variance_scaling divides by the standard deviation of a standard normal truncated to [-2, 2].
TRUNCATED_NORMAL_STDDEV = .87962566103423978


def flax_params(model: nn.Module, rng: jax.Array, images: jax.Array) -> Any:
    """Flax's own initial values: each layer draws its parameters with its own initialisers."""
    return model.init(rng, images)["params"]


def one_draw_params(model: nn.Module, rng: jax.Array, images: jax.Array) -> Any:
    """LeCun-normal kernels, zero biases and unit (BatchNorm) scales, as Flax's defaults, with every kernel cut
    from one random draw.

    Flax derives a key per layer and draws each kernel on its own; XLA:CPU then compiles a random-number generator
    per draw. One draw compiles once: the initialisation program compiles in under half the time. The values
    differ from Flax's, the distributions do not, for layers that keep Flax's default initialisers (every layer
    here does): a layer's own `kernel_init` is not seen, only the parameter's name.
    """
    shapes = jax.eval_shape(model.init, rng, images)["params"]
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    for path, leaf in leaves:
        if _name(path) not in ("kernel", "bias", "scale"):
            raise ValueError(f"one_draw knows only kernels, biases and scales, not {jax.tree_util.keystr(path)}.")
    kernel_sizes = [leaf.size for path, leaf in leaves if _name(path) == "kernel"]
    draw = jax.random.truncated_normal(rng, -2.0, 2.0, (sum(kernel_sizes),))
    params, offset = [], 0
    for path, leaf in leaves:
        if _name(path) in ("bias", "scale"):
            params.append((jnp.zeros if _name(path) == "bias" else jnp.ones)(leaf.shape, leaf.dtype))
            continue
        fan_in = math.prod(leaf.shape[:-1])  # every input to one output unit, as variance_scaling counts it
        stddev = math.sqrt(1.0 / fan_in) / TRUNCATED_NORMAL_STDDEV
        params.append((draw[offset:offset + leaf.size].reshape(leaf.shape) * stddev).astype(leaf.dtype))
        offset += leaf.size
    return jax.tree_util.tree_unflatten(treedef, params)


def _name(path: tuple) -> str:
    return path[-1].key


# name -> (model, rng, images) -> parameters; TrainConfig.init takes these names.
INITS: dict[str, Callable[[nn.Module, jax.Array, jax.Array], Any]] = {"flax": flax_params, "one_draw": one_draw_params}
