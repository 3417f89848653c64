"""Flax Linen models, chosen by name; parameters live in a separate pytree."""

import dataclasses
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mnist_jax.errors import UserError
from mnist_jax.layers import BatchLastConv, Conv, ConvMaxPool, max_pool_2x2

NUM_CLASSES = 10
PIXEL_SCALE = 1 / 255  # models see pixels in [0, 1], as in the article


def prepare_images(images_BxHxW: jnp.ndarray) -> jnp.ndarray:
    """Turn uint8 or float pixels in [0, 255], shaped (B, 28, 28), into float32 (B, 28, 28, 1) in [0, 1]."""
    return (images_BxHxW.astype(jnp.float32) * PIXEL_SCALE)[..., None]


class MLP(nn.Module):
    """The article's dense network: Flatten -> [Dense(hidden) -> ReLU] x depth -> Dense(10)."""

    hidden: int = 128
    depth: int = 1
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWx1: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = x_BxHxWx1.reshape((x_BxHxWx1.shape[0], -1))
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(NUM_CLASSES, dtype=self.dtype)(x).astype(jnp.float32)


class CNN(nn.Module):
    """The article's CNN: Conv(3x3) -> ReLU -> MaxPool(2x2) -> Flatten -> Dense -> ReLU -> Dense(10)."""

    filters: int = 32
    hidden: int = 128
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWx1: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        # Conv -> ReLU -> max pooling as one layer: the same function and parameters as nn.Conv, nn.relu and
        # nn.max_pool, faster on XLA:CPU (see layers.py); named as the nn.Conv would be.
        conv_relu_pool = ConvMaxPool(self.filters, (3, 3), padding="VALID", activation=nn.relu, dtype=self.dtype,
                                     name="Conv_0")
        x = conv_relu_pool(x_BxHxWx1)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(NUM_CLASSES, dtype=self.dtype)(x).astype(jnp.float32)


class SpeedrunCNN(nn.Module):
    """A small network for `mnist-jax speedrun`: Conv 5x5 stride 2 -> Conv 3x3 -> MaxPool(2x2) -> Dense -> Dense(10)."""

    # The convolutions and pooling run on (C, H, W, B) arrays (layers.py), faster on XLA:CPU with so few filters;
    # the function and the parameter tree are those of the same network built from nn.Conv and nn.max_pool
    # (tests/test_layers.py). A stride-2 first convolution instead of convolution and pooling computes a quarter
    # of the outputs: two epochs take 35% less time at about the same accuracy (BENCHMARKS.md).
    filters: int = 16  # first convolution; the second has twice as many
    hidden: int = 128
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWx1: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x_1xHxWxB = jnp.transpose(x_BxHxWx1, (3, 1, 2, 0))
        # Named as nn.Conv layers would be, so the parameter tree is the plain network's.
        conv = BatchLastConv(self.filters, (5, 5), strides=(2, 2), dtype=self.dtype, name="Conv_0")
        x_FxHxWxB = nn.relu(conv(x_1xHxWxB))
        x_FxHxWxB = BatchLastConv(2 * self.filters, (3, 3), dtype=self.dtype, name="Conv_1")(x_FxHxWxB)
        # Pooling takes rows and columns from axes 1 and 2 whatever the other two are. ReLU after pooling: the same
        # values and gradients as before it (ReLU is monotonic), on a quarter of the elements.
        x_FxHxWxB = nn.relu(max_pool_2x2(x_FxHxWxB))
        x = jnp.transpose(x_FxHxWxB, (3, 1, 2, 0))  # (B, H, W, F)
        x = x.reshape((x.shape[0], -1))  # the nn.Conv flatten order
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(NUM_CLASSES, dtype=self.dtype)(x).astype(jnp.float32)


class BatchNormCNN(nn.Module):
    """A deeper CNN with BatchNorm (after cdeotte's MNIST-CNN-99.75, pooling for its stride-2 convolutions):
    [Conv 3x3 -> BN -> ReLU] x 2 -> MaxPool -> [Conv 3x3 (2x) -> BN -> ReLU] x 2 -> MaxPool -> Conv 4x4 (4x) -> BN ->
    ReLU -> Dropout -> Dense(10).

    Every convolution is VALID and stride 1 (28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4 -> 1), the im2col form that runs
    fast inside the scanned epoch on XLA:CPU. Its BatchNorm statistics are the "batch_stats" collection.
    """

    filters: int = 32  # the first two convolutions; then twice and four times as many
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxHxWx1: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        f = self.filters
        x = self._conv_bn_relu(x_BxHxWx1, f, 3, train)  # 26x26
        x = max_pool_2x2(self._conv_bn_relu(x, f, 3, train))  # 24x24 -> 12x12
        x = self._conv_bn_relu(x, 2 * f, 3, train)  # 10x10
        x = max_pool_2x2(self._conv_bn_relu(x, 2 * f, 3, train))  # 8x8 -> 4x4
        x = self._conv_bn_relu(x, 4 * f, 4, train)  # 1x1
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(NUM_CLASSES, dtype=self.dtype)(x).astype(jnp.float32)

    def _conv_bn_relu(self, x: jnp.ndarray, features: int, kernel: int, train: bool, stride: int = 1,
                      padding: str = "VALID") -> jnp.ndarray:
        # No bias: BatchNorm's own shift replaces it. Keras' BatchNorm momentum (0.99), not Flax's default (0.9).
        x = Conv(features, (kernel, kernel), stride, padding, use_bias=False, dtype=self.dtype)(x)
        return nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.99, dtype=self.dtype)(x))


