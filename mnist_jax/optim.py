"""Optax optimizers and learning-rate schedules by name: add one to its dict and `TrainConfig` accepts it."""

from collections.abc import Callable
from typing import Any

import optax

ONECYCLE_WARMUP = 0.25  # fraction of the steps spent warming up in the one-cycle schedule

# name -> (peak learning rate, total steps) -> schedule
SCHEDULES: dict[str, Callable[[float, int], optax.Schedule]] = {
    "constant": lambda peak, total_steps: optax.constant_schedule(peak),
    "cosine": lambda peak, total_steps: optax.cosine_decay_schedule(peak, decay_steps=max(total_steps, 1)),
    "onecycle": lambda peak, total_steps: optax.cosine_onecycle_schedule(max(total_steps, 1), peak,
                                                                         pct_start=ONECYCLE_WARMUP),
}

# name -> (schedule, config) -> optimizer
OPTIMIZERS: dict[str, Callable[[optax.Schedule, Any], optax.GradientTransformation]] = {
    "adam": lambda schedule, config: optax.adam(schedule, b1=config.beta1, b2=config.beta2),
    "sgd": lambda schedule, config: optax.sgd(schedule, momentum=config.momentum),
    "adamw": lambda schedule, config: optax.adamw(schedule, b1=config.beta1, b2=config.beta2,
                                                  weight_decay=config.weight_decay),
}


def optimizer_from_config(config: Any, total_steps: int) -> optax.GradientTransformation:
    """The configured optimizer under the configured schedule, peaking at config.learning_rate."""
    schedule = SCHEDULES[config.schedule](config.learning_rate, total_steps)
    return OPTIMIZERS[config.optimizer](schedule, config)
