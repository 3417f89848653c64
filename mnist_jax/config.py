"""The one source of configuration: a frozen dataclass with a comment on every field.

The comments are the documentation: `mnist-jax train --help` shows each one as its flag's help (field_docs()).
Fields whose value names a registered piece (model, loss, optimizer, schedule, init) are checked against the
registry next to that piece's code, so adding one is one edit there.
"""

import dataclasses
import functools
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any

from mnist_jax.errors import UserError

DATASETS = ("mnist", "digits", "fashion_mnist", "kmnist")
SOURCES = ("idx", "tfds")
LOOPS = ("scan", "step")
MAX_INT = 2**31 - 1  # integers travel to the device as int32
MAX_SEED = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as config.json in the run directory."""

    # Data
    dataset: str = "mnist"  # mnist or digits (scikit-learn's 8x8 digits, offline); with source=tfds, any 28x28x1 one
    source: str = "idx"  # idx: IDX files from data_dir or a cached download; tfds: a prepared TFDS dataset
    data_dir: str | None = None  # folder of the IDX files (or TFDS data_dir); None: $MNIST_JAX_DATA_DIR, else download
    val_split: float = 0.2  # fraction of the training data held out, stratified, for validation
    # Model
    model: str = "cnn"  # a network from mnist_jax.models.MODELS: mlp, cnn (article), speedrun, bncnn, stridecnn
    filters: int = 32  # CNN: channels of the first convolution
    hidden: int = 128  # width of the dense hidden layer(s)
    depth: int = 1  # MLP: number of dense hidden layers
    dropout: float = 0.0  # dropout rate before the output layer; 0 disables it
    dtype: str = "float32"  # compute dtype, float32 or bfloat16; parameters stay float32
    init: str = "flax"  # flax: each layer draws its own initial values; one_draw: the same distributions, one draw
    # Optimizer
    optimizer: str = "adam"  # adam, sgd (with momentum) or adamw (mnist_jax.optim.OPTIMIZERS)
    learning_rate: float = 3e-3  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    beta1: float = 0.9  # Adam/AdamW first-moment decay
    beta2: float = 0.999  # Adam/AdamW second-moment decay
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    schedule: str = "onecycle"  # onecycle (warm up, then anneal), cosine (decay to 0) or constant
    # Training
    loss: str = "sparse"  # sparse: integer labels; categorical: one-hot labels (the article's first version)
    label_smoothing: float = 0.0  # training targets give this much probability mass evenly to all classes
    rotation: float = 0.0  # augmentation: rotate each training image by up to this many degrees either way
    zoom: float = 0.0  # augmentation: scale each training image by a factor from [1 - zoom, 1 + zoom]
    shift: float = 0.0  # augmentation: shift each training image by up to this fraction of its size either way
    ema: float = 0.0  # decay of the weights' moving average that evaluation and checkpoints use (0.999); 0: off
    epochs: int = 3  # passes over the training split
    batch_size: int = 64  # training batch; the shuffled remainder of each epoch is skipped to keep shapes fixed
    eval_batch_size: int = 1000  # evaluation batch; the last batch is padded and masked, never dropped
    steps_per_call: int = 250  # training steps per jitted call (lax.scan); 0 runs the whole epoch in one call
    loop: str = "scan"  # scan: many steps per jitted call; step: one jitted call per step (for comparison)
    fast_compile: bool = False  # compile training in about half the time, for 15-70% slower steps (short runs)
    seed: int = 0  # seeds parameters, the validation split, data order and dropout

    def __post_init__(self):
        _check_choice("dataset", self.dataset, DATASETS if self.source == "idx" else None)
        _check_choice("source", self.source, SOURCES)
        _check_choice("loop", self.loop, LOOPS)
        for name, registry in registries().items():
            _check_choice(name, getattr(self, name), tuple(registry))
        _check_numbers(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        """Return a copy with some fields changed (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"Cannot read the configuration {path}: {error}.") from None
        if not isinstance(values, dict):
            raise UserError(f"The configuration {path} is not a JSON object.")
        try:
            return cls.from_dict(values)
        except TypeError as error:  # a value of the wrong type, e.g. "epochs": "3"
            raise UserError(f"The configuration {path} has a value of the wrong type ({error}).") from None


def registries() -> dict[str, dict[str, Any]]:
    """Config field -> the registry its value is a name in; imported here, not at the top, to keep the CLI quick."""
    from mnist_jax import initializers, losses, models, optim

    return {"model": models.MODELS, "dtype": models.DTYPES, "init": initializers.INITS, "loss": losses.LOSSES,
            "optimizer": optim.OPTIMIZERS, "schedule": optim.SCHEDULES}


@functools.cache
def field_docs() -> dict[str, str]:
    """Each field's trailing comment in the source above: the help text of its flag."""
    pattern = re.compile(r"^\s+(\w+): [^=]+= .+?  # (.+)$")
    return {match[1]: match[2] for line in inspect.getsource(TrainConfig).splitlines()
            if (match := pattern.match(line))}


def flag(field: str) -> str:
    """The command-line flag of a field."""
    return "--" + field.replace("_", "-")


def _check_choice(field: str, value: str, choices: tuple[str, ...] | None) -> None:
    if choices is not None and value not in choices:
        raise UserError(f"{flag(field)} must be one of {', '.join(choices)}; got {value!r}.")


FRACTIONS = ("val_split", "label_smoothing", "dropout", "zoom", "shift", "ema")  # in [0, 1)
MAX_ROTATION = 180.0  # degrees
POSITIVE = ("epochs", "batch_size", "eval_batch_size", "filters", "hidden", "depth")


def _check_numbers(config: TrainConfig) -> None:
    """Refuse values that would fail deep inside training, with the flag's name."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag(field.name)} must be a finite number, got {value}.")
        if isinstance(value, int) and not -MAX_INT <= value <= MAX_INT:
            raise UserError(f"{flag(field.name)} is out of range: {value} (at most {MAX_INT}).")
    for name in FRACTIONS:
        if not 0.0 <= getattr(config, name) < 1.0:
            raise UserError(f"{flag(name)} must be in [0, 1), got {getattr(config, name)}.")
    for name in POSITIVE:
        if getattr(config, name) < 1:
            raise UserError(f"{flag(name)} must be a positive integer, got {getattr(config, name)}.")
    if not 0.0 <= config.rotation <= MAX_ROTATION:
        raise UserError(f"--rotation must be from 0 to {MAX_ROTATION:g} degrees, got {config.rotation}.")
    if config.steps_per_call < 0:
        raise UserError(f"--steps-per-call must be 0 or more, got {config.steps_per_call}.")
    if not 0 <= config.seed <= MAX_SEED:
        raise UserError(f"--seed must be from 0 to {MAX_SEED}, got {config.seed}.")
    if not config.learning_rate > 0:
        raise UserError(f"--lr must be positive, got {config.learning_rate}.")
