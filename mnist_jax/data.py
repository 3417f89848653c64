"""Load MNIST-like datasets as uint8 arrays and split off a stratified validation set."""

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from mnist_jax import idx
from mnist_jax.errors import DataError, first_line

log = logging.getLogger(__name__)

DATA_DIR_ENV = "MNIST_JAX_DATA_DIR"
DIGIT_NAMES = tuple(str(digit) for digit in range(10))  # MNIST's class names
IMAGE_SIZE = 28  # every dataset is served as 28x28 single-channel uint8 images
DIGIT_BOX = 20  # MNIST digits fill a 20x20 box centred in the 28x28 image
DIGITS_TEST_FRACTION = 0.2  # scikit-learn's digits ship without a test split; hold this much out
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclasses.dataclass(frozen=True)
class Split:
    """Images uint8 (N, 28, 28) and integer labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Datasets:
    """Train, validation (None when val_split is 0) and test splits of one dataset."""

    name: str
    train: Split
    val: Split | None
    test: Split
    class_names: tuple[str, ...] = DIGIT_NAMES


def load_datasets(dataset: str = "mnist", source: str = "idx", data_dir: str | None = None,
                  val_split: float = 0.2, seed: int = 0) -> Datasets:
    """Load a dataset's train and test splits and hold out a stratified validation split."""
    train, test = load_train_test(dataset, source, data_dir)
    train, val = split_validation(train, val_split, seed)
    log.info("Loaded %s: %d train, %d validation, %d test images.",
             dataset, len(train), len(val) if val else 0, len(test))
    return Datasets(dataset, train, val, test, class_names(dataset, source, data_dir))


def class_names(dataset: str, source: str, data_dir: str | None) -> tuple[str, ...]:
    """The label names: the digits, or what a TFDS dataset declares (e.g. fashion_mnist's "T-shirt/top")."""
    if source != "tfds":
        return DIGIT_NAMES
    import tensorflow_datasets as tfds

    info = tfds.data_source(dataset, split="test", data_dir=data_dir, download=False).dataset_info
    names = tuple(info.features["label"].names)
    return names if len(names) == len(DIGIT_NAMES) else DIGIT_NAMES


def load_train_test(dataset: str, source: str, data_dir: str | None) -> tuple[Split, Split]:
    """Return the full training split and the test split of a dataset; neither may be empty."""
    if source == "tfds":
        train, test = load_tfds(dataset, data_dir)
    elif dataset == "digits":
        train, test = load_digits()
    elif dataset != "mnist":
        raise DataError(f"Dataset {dataset!r} is only available through --source tfds.")
    else:
        train, test = load_mnist_dir(resolve_mnist_dir(data_dir))
    for name, split in (("training", train), ("test", test)):
        if len(split) == 0:  # metrics of nothing are NaN, and every figure of them fails
            raise DataError(f"The {dataset} {name} split has no images.")
    return train, test


def resolve_mnist_dir(data_dir: str | None) -> Path:
    """Use the given folder, else $MNIST_JAX_DATA_DIR, else download MNIST once into the cache."""
    folder = data_dir or os.environ.get(DATA_DIR_ENV)
    if folder:
        return Path(folder).expanduser()
    from mnist_jax.download import fetch_mnist  # only needed when nothing is given

    return fetch_mnist()


def load_mnist_dir(folder: Path) -> tuple[Split, Split]:
    """Read the four MNIST IDX files (gzip or raw) from a folder."""
    if folder.exists() and not folder.is_dir():
        raise DataError(f"MNIST data directory {folder} is a file, not a folder; pass --data-dir or set "
                        f"{DATA_DIR_ENV}.")
    if not folder.is_dir():
        raise DataError(f"MNIST data directory {folder} does not exist; pass --data-dir or set {DATA_DIR_ENV}.")
    paths = {key: _find_idx_file(folder, name) for key, name in IDX_FILES.items()}
    train = _read_split(paths["train_images"], paths["train_labels"])
    test = _read_split(paths["test_images"], paths["test_labels"])
    return train, test


def _find_idx_file(folder: Path, name: str) -> Path:
    """Prefer the .gz file, accept the decompressed one."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"MNIST data directory {folder} has no {name}.gz (or {name}).")


def _read_split(images_path: Path, labels_path: Path) -> Split:
    # The reader refuses other image sizes from the header, before decompressing any pixels.
    images = idx.read_images(images_path, image_shape=(IMAGE_SIZE, IMAGE_SIZE))
    labels = idx.read_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels.")
    return Split(images, labels)


def load_digits() -> tuple[Split, Split]:
    """scikit-learn's bundled 8x8 digits, resized into MNIST's 20x20 box on a 28x28 canvas."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    everything = Split(_digits_to_mnist(digits.images), digits.target.astype(np.int32))
    return stratified_split(everything, DIGITS_TEST_FRACTION, seed=0)


def _digits_to_mnist(images_8x8: np.ndarray) -> np.ndarray:
    """Scale 0-16 intensities to 0-255 and resize bilinearly to 20x20, padded to 28x28."""
    from PIL import Image

    margin = (IMAGE_SIZE - DIGIT_BOX) // 2
    out = np.zeros((len(images_8x8), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i, image in enumerate(images_8x8):
        small = Image.fromarray((image * (255 / 16)).astype(np.float32), mode="F")
        box = np.asarray(small.resize((DIGIT_BOX, DIGIT_BOX), Image.Resampling.BILINEAR))
        out[i, margin:margin + DIGIT_BOX, margin:margin + DIGIT_BOX] = np.clip(box, 0, 255).round()
    return out


def load_tfds(name: str, data_dir: str | None) -> tuple[Split, Split]:
    """Read a prepared TFDS dataset of 28x28x1 images with tfds.data_source (no TensorFlow needed)."""
    import tensorflow_datasets as tfds

    try:
        # download=False: preparing a dataset needs TensorFlow and a network; we read prepared data only.
        splits = [tfds.data_source(name, split=split, data_dir=data_dir, download=False) for split in ("train", "test")]
    except Exception as error:  # TFDS raises many types for missing or unprepared data
        raise DataError(f"Cannot open TFDS dataset {name!r} (data_dir={data_dir}): {first_line(error)}") from None
    return tuple(_tfds_split(name, source) for source in splits)


def _tfds_split(name: str, source) -> Split:
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"]) for r in records]) if records else np.zeros((0, 28, 28, 1))
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
        raise DataError(f"TFDS dataset {name!r} has images of shape {images.shape[1:]}, expected (28, 28, 1).")
    labels = np.array([int(r["label"]) for r in records], np.int32)
    return Split(images[..., 0].astype(np.uint8), labels)


def split_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Hold out a seeded, stratified fraction of the training split for validation."""
    if fraction == 0:
        return train, None
    return stratified_split(train, fraction, seed)


def stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off `fraction` of every class (at least one image each), chosen with a seeded shuffle."""
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(split), bool)
    for label in np.unique(split.labels):
        members = rng.permutation(np.flatnonzero(split.labels == label))
        count = max(1, round(len(members) * fraction))
        if count >= len(members):
            raise DataError(f"Cannot hold out {fraction:.0%} of class {label}: it has only {len(members)} images.")
        held_out[members[:count]] = True
    keep = ~held_out
    return Split(split.images[keep], split.labels[keep]), Split(split.images[held_out], split.labels[held_out])
