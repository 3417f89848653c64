"""The training run: load data, train epoch by epoch, validate, checkpoint, and test once at the end."""

import concurrent.futures
import dataclasses
import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mnist_jax import rundir as rd
from mnist_jax.checkpoints import Checkpointer, check_model_version
from mnist_jax.compilation import jit
from mnist_jax.config import TrainConfig
from mnist_jax.data import Datasets, Split, load_datasets
from mnist_jax.environment import describe_environment, package_versions
from mnist_jax.errors import UserError
from mnist_jax.models import PIXEL_SCALE, model_from_config, model_hparams, model_version
from mnist_jax.optim import create_optimizer
from mnist_jax.train import (TrainState, compile_evaluate, evaluate, init_train_state, shuffled_batches, train_one_step,
                             train_steps, train_steps_fast_compile)

log = logging.getLogger(__name__)

INIT_STREAM, EPOCH_STREAM = 0, 1  # independent random streams folded out of the seed


@dataclasses.dataclass
class TrainResult:
    """What a finished run returns to Python callers."""

    state: TrainState
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    run_dir: rd.RunDir | None


@dataclasses.dataclass(frozen=True)
class DeviceSplit:
    """A split's uint8 images and int32 labels placed on the device once."""

    images: jax.Array
    labels: jax.Array

    @classmethod
    def put(cls, split: Split) -> "DeviceSplit":
        return cls(jax.device_put(split.images), jax.device_put(split.labels))

    def __len__(self) -> int:
        return self.labels.shape[0]


def train_and_evaluate(config: TrainConfig, run_dir: rd.RunDir | None = None, datasets: Datasets | None = None,
                       progress: bool = False, resume: bool = False) -> TrainResult:
    """Train `config` and evaluate on the test set; with a run directory, record everything as it goes."""
    datasets = datasets or load_datasets(config.dataset, config.source, config.data_dir, config.val_split, config.seed)
    steps = steps_in_epoch(config, datasets)
    checkpointer = Checkpointer(run_dir.checkpoints) if run_dir else None
    background = concurrent.futures.ThreadPoolExecutor(1)  # compiles programs ahead while this thread works
    try:
        compiled = [background.submit(_compile_epoch_plan, config, len(datasets.train))]
        state = initial_state(config, steps)
        compiled += _compile_evaluations(config, datasets, state, background)
        state, history = _restore(run_dir, checkpointer, state) if resume else (state, [])
        if run_dir:  # only now: a resume that fails leaves the run as it was
            _write_run_files(run_dir, config, environment=not resume)
        state, history = _train_epochs(config, datasets, state, history, run_dir, checkpointer, progress)
        for program in compiled:
            program.result()  # raises what the compilation raised, if anything
    finally:
        background.shutdown(cancel_futures=True)
        if checkpointer:
            checkpointer.wait()  # never exit with a checkpoint half written
            checkpointer.close()
    metrics = _final_metrics(config, datasets, state, history)
    if run_dir:
        run_dir.write_json(rd.METRICS, metrics)
    return TrainResult(state, history, metrics, run_dir)


def _compile_epoch_plan(config: TrainConfig, num_examples: int) -> None:
    """Compile `epoch_plan` ahead of time; every epoch's call finds it in jit's cache."""
    epoch_plan.lower(config.seed, 1, num_examples, config.batch_size).compile()


def _compile_evaluations(config: TrainConfig, datasets: Datasets, state: TrainState,
                         background: concurrent.futures.Executor) -> list[concurrent.futures.Future]:
    """Compile the validation and test evaluations on another thread while training compiles and runs."""
    params = jax.tree.map(_shape_of, state.params)  # shapes only: training donates the arrays themselves
    splits = [split for split in (datasets.val, datasets.test) if split is not None]
    return [background.submit(compile_evaluate, state.apply_fn, params, _shape_of(split.images),
                              _shape_of(split.labels), config.eval_batch_size) for split in splits]


def _shape_of(array: Any) -> jax.ShapeDtypeStruct:
    """What `jax.device_put(array)` would hold, without the data."""
    return jax.ShapeDtypeStruct(array.shape, jax.dtypes.canonicalize_dtype(array.dtype))


def steps_in_epoch(config: TrainConfig, datasets: Datasets) -> int:
    """Full batches per epoch; at least one, or the batch size is an error."""
    steps = len(datasets.train) // config.batch_size
    if steps == 0:
        raise UserError(f"--batch-size {config.batch_size} is larger than the {len(datasets.train)} training images.")
    return steps


def initial_state(config: TrainConfig, steps_per_epoch: int) -> TrainState:
    """Fresh parameters and optimizer state for `config`."""
    model = model_from_config(config)
    optimizer = create_optimizer(config, steps_per_epoch * config.epochs)
    return _seeded_init(model, optimizer, config.seed, config.loss, config.label_smoothing, config.init)


@functools.partial(jit, static_argnums=(0, 1, 3, 4, 5), fastest_compile=True)  # the key is derived inside: one program
def _seeded_init(model, optimizer, seed: int, loss: str, label_smoothing: float, init: str) -> TrainState:
    rng = jax.random.fold_in(jax.random.key(seed), INIT_STREAM)
    return init_train_state(model, optimizer, rng, loss, label_smoothing, init)


@functools.partial(jit, static_argnames=("num_examples", "batch_size"), fastest_compile=True)  # compiled once
def epoch_plan(seed: int, epoch: int, num_examples: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """An epoch's shuffled batches and dropout key, derived from the seed alone so a resumed run repeats them."""
    epoch_rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), EPOCH_STREAM), epoch)
    shuffle_rng, dropout_rng = jax.random.split(epoch_rng)
    return shuffled_batches(shuffle_rng, num_examples, batch_size), dropout_rng


