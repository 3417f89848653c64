"""The one source of configuration: a frozen dataclass with a comment on every field."""

import dataclasses
import json
from pathlib import Path
from typing import Any

from mnist_jax.errors import UserError

DATASETS = ("mnist", "digits", "fashion_mnist", "kmnist")
SOURCES = ("idx", "tfds")
LOSSES = ("sparse", "categorical")
OPTIMIZERS = ("adam", "sgd", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
LOOPS = ("scan", "step")
DTYPES = ("float32", "bfloat16")
INITS = ("flax", "one_draw")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as config.json in the run directory."""

    # Data
    dataset: str = "mnist"  # mnist or digits (scikit-learn's 8x8 digits, offline); any 28x28x1 TFDS name with source=tfds
    source: str = "idx"  # idx: IDX files from data_dir or a cached download; tfds: a prepared TFDS dataset
    data_dir: str | None = None  # folder with the IDX files (or TFDS data_dir); None: $MNIST_JAX_DATA_DIR, then download
    val_split: float = 0.2  # fraction of the training data held out, stratified, for validation
    # Model
    model: str = "cnn"  # a name from mnist_jax.models.MODELS
    filters: int = 32  # CNN: channels of the 3x3 convolution
    hidden: int = 128  # width of the dense hidden layer(s)
    depth: int = 1  # MLP: number of dense hidden layers
    dropout: float = 0.0  # dropout rate before the output layer; 0 disables it
    dtype: str = "float32"  # compute dtype; bfloat16 keeps parameters in float32
    init: str = "flax"  # flax: each layer draws its own initial values; one_draw: the same distributions, one draw
    # Optimizer
    optimizer: str = "adam"  # adam, sgd (with momentum) or adamw
    learning_rate: float = 3e-3  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    beta1: float = 0.9  # Adam/AdamW first-moment decay
    beta2: float = 0.999  # Adam/AdamW second-moment decay
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    schedule: str = "onecycle"  # onecycle (warm up, then anneal), cosine (decay to 0) or constant
    # Training
    loss: str = "sparse"  # sparse: integer labels; categorical: one-hot labels (the article's first version)
    label_smoothing: float = 0.0  # training targets give this much probability mass evenly to all classes
    epochs: int = 3  # passes over the training split
    batch_size: int = 64  # training batch; the shuffled remainder of each epoch is skipped to keep shapes fixed
    eval_batch_size: int = 1000  # evaluation batch; the last batch is padded and masked, never dropped
    steps_per_call: int = 250  # training steps per jitted call (lax.scan); 0 runs the whole epoch in one call
    loop: str = "scan"  # scan: many steps per jitted call; step: one jitted call per step (for comparison)
    fast_compile: bool = False  # scan loop: compile in about half the time, for 15-70% slower steps (short runs)
    seed: int = 0  # seeds parameters, the validation split, data order and dropout

    def __post_init__(self):
        _check_choice("dataset", self.dataset, DATASETS if self.source == "idx" else None)
        _check_choice("source", self.source, SOURCES)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("loop", self.loop, LOOPS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("init", self.init, INITS)
        if not 0.0 <= self.val_split < 1.0:
            raise UserError(f"--val-split must be in [0, 1), got {self.val_split}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}.")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {self.dropout}.")
        for name in ("epochs", "batch_size", "eval_batch_size", "filters", "hidden", "depth"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}.")
        if self.steps_per_call < 0:
            raise UserError(f"--steps-per-call must be 0 or more, got {self.steps_per_call}.")
        if not self.learning_rate > 0:
            raise UserError(f"--lr must be positive, got {self.learning_rate}.")

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


def _check_choice(flag: str, value: str, choices: tuple[str, ...] | None) -> None:
    if choices is not None and value not in choices:
        raise UserError(f"--{flag} must be one of {', '.join(choices)}; got {value!r}.")
