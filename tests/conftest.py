"""Shared fixtures: small IDX datasets made on the fly, and the real MNIST folder when present."""

import os
from pathlib import Path

import jax
import numpy as np
import pytest

from mnist_jax import data, idx

# Tests compare our layers with reference ones in float32. GPUs default to TF32 matrix products, whose rounding
# (~1e-3) would swamp those comparisons, so tests ask every backend for full float32 precision.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """No test writes into the user's ~/.cache; and commands run in tests compile afresh, without the persistent
    compile cache, so that what a test counts or times does not depend on the tests before it
    (tests/test_compile_cache.py turns it on where it is the subject)."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("MNIST_JAX_CACHE_DIR"):
            patch.setenv("MNIST_JAX_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        patch.setenv("MNIST_JAX_COMPILE_CACHE", "0")
        yield


class SteadyClock:
    """A stand-in for the `time` module whose perf_counter advances `tick` seconds a reading, so each timed call
    lasts exactly one tick: timings tested without the clock (a power-of-two tick keeps the subtractions exact)."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def write_mnist_dir(folder: Path, train: data.Split, test: data.Split, gzip: bool = True) -> Path:
    """Write splits as the four MNIST IDX files."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzip else ""
    idx.write_idx(folder / f"train-images-idx3-ubyte{suffix}", train.images)
    idx.write_idx(folder / f"train-labels-idx1-ubyte{suffix}", train.labels)
    idx.write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", test.images)
    idx.write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", test.labels)
    return folder


@pytest.fixture(scope="session")
def digits_mnist_dir(tmp_path_factory) -> Path:
    """scikit-learn's real digits (28x28) written as MNIST IDX files: small but learnable."""
    train, test = data.load_digits()
    return write_mnist_dir(tmp_path_factory.mktemp("digits_idx"), train, test)


@pytest.fixture
def tiny_mnist_dir(tmp_path) -> Path:
    """Random images and labels (40 train, 10 test) as MNIST IDX files, for format tests."""
    rng = np.random.default_rng(0)
    train = data.Split(rng.integers(0, 256, (40, 28, 28), np.uint8), np.arange(40, dtype=np.int32) % 10)
    test = data.Split(rng.integers(0, 256, (10, 28, 28), np.uint8), np.arange(10, dtype=np.int32))
    return write_mnist_dir(tmp_path / "mnist", train, test)


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    """The real MNIST files from $MNIST_JAX_DATA_DIR; skip when they are not there."""
    folder = os.environ.get(data.DATA_DIR_ENV)
    if not folder or not (Path(folder) / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not available: set {data.DATA_DIR_ENV} to a folder with the four IDX files")
    return Path(folder)
