"""mnist_jax: the classic MNIST workflow in pure JAX, Flax, Optax and Orbax.

The public API: `TrainConfig`, `train_and_evaluate` (with your own model, loss or optimizer if you like),
`TrainResult` and `Predictor`. They are imported on first use, so `import mnist_jax` stays quick.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["Predictor", "TrainConfig", "TrainResult", "train_and_evaluate"]

_HOMES = {"TrainConfig": "mnist_jax.config", "train_and_evaluate": "mnist_jax.train", "TrainResult": "mnist_jax.train",
          "Predictor": "mnist_jax.predictor"}

if TYPE_CHECKING:
    from mnist_jax.config import TrainConfig
    from mnist_jax.predictor import Predictor
    from mnist_jax.train import TrainResult, train_and_evaluate


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'mnist_jax' has no attribute {name!r}")
