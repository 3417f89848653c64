"""The training loop: load → init (or restore) → for each epoch: train, validate, checkpoint, log → test.

The jitted programs it calls are in steps.py; `compilation.speedups` only makes them compile sooner.
"""

import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from mnist_jax import compilation, sharding, steps
from mnist_jax.augment import AffineRanges
from mnist_jax.checkpoints import (Checkpointer, check_model_version, check_same_network, checkpoint_meta,
                                   network_meta)
from mnist_jax.config import TrainConfig
from mnist_jax.data import Datasets, Split, load_datasets
from mnist_jax.environment import describe_environment
from mnist_jax.errors import CheckpointError, UserError
from mnist_jax.losses import LossFn, loss_from_config
from mnist_jax.models import abstract_variables, check_fits, model_from_config
from mnist_jax.optim import optimizer_from_config
from mnist_jax.rundir import CONFIG, ENVIRONMENT, METRICS, RunDir
from mnist_jax.steps import TrainState

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The training loss stopped being finite."""


@dataclasses.dataclass
class TrainResult:
    """What a finished run returns to Python callers."""

    state: TrainState  # params: a plain pytree; state.eval_variables() is what model.apply(variables, x) takes
    history: list[dict[str, Any]]  # one record per epoch
    metrics: dict[str, Any]  # test metrics and totals, as in metrics.json
    run_dir: RunDir | None
    model: nn.Module  # the network trained
    test_logits: np.ndarray  # (N, 10): the final state's on every test image, the ones the test metrics came from
    timings: dict[str, float]  # wall seconds: setup (before the first epoch), train (the epochs: training, validation,
    # checkpoints), test (and closing the checkpoints)


@dataclasses.dataclass(frozen=True)
class DeviceSplit:
    """A split's uint8 images and int32 labels placed on the device once."""

    images: jax.Array
    labels: jax.Array

    @classmethod
    def put(cls, split: Split, mesh: Mesh | None = None) -> "DeviceSplit":
        """Every device of the mesh (or the default device) holds the whole split, and gathers its share of batches.

        MNIST is small enough (47 MB of uint8 images) that a copy per device costs less than moving batches.
        """
        if mesh is None:
            return cls(jax.device_put(split.images), jax.device_put(split.labels))
        return cls(sharding.put_replicated(split.images, mesh), sharding.put_replicated(split.labels, mesh))

    def __len__(self) -> int:
        return self.labels.shape[0]


def train_and_evaluate(config: TrainConfig, run_dir: RunDir | str | os.PathLike | None = None, *,
                       model: nn.Module | None = None, loss_fn: LossFn | None = None,
                       optimizer: optax.GradientTransformation | None = None, mesh: Mesh | None = None,
                       datasets: Datasets | None = None, progress: bool = False, resume: bool = False) -> TrainResult:
    """Train, validating and checkpointing every epoch, then evaluate once on the test set.

    Args:
      config: the run's settings; `model`, `loss_fn` and `optimizer` replace the ones it names.
      run_dir: where to record the run (a `RunDir` or a path); None keeps everything in memory.
      model: a Flax Linen module, applied as `model.apply({"params": p}, images_Bx28x28x1_in_0_1, train=bool)`,
        returning logits (B, 10); other variable collections it has (BatchNorm's "batch_stats") are updated in
        training (`mutable`) and checkpointed with the parameters.
      loss_fn: `loss_fn(logits_BxK, labels_B)` -> per-example losses (B,).
      optimizer: any `optax.GradientTransformation` (it replaces the configured optimizer and schedule).
      mesh: the devices to train on, data-parallel (sharding.make_mesh); by default every device of every process.
      datasets: data already loaded; by default the config's dataset is loaded.
      progress: show a progress bar per epoch.
      resume: continue `run_dir` from its newest good checkpoint.
    """
    started = time.perf_counter()
    datasets = datasets or load_datasets(config.dataset, config.source, config.data_dir, config.val_split, config.seed)
    steps_per_epoch = steps_in_epoch(config, datasets)
    mesh = mesh or sharding.make_mesh()
    sharding.check_batch(config.batch_size, mesh)
    custom_model = model is not None
    model = model or model_from_config(config)
    if custom_model:
        check_fits(model)  # model_from_config checks the configured ones
    train = DeviceSplit.put(datasets.train, mesh)
    val = DeviceSplit.put(datasets.val, mesh) if datasets.val is not None else None
    # Made once, so the training program compiled ahead and the loop's first call are the same program.
    state_args = _init_state_args(config, steps_per_epoch, model, loss_fn, optimizer)
    first, beside = _programs_to_compile_ahead(config, datasets, mesh, state_args)
    with (jax.set_mesh(mesh), _claimed(run_dir, resume) as run_dir,
          compilation.speedups(config.fast_compile, beside), _checkpointer(run_dir) as checkpointer):
        for compile_program in first:
            compile_program()
        state = steps.init_state(*state_args)
        network = network_meta(config, model if custom_model else None)
        state, history = _restore(run_dir, checkpointer, state, network) if resume else (state, [])
        if run_dir:  # only now: a resume that fails leaves the run as it was
            _write_run_files(run_dir, config, mesh, environment=not resume)
        epochs_started = time.perf_counter()
        for epoch in range(len(history) + 1, config.epochs + 1):
            state, record = train_epoch(config, state, train, epoch, progress)
            if val is not None:
                record |= _prefixed("val_", steps.evaluate(state.apply_fn, state.eval_variables(), val.images,
                                                           val.labels, config.eval_batch_size))
            history.append(record)
            log.info("Epoch %d/%d: %s", epoch, config.epochs, _brief(record))
            if run_dir:
                run_dir.append_history(record)
            _stop_if_diverged(record, run_dir, checkpointer)  # before saving: the last good checkpoint stays
            if checkpointer:
                meta = checkpoint_meta(config, datasets, record, network)
                checkpointer.save(epoch, state.eval_variables()["params"], training_arrays(state), meta,
                                  _score(record), state.model_state)
        if checkpointer:
            checkpointer.wait()  # a failed save raises here, before the test
        tested = time.perf_counter()
        metrics, test_logits = test_metrics(config, DeviceSplit.put(datasets.test, mesh), state, history)
        if run_dir:
            run_dir.write_json(METRICS, metrics)
    finished = time.perf_counter()
    timings = {"setup": epochs_started - started, "train": tested - epochs_started, "test": finished - tested}
    return TrainResult(state, history, metrics, run_dir, model, test_logits, timings)