def train_epoch(config: TrainConfig, state: TrainState, train: DeviceSplit, epoch: int,
                bar: tqdm | None = None) -> tuple[TrainState, dict[str, float]]:
    """One shuffled pass over the training split, `steps_per_call` steps per jitted call."""
    batches, dropout_rng = epoch_plan(config.seed, epoch, len(train), config.batch_size)
    chunk = 1 if config.loop == "step" else (config.steps_per_call or len(batches))
    step = train_one_step if config.loop == "step" else scan_program(config)
    totals = None
    for start in range(0, len(batches), chunk):
        indices = batches[start] if config.loop == "step" else batches[start:start + chunk]
        state, metrics = step(state, train.images, train.labels, indices, dropout_rng)
        totals = metrics if totals is None else _add(totals, metrics)
        if bar is not None:
            _show_progress(bar, totals, start + min(chunk, len(batches) - start))
    return state, {f"train_{name}": float(value) / len(batches) for name, value in totals.items()}


def scan_program(config: TrainConfig) -> Any:
    """The jitted `lax.scan` over training steps that `config` asks for: compiled fastest, or running fastest."""
    return train_steps_fast_compile if config.fast_compile else train_steps


@jit
def _add(totals: dict[str, jax.Array], metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return jax.tree.map(jnp.add, totals, metrics)


def _show_progress(bar: tqdm, totals: dict[str, jax.Array], steps_done: int) -> None:
    """Update the bar with running means; this syncs with the device once per jitted call."""
    bar.n = steps_done
    bar.set_postfix(loss=f"{float(totals['loss']) / steps_done:.4f}",
                    acc=f"{float(totals['accuracy']) / steps_done:.4f}")


def _train_epochs(config, datasets, state, history, run_dir, checkpointer, progress):
    """Train the remaining epochs, recording each one as soon as it ends."""
    train = DeviceSplit.put(datasets.train)
    val = DeviceSplit.put(datasets.val) if datasets.val else None
    steps = steps_in_epoch(config, datasets)
    for epoch in range(len(history) + 1, config.epochs + 1):
        started = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch}/{config.epochs}", unit="step",
                  disable=not progress, leave=True) as bar:
            state, record = train_epoch(config, state, train, epoch, bar if progress else None)
            if val is not None:
                val_metrics = evaluate(state.apply_fn, state.params, val.images, val.labels, config.eval_batch_size)
                record |= {f"val_{name}": value for name, value in val_metrics.items()}
            record = {"epoch": epoch, **record, "seconds": round(time.perf_counter() - started, 3)}
            bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k.endswith(("loss", "accuracy"))},
                            refresh=False)
        log.debug("Epoch %d: %s", epoch, record)
        history.append(record)
        if run_dir:
            run_dir.append_history(record)
            checkpointer.save(epoch, state.params, training_arrays(state), predictor_meta(config, datasets, record),
                              record.get("val_accuracy", record["train_accuracy"]))
    return state, history


def _final_metrics(config: TrainConfig, datasets: Datasets, state: TrainState,
                   history: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate once on every test image; the test set plays no part in training or model selection."""
    test = DeviceSplit.put(datasets.test)
    test_metrics = evaluate(state.apply_fn, state.params, test.images, test.labels,
                            config.eval_batch_size)
    log.info("Test accuracy %.4f, loss %.4f on %d images.", test_metrics["accuracy"], test_metrics["loss"], len(test))
    return {
        "test_accuracy": test_metrics["accuracy"],
        "test_loss": test_metrics["loss"],
        "test_images": len(test),
        "epochs": len(history),
        "train_seconds": round(sum(record["seconds"] for record in history), 3),
        "parameters": int(sum(np.size(leaf) for leaf in jax.tree.leaves(state.params))),
    }


def training_arrays(state: TrainState) -> dict[str, Any]:
    """Besides the parameters, what resumes training exactly (the RNG is derived from the seed and epoch)."""
    return {"opt_state": state.opt_state, "step": state.step}


def predictor_meta(config: TrainConfig, datasets: Datasets, record: dict[str, Any]) -> dict[str, Any]:
    """Everything a predictor needs beside the arrays, and nothing from the training code."""
    return {
        "model": config.model,
        "model_version": model_version(config.model),
        "hparams": model_hparams(config.model, config.to_dict()),
        "preprocessing": {"input": "28x28 greyscale, white digit on black", "pixel_scale": PIXEL_SCALE},
        "class_names": list(datasets.class_names),
        "dataset": datasets.name,
        "packages": package_versions(),
        "config": config.to_dict(),
        "epoch": record["epoch"],
        "metrics": {k: v for k, v in record.items() if k != "epoch"},
    }


def _write_run_files(run_dir: rd.RunDir, config: TrainConfig, environment: bool) -> None:
    run_dir.write_json(rd.CONFIG, config.to_dict())
    if environment:
        run_dir.write_json(rd.ENVIRONMENT, describe_environment(config.seed))


def _restore(run_dir: rd.RunDir, checkpointer: Checkpointer, state: TrainState) -> tuple[TrainState, list]:
    """Continue from the newest good checkpoint: same parameters, optimizer state and step."""
    found = checkpointer.restore_newest_good(params=state.params, training=training_arrays(state))
    if found is None:
        raise UserError(f"{run_dir.path} has no checkpoint to resume from.")
    epoch, arrays, meta = found
    check_model_version(meta, checkpointer.directory / str(epoch))
    training = arrays["training"]
    state = state.replace(params=arrays["params"], opt_state=training["opt_state"], step=training["step"])
    run_dir.truncate_history(epoch)
    log.info("Resuming %s after epoch %d.", run_dir.path, epoch)
    return state, run_dir.read_history()
