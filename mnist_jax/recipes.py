"""Named recipes: groups of TrainConfig fields that `mnist-jax train --recipe NAME` starts from.

One field a line, like a config file; flags given beside --recipe override its fields. Each recipe's measured test
accuracy and time on the 2-core CPU are in BENCHMARKS.md, with the command that reproduces them.
"""

from typing import Any

from mnist_jax.errors import UserError

RECIPES: dict[str, dict[str, Any]] = {
    # The Keras article's final model and settings: its CNN, Adam at a constant 1e-3, batch 64, 3 epochs, a 20%
    # validation split. mnist-jax train --recipe article
    "article": {
        "model": "cnn",  # Conv 32 3x3 -> ReLU -> MaxPool -> Dense 128 -> ReLU -> Dense 10
        "filters": 32,
        "hidden": 128,
        "dropout": 0.0,
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "schedule": "constant",
        "loss": "sparse",
        "label_smoothing": 0.0,
        "batch_size": 64,
        "epochs": 3,
        "val_split": 0.2,
    },
    # The fastest recipe we know to 99% test accuracy (`mnist-jax speedrun` times it): two epochs of a small
    # network on all 60,000 training images (the test set stays untouched until the end). Why each value:
    # BENCHMARKS.md and mnist_jax/speedrun.py. mnist-jax train --recipe speedrun
    "speedrun": {
        "model": "speedrun",  # Conv 8 5x5 stride 2 -> Conv 16 3x3 -> MaxPool -> Dense 128 -> Dense 10
        "filters": 8,
        "hidden": 128,
        "batch_size": 128,
        "epochs": 2,
        "optimizer": "adam",
        "learning_rate": 8e-3,
        "beta1": 0.7,  # short-memory betas suit two epochs
        "beta2": 0.9,
        "schedule": "onecycle",
        "label_smoothing": 0.05,  # 0.1 left three of 40 seeds under 99.0%
        "val_split": 0.0,  # train on every training image; a fixed schedule, no selection
        "steps_per_call": 0,  # the whole epoch in one jitted call
        "fast_compile": True,  # compile in half the time; a net gain for a run this short
        "eval_batch_size": 250,  # stays in cache: a faster test evaluation
        "init": "one_draw",  # compiles the initialisation in half the time
    },
    # Our most accurate single model within 20 minutes on the 2-core CPU: a BatchNorm CNN (cdeotte's shape, with
    # pooling) on all 60,000 training images with random warps, label smoothing, a one-cycle schedule and a moving
    # average of the weights; a fixed schedule, no selection. mnist-jax train --recipe best
    "best": {
        "model": "bncnn",  # [Conv-BN-ReLU] x2 -> MaxPool -> [Conv-BN-ReLU] x2 -> MaxPool -> Conv-BN-ReLU -> Dense 10
        "filters": 32,
        "dropout": 0.25,
        "batch_size": 64,
        "epochs": 15,
        "optimizer": "adam",
        "learning_rate": 3e-3,
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        "rotation": 12.0,  # degrees either way
        "zoom": 0.12,
        "shift": 0.1,
        "ema": 0.999,
        "val_split": 0.0,  # train on every training image; a fixed schedule, no selection
    },
}


def recipe(name: str) -> dict[str, Any]:
    """The fields a recipe sets."""
    if name not in RECIPES:
        raise UserError(f"--recipe must be one of {', '.join(RECIPES)}; got {name!r}.")
    return dict(RECIPES[name])


def recipe_config(name: str, base: Any = None) -> Any:
    """`base` (the defaults) with a recipe's fields set."""
    from mnist_jax.config import TrainConfig

    return (base or TrainConfig()).replace(**recipe(name))