def steps_in_epoch(config: TrainConfig, datasets: Datasets) -> int:
    """Full batches per epoch; at least one, or the batch size is an error."""
    steps_per_epoch = len(datasets.train) // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"--batch-size {config.batch_size} is larger than the {len(datasets.train)} training images.")
    return steps_per_epoch


def initial_state(config: TrainConfig, steps_per_epoch: int, model: nn.Module | None = None,
                  loss_fn: LossFn | None = None, optimizer: optax.GradientTransformation | None = None) -> TrainState:
    """Fresh parameters and optimizer state for `config`; the pieces given replace the ones it names."""
    return steps.init_state(*_init_state_args(config, steps_per_epoch, model, loss_fn, optimizer))


def _init_state_args(config: TrainConfig, steps_per_epoch: int, model: nn.Module | None = None,
                     loss_fn: LossFn | None = None, optimizer: optax.GradientTransformation | None = None) -> tuple:
    """`steps.init_state`'s arguments for `config`; the pieces given replace the ones it names."""
    model = model or model_from_config(config)
    loss_fn = loss_fn or loss_from_config(config.loss, config.label_smoothing)
    optimizer = optimizer or optimizer_from_config(config, steps_per_epoch * config.epochs)
    return model, optimizer, loss_fn, config.seed, config.init, AffineRanges.of(config), config.ema


def train_epoch(config: TrainConfig, state: TrainState, train: DeviceSplit, epoch: int,
                progress: bool = False) -> tuple[TrainState, dict[str, Any]]:
    """One shuffled pass over the training split, `steps_per_call` steps per jitted call (one with loop="step")."""
    started = time.perf_counter()
    if config.loop == "step":  # a row of batch indices per call
        calls, dropout_rng = steps.epoch_plan(config.seed, epoch, len(train), config.batch_size)
        train_call = steps.train_one_step
    else:  # a block of rows per call
        calls, dropout_rng = steps.epoch_calls(config.seed, epoch, len(train), config.batch_size,
                                               config.steps_per_call)
        train_call = steps.train_steps
    steps_per_epoch = len(train) // config.batch_size  # the plan skips the remainder that does not fill a batch
    call_metrics, loss_sum = [], 0.0
    with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{config.epochs}", unit="step", disable=not progress) as bar:
        for batches in calls:
            state, metrics = train_call(state, train.images, train.labels, batches, dropout_rng)
            call_metrics.append(metrics)
            if progress:  # reading the running loss syncs with the device once per call
                loss_sum += float(metrics["loss"])
                bar.update(1 if batches.ndim == 1 else len(batches))  # a row is one step, a block one per row
                bar.set_postfix(loss=f"{loss_sum / bar.n:.4f}")
    # Summed on the host once the epoch is done: one sync, and no program to compile for the sum.
    totals = {name: sum(float(values[name]) for values in jax.device_get(call_metrics)) for name in call_metrics[0]}
    means = {f"train_{name}": total / steps_per_epoch for name, total in totals.items()}
    return state, {"epoch": epoch, **means, "seconds": round(time.perf_counter() - started, 3)}


