"""Predict digits with a trained model: from a checkpoint or in memory, for arrays or image files.

Input contract: pixel values 0-255, white digit on black, 28x28, exactly like MNIST's uint8 files.
Float arrays use the same 0-255 scale (not 0-1); the model's own preprocessing divides by 255.
"""

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax.checkpoints import restore_for_inference
from mnist_jax.data import DIGIT_NAMES, Split
from mnist_jax.errors import InputError
from mnist_jax.images import load_mnist_image
from mnist_jax.models import prepare_images
from mnist_jax.rundir import RunDir, run_splits

log = logging.getLogger(__name__)

IMAGE_SHAPE = (28, 28)
MAX_PIXEL = 255.0
# Every call runs on one of these batch shapes, so any N compiles at most len(BUCKETS) programs;
# each bucket is 8x the previous one, so padding wastes less than 8x on the remainder.
BUCKETS = (1, 8, 64, 512)
ACCEPTED = ("uint8 or float pixels in 0-255 shaped (28, 28), (N, 28, 28) or (N, 28, 28, 1), "
            "or a path or list of paths to PNG/JPEG files")

Images = np.ndarray | jax.Array | str | os.PathLike | Sequence[Any]


class Predictor:
    """A model and its parameters, with batched, jitted inference on a few fixed batch shapes."""

    def __init__(self, model: nn.Module, params: Any, meta: dict[str, Any] | None = None, epoch: int | None = None,
                 class_names: Sequence[str] | None = None, buckets: Sequence[int] = BUCKETS):
        self.model = model
        self.params = params
        self.meta = meta or {}
        self.epoch = epoch
        self.class_names = tuple(class_names or self.meta.get("class_names") or DIGIT_NAMES)
        self.buckets = _checked_buckets(buckets)
        # Parameters are an argument, not a closure constant, so they are not baked into the compiled program.
        self._logits_fn = jax.jit(lambda params, pixels_BxHxW: model.apply(
            {"params": params}, prepare_images(pixels_BxHxW), train=False))

    @classmethod
    def load(cls, path: str | Path, which: str | int = "best", model: nn.Module | None = None,
             buckets: Sequence[int] = BUCKETS) -> "Predictor":
        """Restore a checkpoint ("best", "latest" or an epoch) of a run or checkpoints directory.

        `model`: the network to restore into; needed for a run trained with a model given in Python.
        """
        epoch, model, params, meta = restore_for_inference(path, which, model)
        log.info("Restored the %s model of epoch %d from %s.", type(model).__name__, epoch, path)
        return cls(model, params, meta=meta, epoch=epoch, buckets=buckets)

    def predict_logits(self, images: Images) -> np.ndarray:
        """Logits float32 (N, 10) for a batch of images (see the module docstring for what is accepted)."""
        pixels_NxHxW = as_pixels(images)
        chunks = [self._logits_fn(self.params, padded) for padded in self._padded_chunks(pixels_NxHxW)]
        # Every chunk is dispatched before the first is read back, so host and device work overlap.
        logits_NxK = np.concatenate([np.asarray(chunk) for chunk in chunks])
        return logits_NxK[: len(pixels_NxHxW)]

    def predict_proba(self, images: Images) -> np.ndarray:
        """Class probabilities float32 (N, 10)."""
        return softmax(self.predict_logits(images))

    def predict(self, images: Images) -> np.ndarray:
        """Predicted labels int (N,)."""
        return self.predict_logits(images).argmax(axis=-1)

    def bucket_for(self, count: int) -> int:
        """The smallest batch shape that holds `count` images (at most the largest bucket)."""
        return next((size for size in self.buckets if size >= count), self.buckets[-1])

    def _padded_chunks(self, pixels_NxHxW: np.ndarray) -> list[np.ndarray]:
        """Chunks of the largest bucket, the remainder zero-padded up to the next bucket."""
        largest, chunks = self.buckets[-1], []
        for start in range(0, len(pixels_NxHxW), largest):
            chunk = pixels_NxHxW[start:start + largest]
            padding = self.bucket_for(len(chunk)) - len(chunk)
            chunks.append(np.pad(chunk, ((0, padding), (0, 0), (0, 0))) if padding else chunk)
        return chunks


