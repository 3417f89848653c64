"""Predict digits with a trained model: from a checkpoint or in memory, for arrays or image files.

Input contract: pixel values 0-255, white digit on black, 28x28, exactly like MNIST's uint8 files.
Float arrays use the same 0-255 scale (not 0-1); the model's own preprocessing divides by 255.
"""

import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import augment, layers
from mnist_jax.checkpoints import restore_variables
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
    """A model and its variables, with batched, jitted inference on a few fixed batch shapes.

    Optionally with test-time augmentation (`tta`: the probabilities averaged over augment.TTA_VIEWS), or an
    ensemble of several predictors (`Predictor.ensemble`, or `Predictor.load` with several runs), whose
    probabilities are averaged; an ensemble's `model`, `params` and `meta` are its first member's.
    """

    def __init__(self, model: nn.Module, params: Any, meta: dict[str, Any] | None = None, epoch: int | None = None,
                 class_names: Sequence[str] | None = None, buckets: Sequence[int] = BUCKETS,
                 model_state: dict[str, Any] | None = None, tta: bool = False):
        self.model = model
        self.params = params
        self.model_state = dict(model_state or {})  # BatchNorm's statistics, for a model that has them
        self.meta = meta or {}
        self.epoch = epoch
        self.class_names = tuple(class_names or self.meta.get("class_names") or DIGIT_NAMES)
        self.buckets = _checked_buckets(buckets)
        self.tta = tta
        self.members: tuple[Predictor, ...] = (self,)
        # Variables are an argument, not a closure constant, so they are not baked into the compiled program.
        self._logits_fn = jax.jit(functools.partial(_averaged_logits if tta else _logits, model.apply))

    @property
    def variables(self) -> dict[str, Any]:
        """What the model is applied with: {"params": ..., and any other collection}."""
        return {"params": self.params, **self.model_state}

    @classmethod
    def load(cls, path: str | Path | Sequence[str | Path], which: str | int = "best", model: nn.Module | None = None,
             buckets: Sequence[int] = BUCKETS, tta: bool = False) -> "Predictor":
        """Restore a checkpoint ("best", "latest" or an epoch) of a run or checkpoints directory; of several, an
        ensemble of them.

        `model`: the network to restore into; needed for a run trained with a model given in Python.
        """
        paths = [path] if _is_path(path) else list(path)
        if not paths:
            raise InputError("Give at least one run directory to load.")
        members = []
        for one in paths:
            epoch, network, variables, meta = restore_variables(one, which, model)
            log.info("Restored the %s model of epoch %d from %s.", type(network).__name__, epoch, one)
            params, model_state = variables.pop("params"), variables
            members.append(cls(network, params, meta=meta, epoch=epoch, buckets=buckets, model_state=model_state,
                               tta=tta))
        return members[0] if len(members) == 1 else cls.ensemble(members)

    @classmethod
    def ensemble(cls, members: Sequence["Predictor"]) -> "Predictor":
        """One predictor whose probabilities are the mean of the members'."""
        first = members[0]
        ensemble = cls(first.model, first.params, meta=first.meta, epoch=first.epoch, class_names=first.class_names,
                       buckets=first.buckets, model_state=first.model_state, tta=first.tta)
        ensemble.members = tuple(members)
        return ensemble

    def predict_logits(self, images: Images) -> np.ndarray:
        """Logits float32 (N, 10) for a batch of images (see the module docstring for what is accepted); of an
        ensemble, or with TTA, the log of the averaged probabilities."""
        pixels_NxHxW = as_pixels(images)
        if len(self.members) == 1:
            return self._member_logits(pixels_NxHxW)
        probabilities_NxK = np.mean([softmax(member._member_logits(pixels_NxHxW)) for member in self.members], 0)
        return np.log(np.maximum(probabilities_NxK, np.finfo(np.float32).tiny))

    def predict_proba(self, images: Images) -> np.ndarray:
        """Class probabilities float32 (N, 10)."""
        return softmax(self.predict_logits(images))

    def predict(self, images: Images) -> np.ndarray:
        """Predicted labels int (N,)."""
        return self.predict_logits(images).argmax(axis=-1)

    def bucket_for(self, count: int) -> int:
        """The smallest batch shape that holds `count` images (at most the largest bucket)."""
        return next((size for size in self.buckets if size >= count), self.buckets[-1])

    def _member_logits(self, pixels_NxHxW: np.ndarray) -> np.ndarray:
        chunks = [self._logits_fn(self.variables, padded) for padded in self._padded_chunks(pixels_NxHxW)]
        # Every chunk is dispatched before the first is read back, so host and device work overlap.
        logits_NxK = np.concatenate([np.asarray(chunk) for chunk in chunks])
        return logits_NxK[: len(pixels_NxHxW)]

    def _padded_chunks(self, pixels_NxHxW: np.ndarray) -> list[np.ndarray]:
        """Chunks of the largest bucket, the remainder zero-padded up to the next bucket."""
        largest, chunks = self.buckets[-1], []
        for start in range(0, len(pixels_NxHxW), largest):
            chunk = pixels_NxHxW[start:start + largest]
            padding = self.bucket_for(len(chunk)) - len(chunk)
            chunks.append(np.pad(chunk, ((0, padding), (0, 0), (0, 0))) if padding else chunk)
        return chunks