def test_metrics(config: TrainConfig, test: DeviceSplit, state: TrainState,
                 history: list[dict[str, Any]]) -> tuple[dict[str, Any], np.ndarray]:
    """Evaluate once on every test image (the metrics, and the logits for the report); the test set plays no part
    in training or model selection."""
    metrics, logits = steps.eval_step(state.apply_fn, state.eval_variables(), test.images, test.labels,
                                      config.eval_batch_size)
    accuracy, loss = float(metrics["accuracy"]), float(metrics["loss"])
    log.info("Test accuracy %.4f, loss %.4f on %d images.", accuracy, loss, len(test))
    return {
        "status": "finished",
        "test_accuracy": accuracy,
        "test_loss": loss,
        "test_images": len(test),
        "epochs": len(history),
        "train_seconds": round(sum(record["seconds"] for record in history), 3),
        "parameters": int(sum(np.size(leaf) for leaf in jax.tree.leaves(state.params))),
    }, sharding.to_host(logits)


def training_arrays(state: TrainState) -> dict[str, Any]:
    """Besides the saved parameters and model state, what resumes training exactly (the RNG is derived from the
    seed and epoch): with a moving average, the checkpoint's parameters are the average, so the raw ones go here."""
    arrays = {"opt_state": state.opt_state, "step": state.step}
    return arrays if state.ema_params is None else arrays | {"params": state.params}


@contextlib.contextmanager
def _claimed(run_dir: RunDir | str | os.PathLike | None, resume: bool) -> Iterator[RunDir | None]:
    """The run directory (a new one for a path, the existing one to resume), locked by this process meanwhile.

    In a multi-process run, process 0 alone claims it and writes its files; the others only checkpoint.
    """
    if run_dir is None:
        yield None
        return
    if not sharding.is_primary():
        yield RunDir(run_dir.path if isinstance(run_dir, RunDir) else run_dir, writes=False)
        return
    if isinstance(run_dir, RunDir):
        run_dir.lock()  # re-entrant: a caller's own lock stays as it was
    else:
        run_dir = RunDir.open(run_dir) if resume else RunDir.create(run_dir)  # create locks
        if resume:
            run_dir.lock()
    try:
        yield run_dir
    finally:
        run_dir.unlock()


@contextlib.contextmanager
def _checkpointer(run_dir: RunDir | None) -> Iterator[Checkpointer | None]:
    """The run's checkpointer; on leaving, every pending write is finished, so no checkpoint is left half written."""
    checkpointer = Checkpointer(run_dir.checkpoints) if run_dir else None
    try:
        yield checkpointer
    finally:
        if checkpointer:
            checkpointer.wait()
            checkpointer.close()


def _programs_to_compile_ahead(config: TrainConfig, datasets: Datasets, mesh: Mesh,
                               state_args: tuple) -> tuple[list, list]:
    """Compiles for this thread to run first, and for compilation.speedups' second thread to run beside the loop.

    Each is lowered exactly as the loop will call it (same shapes, equivalent shardings), so the loop finds it
    compiled, or waits for the compile under way. Training compiles on the second thread while this one compiles
    the initialisation; a short run (`fast_compile`, the speedrun) swaps them, training here and the initialisation
    then the evaluation there, so that no compile runs beside its brief training (speedrun 0.1-0.3 s sooner).
    """
    whole = NamedSharding(mesh, PartitionSpec())
    model = state_args[0]

    def training():
        if config.loop != "scan":
            return
        state = _placed(steps.init_state.eval_shape(*state_args), whole)
        images, labels = (_shape_of(array, whole) for array in (datasets.train.images, datasets.train.labels))
        with jax.set_mesh(mesh):
            calls, rng = steps.epoch_calls(config.seed, 1, len(datasets.train), config.batch_size,
                                           config.steps_per_call)  # 10 ms on the host: the very arrays the loop passes
            for batches in {call.shape: call for call in calls}.values():  # a shorter last call is another program
                steps.train_steps.lower(state, images, labels, batches, rng).compile()

    def evaluations():
        variables = _placed(abstract_variables(model), whole)  # shapes only, traced on the second thread too
        for split in (datasets.val, datasets.test):
            if split is not None:
                images, labels = (_shape_of(array, whole) for array in (split.images, split.labels))
                with jax.set_mesh(mesh):
                    steps.eval_step.lower(model.apply, variables, images, labels, config.eval_batch_size).compile()

    def initialisation():
        with jax.set_mesh(mesh):
            steps.init_state.lower(*state_args).compile()

    if config.fast_compile:
        return [training], [initialisation, evaluations]
    return [], [training, evaluations]


