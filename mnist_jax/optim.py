"""Optax optimizers and learning-rate schedules, built from the configuration."""

import optax

from mnist_jax.config import TrainConfig

ONECYCLE_WARMUP = 0.25  # fraction of the steps spent warming up in the one-cycle schedule


def learning_rate_schedule(config: TrainConfig, total_steps: int) -> optax.Schedule:
    """A constant, cosine-decay or one-cycle schedule peaking at config.learning_rate."""
    peak = config.learning_rate
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(peak, decay_steps=max(total_steps, 1))
    if config.schedule == "onecycle":
        return optax.cosine_onecycle_schedule(max(total_steps, 1), peak, pct_start=ONECYCLE_WARMUP)
    return optax.constant_schedule(peak)


def create_optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam (the default), SGD with momentum, or AdamW with decoupled weight decay."""
    schedule = learning_rate_schedule(config, total_steps)
    if config.optimizer == "sgd":
        return optax.sgd(schedule, momentum=config.momentum)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, b1=config.beta1, b2=config.beta2, weight_decay=config.weight_decay)
    return optax.adam(schedule, b1=config.beta1, b2=config.beta2)