def _logits(apply_fn: Callable, variables: Any, pixels_BxHxW: jax.Array) -> jax.Array:
    with layers.native_ops():  # no loop in this program: XLA's own convolution and pooling are the fast ones
        return apply_fn(variables, prepare_images(pixels_BxHxW), train=False)


def _averaged_logits(apply_fn: Callable, variables: Any, pixels_BxHxW: jax.Array) -> jax.Array:
    """The log of the probabilities averaged over the test-time views of each image (augment.TTA_VIEWS)."""
    views_VxBxHxW = augment.views(pixels_BxHxW)
    logits_VxBxK = jax.vmap(lambda view: _logits(apply_fn, variables, view))(views_VxBxHxW)
    return jax.nn.logsumexp(jax.nn.log_softmax(logits_VxBxK), axis=0) - jnp.log(len(views_VxBxHxW))


def evaluate_run(path: str | Path, which: str | int = "best", data_dir: str | None = None,
                 model: nn.Module | None = None) -> dict[str, Any]:
    """Test loss and accuracy of one checkpoint of a run, on every test image."""
    from mnist_jax.steps import evaluate

    run_dir = RunDir.open(path)
    epoch, model, variables, meta = restore_variables(run_dir.path, which, model)
    config, _, test = run_splits(run_dir.path, meta, data_dir)
    images, labels = jax.device_put(test.images), jax.device_put(test.labels)
    metrics = evaluate(model.apply, variables, images, labels, config.eval_batch_size)
    return {"epoch": epoch, "test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
            "test_images": len(test)}


def evaluate_runs(paths: Sequence[str | Path], which: str | int = "best", data_dir: str | None = None,
                  tta: bool = False) -> dict[str, Any]:
    """Test loss and accuracy of an ensemble of runs (their probabilities averaged) and of each member.

    With `tta`, each member's probabilities are first averaged over augment.TTA_VIEWS of every image.
    """
    members, test, names = [], None, []
    for path in paths:
        run_dir = RunDir.open(path)
        predictor = Predictor.load(run_dir.path, which, tta=tta)
        config, _, member_test = run_splits(run_dir.path, predictor.meta, data_dir)
        if test is not None and config.dataset != names[0][1]:
            raise InputError(f"{path} was trained on {config.dataset}, {paths[0]} on {names[0][1]}: an ensemble "
                             f"needs one test set.")
        test = member_test if test is None else test
        members.append(predictor)
        names.append((str(path), config.dataset))
    member_probabilities = [member.predict_proba(test.images) for member in members]
    results = [{"run_dir": name, "epoch": member.epoch, **_scored(probabilities, test.labels)}
               for (name, _), member, probabilities in zip(names, members, member_probabilities)]
    ensemble = _scored(np.mean(member_probabilities, axis=0), test.labels)
    return {**ensemble, "test_images": len(test), "tta": tta, "members": results}


def _scored(probabilities_NxK: np.ndarray, labels_N: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy of predicted probabilities."""
    chosen_N = probabilities_NxK[np.arange(len(labels_N)), labels_N]
    return {"test_accuracy": float((probabilities_NxK.argmax(axis=-1) == labels_N).mean()),
            "test_loss": float(-np.log(np.maximum(chosen_N, np.finfo(np.float32).tiny)).mean())}


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