class StridedBatchNormCNN(BatchNormCNN):
    """cdeotte's MNIST-CNN-99.75 as published: BatchNormCNN with a 5x5 stride-2 convolution for each pooling, and
    dropout after each block: [Conv-BN-ReLU] x 2 -> Conv 5x5/2 -> Dropout -> [Conv (2x)-BN-ReLU] x 2 -> Conv 5x5/2
    -> Dropout -> Conv 4x4 (4x)-BN-ReLU -> Dropout -> Dense(10).

    About 1.5x the arithmetic of BatchNormCNN; a different network, so an ensemble of both errs less in common.
    """

    @nn.compact
    def __call__(self, x_BxHxWx1: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        f = self.filters
        x = self._conv_bn_relu(x_BxHxWx1, f, 3, train)  # 26x26
        x = self._conv_bn_relu(x, f, 3, train)  # 24x24
        x = self._dropout(self._conv_bn_relu(x, f, 5, train, stride=2, padding="SAME"), train)  # 12x12
        x = self._conv_bn_relu(x, 2 * f, 3, train)  # 10x10
        x = self._conv_bn_relu(x, 2 * f, 3, train)  # 8x8
        x = self._dropout(self._conv_bn_relu(x, 2 * f, 5, train, stride=2, padding="SAME"), train)  # 4x4
        x = self._conv_bn_relu(x, 4 * f, 4, train)  # 1x1
        x = self._dropout(x.reshape((x.shape[0], -1)), train)
        return nn.Dense(NUM_CLASSES, dtype=self.dtype)(x).astype(jnp.float32)

    def _dropout(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        return nn.Dropout(self.dropout, deterministic=not train)(x)


MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN, "speedrun": SpeedrunCNN, "bncnn": BatchNormCNN,
                                      "stridecnn": StridedBatchNormCNN}
# Incremented when a network's function changes but its parameter shapes do not, so that a checkpoint of the old
# network cannot silently restore into the new one. Checkpoints record it; a network not listed, and a checkpoint
# without the field, is version 1. speedrun 2: the first convolution has stride 2 and no pooling after it
# (version 1 pooled, with the same shapes).
MODEL_VERSIONS: dict[str, int] = {"speedrun": 2}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def model_hparams(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Pick, from a dict of options (e.g. the config), the hyperparameters the named model takes."""
    fields = {f.name for f in dataclasses.fields(_model_class(name)) if f.name not in ("parent", "name")}
    return {key: value for key, value in options.items() if key in fields}


def create_model(name: str, **hparams: Any) -> nn.Module:
    """Build a registered model; `dtype` may be given by name ("float32", "bfloat16")."""
    if isinstance(hparams.get("dtype"), str):
        hparams["dtype"] = DTYPES[hparams["dtype"]]
    return _model_class(name)(**hparams)


def model_version(name: str) -> int:
    """The current version of a network (MODEL_VERSIONS)."""
    return MODEL_VERSIONS.get(name, 1)


def model_from_config(config: Any) -> nn.Module:
    """The model a TrainConfig describes, refused in one sentence if its parameters cannot fit the device."""
    model = create_model(config.model, **model_hparams(config.model, config.to_dict()))
    check_fits(model)  # every command that builds from flags (train, summary, benchmark) goes through here
    return model


def abstract_params(model: nn.Module) -> Any:
    """The parameter pytree's shapes and dtypes, without allocating or computing anything."""
    return abstract_variables(model)["params"]


def abstract_variables(model: nn.Module) -> Any:
    """Every variable collection ("params", and "batch_stats" for BatchNorm) as shapes and dtypes only."""
    dummy = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), dummy)


def check_fits(model: nn.Module, device: jax.Device | None = None) -> None:
    """Refuse a network whose parameters alone exceed the device's memory, before XLA tries to allocate them.

    XLA reports most failed allocations as errors, but aborts the whole process on an array too large to describe.
    """
    needed = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract_variables(model)))
    available = device_memory(device or jax.local_devices()[0])
    if needed > available:
        raise UserError(f"The network does not fit in memory: its parameters alone take {needed / 2**30:,.1f} GiB, "
                        f"the device has {available / 2**30:,.1f} GiB; use a smaller --hidden, --depth or --filters.")


def device_memory(device: jax.Device) -> int:
    """Bytes a device holds: an accelerator's own memory, or the host's RAM for the CPU (which reports none)."""
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _model_class(name: str) -> type[nn.Module]:
    if name not in MODELS:
        raise UserError(f"--model must be one of {', '.join(MODELS)}; got {name!r}.")
    return MODELS[name]