def _placed(shapes: Any, placement: NamedSharding) -> Any:
    """Shapes (jax.ShapeDtypeStruct leaves) placed as `placement`."""
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, weak_type=leaf.weak_type,
                                                          sharding=placement), shapes)


def _shape_of(array: Any, placement: NamedSharding) -> jax.ShapeDtypeStruct:
    """What `DeviceSplit.put` makes of the array, without the data."""
    return jax.ShapeDtypeStruct(array.shape, jax.dtypes.canonicalize_dtype(array.dtype), sharding=placement)


def _restore(run_dir: RunDir, checkpointer: Checkpointer, state: TrainState,
             network: dict[str, Any]) -> tuple[TrainState, list]:
    """Continue from the newest good checkpoint: same network, parameters, optimizer state and step."""
    _check_same_network(checkpointer, network)
    targets = {"params": state.params, "training": training_arrays(state)}
    found = checkpointer.restore_newest_good(**targets, **({"model_state": state.model_state} if state.model_state
                                                           else {}))
    if found is None:  # e.g. killed before its first checkpoint: nothing to lose by starting again
        log.warning("%s has no checkpoint yet; starting it from scratch.", run_dir.path)
        run_dir.truncate_history(0)
        return state, []
    epoch, arrays, meta = found
    check_model_version(meta, checkpointer.directory / str(epoch))
    training = arrays["training"]
    state = state.replace(params=training.get("params", arrays["params"]), opt_state=training["opt_state"],
                          step=training["step"], model_state=arrays.get("model_state", state.model_state))
    if state.ema_params is not None:
        state = state.replace(ema_params=arrays["params"])
    run_dir.truncate_history(epoch)
    log.info("Resuming %s after epoch %d.", run_dir.path, epoch)
    return state, run_dir.read_history()[:epoch]  # [:epoch]: other processes may read before process 0 truncates


def _check_same_network(checkpointer: Checkpointer, network: dict[str, Any]) -> None:
    """Refuse to resume another network's checkpoints: they would look damaged and be set aside."""
    for epoch in reversed(checkpointer.steps()):
        try:
            meta = checkpointer.restore_meta(epoch)
        except CheckpointError:  # a damaged one: restore_newest_good deals with it
            continue
        check_model_version(meta, checkpointer.directory / str(epoch))  # the more precise sentence first
        check_same_network(meta, network, checkpointer.directory / str(epoch))
        return


def _write_run_files(run_dir: RunDir, config: TrainConfig, mesh: Mesh, environment: bool) -> None:
    run_dir.write_json(CONFIG, config.to_dict())
    if environment:
        run_dir.write_json(ENVIRONMENT, describe_environment(config.seed) | {"mesh": sharding.describe(mesh)})


def _stop_if_diverged(record: dict[str, Any], run_dir: RunDir | None, checkpointer: Checkpointer | None) -> None:
    """A non-finite training loss ends the run: later epochs could only train on NaNs."""
    if math.isfinite(record["train_loss"]):
        return
    if checkpointer:
        checkpointer.wait()
    kept = checkpointer and checkpointer.latest_step()
    if run_dir:
        run_dir.write_json(METRICS, {"status": "diverged", "diverged_epoch": record["epoch"], "kept_epoch": kept})
    where = f"; the checkpoint of epoch {kept} is kept" if kept else ""
    raise TrainingDiverged(f"Training diverged in epoch {record['epoch']}: the training loss is not finite{where}. "
                           f"Try a lower --lr.")


def _score(record: dict[str, Any]) -> float:
    """What ranks checkpoints: validation accuracy, or training accuracy without a validation split."""
    return record.get("val_accuracy", record["train_accuracy"])


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}{name}": value for name, value in metrics.items()}


def _brief(record: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value:.4f}" for key, value in record.items() if key.endswith(("loss", "accuracy")))