def evaluate_run(path: str | Path, which: str | int = "best", data_dir: str | None = None,
                 model: nn.Module | None = None) -> dict[str, Any]:
    """Test loss and accuracy of one checkpoint of a run, on every test image."""
    from mnist_jax.steps import evaluate

    run_dir = RunDir.open(path)
    epoch, model, params, meta = restore_for_inference(run_dir.path, which, model)
    config, _, test = run_splits(run_dir.path, meta, data_dir)
    images, labels = jax.device_put(test.images), jax.device_put(test.labels)
    metrics = evaluate(model.apply, params, images, labels, config.eval_batch_size)
    return {"epoch": epoch, "test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
            "test_images": len(test)}


def as_pixels(images: Images) -> np.ndarray:
    """Validate arrays or load image files into float32 (N, 28, 28) pixels in 0-255."""
    paths = _as_paths(images)
    if paths is not None:
        return np.stack([load_mnist_image(path) for path in paths]).astype(np.float32)
    return _validated_array(images)


def softmax(logits_NxK: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, in float32."""
    shifted = logits_NxK - logits_NxK.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def random_test_images(run_path: str | Path, meta: dict[str, Any], count: int, seed: int = 0,
                       data_dir: str | None = None) -> tuple[np.ndarray, Split]:
    """Draw `count` distinct test images (indices and split) of the dataset the run was trained on."""
    config, _, test = run_splits(run_path, meta, data_dir)
    if not 1 <= count <= len(test):
        raise InputError(f"Cannot draw {count} random test images: the {config.dataset} test set has {len(test)}.")
    indices = np.sort(np.random.default_rng(seed).choice(len(test), size=count, replace=False))
    return indices, Split(test.images[indices], test.labels[indices])


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _as_paths(images: Images) -> list[str | os.PathLike] | None:
    """The paths given (one or a list), or None when `images` is not paths."""
    if _is_path(images):
        return [images]
    if not isinstance(images, (list, tuple)):
        return None
    if not images:
        raise InputError(f"Got an empty list; expected at least one image: {ACCEPTED}.")
    kinds = {_is_path(item) for item in images}
    if kinds == {True}:
        return list(images)
    if kinds == {True, False}:
        raise InputError(f"Got a list mixing paths and arrays; give one or the other: {ACCEPTED}.")
    return None


def _validated_array(images: Any) -> np.ndarray:
    """Check dtype, shape and values of an image array and return it as float32 (N, 28, 28)."""
    try:
        array = np.asarray(images)
    except (TypeError, ValueError) as error:
        log.debug("numpy cannot make an array of the images: %s", error)  # several sentences, not for the user
        raise InputError(f"Cannot read the images as an array (ragged lists or values that are not numbers); "
                         f"expected {ACCEPTED}.") from None
    is_float = jnp.issubdtype(array.dtype, jnp.floating)
    if array.dtype == bool or not (is_float or jnp.issubdtype(array.dtype, jnp.integer)):
        raise InputError(f"Got images of dtype {array.dtype}; expected {ACCEPTED}.")
    with np.errstate(over="ignore"):  # huge values become infinity, refused just below instead of warned about
        array = _as_batch(array).astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"The images contain NaN or infinite values; expected {ACCEPTED}.")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > MAX_PIXEL:
        raise InputError(f"Pixel values range from {low:g} to {high:g}; expected {ACCEPTED}.")
    if is_float and 0 < high <= 1:
        log.warning("Float pixels all lie in [0, 1]; the predictor expects 0-255, so these look almost black.")
    return array


def _as_batch(array: np.ndarray) -> np.ndarray:
    """Reshape (28, 28), (N, 28, 28) or (N, 28, 28, 1) to (N, 28, 28)."""
    if array.shape == IMAGE_SHAPE:
        array = array[None]
    elif array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != IMAGE_SHAPE:
        raise InputError(f"Got images shaped {array.shape}; expected {ACCEPTED}.")
    if len(array) == 0:
        raise InputError(f"Got an empty batch of shape {array.shape}; expected at least one image: {ACCEPTED}.")
    return array


def _checked_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(sorted({int(size) for size in buckets}))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"Batch buckets must be positive integers, got {buckets}.")
    return sizes
