"""Orbax checkpoints of the full training state, keeping the newest and the best epoch."""

import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import SingleDeviceSharding

from mnist_jax.errors import CheckpointError, first_line, root_cause
from mnist_jax.jsonio import to_strict

log = logging.getLogger(__name__)

SCORE = "score"  # the metric that ranks checkpoints: validation accuracy (training accuracy without validation)
KEEP_NEWEST = 2  # two newest, so a damaged newest checkpoint always has a good predecessor
# Parameters sit apart from the optimizer state so a predictor restores them alone; with a moving average of the
# weights, "params" holds the average (what predictions use) and "training" the raw weights. "model_state": the
# model's other collections (BatchNorm's statistics), only for models that have any.
ITEMS = ("params", "training", "meta", "model_state")
DAMAGED = "checkpoints.damaged"  # beside the checkpoints folder: damaged checkpoints set aside on resume
TEMPORARY = "*.orbax-checkpoint-tmp*"  # where Orbax writes a checkpoint before renaming it to its epoch
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")  # how Tensorstore's messages carry errno
WRITERS_TIMEOUT = 30.0  # seconds to let the rest of a failed checkpoint's writes end (they take milliseconds)


def _orbax() -> Any:
    """orbax.checkpoint, imported on first use: a fifth of a second better spent after the first training step."""
    import orbax.checkpoint

    return orbax.checkpoint


def _open_manager(directory: Path, read_only: bool) -> Any:
    """A CheckpointManager keeping the KEEP_NEWEST newest checkpoints and the best one."""
    ocp = _orbax()
    from orbax.checkpoint import checkpoint_managers

    preservation = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=KEEP_NEWEST),
        checkpoint_managers.BestN(get_metric_fn=_score, n=1),  # ascending sort, keeps the highest
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=preservation, best_fn=_score, best_mode="max",
        enable_async_checkpointing=not read_only, read_only=read_only, create=not read_only,
        save_interval_steps=0 if read_only else 1,  # what Orbax would force, minus its warning
        cleanup_tmp_directories=not read_only,  # a save cut short by a crash leaves a temporary folder
        # Folders made in save(), so a failure to make them is raised there: made in the background, it would
        # leave Orbax's writer threads waiting minutes for them.
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
    try:
        return ocp.CheckpointManager(directory.absolute(), options=options, item_names=ITEMS)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"Cannot open checkpoints in {directory}: {error}.") from None


class Checkpointer:
    """Save parameters, optimizer state and JSON metadata after every epoch, asynchronously and atomically."""

    def __init__(self, directory: Path, read_only: bool = False):
        self.directory = Path(directory)
        self._read_only = read_only
        self._manager = None  # opened on first use: importing Orbax takes a fifth of a second, after the first step
        self._writing: int | None = None  # the epoch of the last write started

    @property
    def manager(self) -> Any:
        """Orbax's CheckpointManager for the folder, opened on first use."""
        if self._manager is None:
            self._manager = _open_manager(self.directory, self._read_only)
        return self._manager

    def save(self, epoch: int, params: Any, training: Any, meta: dict[str, Any], score: float,
             model_state: Any = None) -> None:
        """Start writing epoch `epoch` in the background, once the previous write has succeeded.

        Orbax renames the checkpoint into place when complete. A failed write stops the run here, at the next
        epoch's save: training goes on at most the one epoch that overlapped it, and nothing is saved past it.
        """
        self.wait()
        ocp = _orbax()
        items = {"params": ocp.args.StandardSave(params), "training": ocp.args.StandardSave(training),
                 "meta": ocp.args.JsonSave(to_strict(meta))}
        if model_state:
            items["model_state"] = ocp.args.StandardSave(model_state)
        args = ocp.args.Composite(**items)
        self._writing = epoch
        try:
            self.manager.save(epoch, args=args, metrics={SCORE: float(score)})
        except Exception as error:
            if not _is_os_error(error):  # a bad argument is a bug, not a disk fault
                raise
            raise self._write_failed(epoch, error) from None

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def resolve(self, which: str | int) -> int:
        """Turn "best", "latest" or an epoch number into a saved epoch."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"No checkpoints found in {self.directory}.")
        if which == "best":
            return self.best_step()
        if which == "latest":
            return self.latest_step()
        if not str(which).isdigit():
            raise CheckpointError(f"Checkpoint choice {which!r} is not best, latest or an epoch number.")
        if int(which) not in steps:
            raise CheckpointError(f"{self.directory} has no checkpoint for epoch {which}; it has {steps}.")
        return int(which)

    def restore_meta(self, epoch: int) -> dict[str, Any]:
        """The JSON metadata saved beside the arrays."""
        return self._restore(epoch, meta=_orbax().args.JsonRestore())["meta"]

    def restore_arrays(self, epoch: int, **targets: Any) -> dict[str, Any]:
        """Restore the named array items ("params", "training") into the structure, shapes and dtypes given."""
        abstract = {name: jax.tree.map(_placed, target) for name, target in targets.items()}
        restore = _orbax().args.StandardRestore
        return self._restore(epoch, **{name: restore(tree) for name, tree in abstract.items()})

    def _restore(self, epoch: int, **args: Any) -> dict[str, Any]:
        try:
            return dict(self.manager.restore(epoch, args=_orbax().args.Composite(**args)))
        except Exception as error:  # Orbax raises many types for damaged or missing files
            cause = first_line(root_cause(error))
            raise CheckpointError(f"Checkpoint {self._path(epoch)} is damaged: {cause}") from None

    def restore_newest_good(self, **targets: Any) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        """Restore the newest checkpoint that loads, warning about each damaged one skipped."""
        damaged = []
        for epoch in reversed(self.steps()):
            try:
                arrays, meta = self.restore_arrays(epoch, **targets), self.restore_meta(epoch)
            except CheckpointError as error:
                damaged.append(epoch)
                log.warning("%s", error)
                continue
            if damaged:
                log.warning("Checkpoint %s is damaged; resuming from the previous good one, %s.",
                            self._path(damaged[0]), self._path(epoch))
                self._set_aside(damaged)
            return epoch, arrays, meta
        if damaged:
            raise CheckpointError(f"Every checkpoint in {self.directory} is damaged ({damaged}).")
        return None

    def _set_aside(self, epochs: list[int]) -> None:
        """Move damaged checkpoints out of Orbax's sight (kept for inspection) so their epochs can be saved again."""
        aside = self.directory.parent / DAMAGED
        for epoch in epochs:
            target = aside / f"{epoch}-{time.strftime('%Y%m%d-%H%M%S')}"
            try:
                aside.mkdir(exist_ok=True)
                shutil.move(self._path(epoch), target)
            except OSError as error:  # e.g. a read-only run directory: resuming could not write anyway
                raise CheckpointError(f"Cannot move the damaged checkpoint {self._path(epoch)} aside to {target}: "
                                      f"{error.strerror or error}.") from None
            log.warning("Moved damaged checkpoint %s to %s.", self._path(epoch), target)
        self.manager.reload()

    def wait(self) -> None:
        """Block until every pending write is on disk; a failed write is a CheckpointError, raised once."""
        if self._manager is None:  # never opened: nothing written
            return
        try:
            self.manager.wait_until_finished()
        except Exception as error:  # only writes run in the background: any error there is a failed write
            raise self._write_failed(self._writing, error) from None

    def _write_failed(self, epoch: int, error: Exception) -> CheckpointError:
        """The sentence for a failed write, once its temporary folder is gone; finished checkpoints stay."""
        _join_writers()
        for temporary in self.directory.glob(TEMPORARY):
            shutil.rmtree(temporary, ignore_errors=True)
        finished = [int(entry.name) for entry in self.directory.iterdir() if entry.name.isdigit()]
        kept = f"the newest checkpoint kept is {self._path(max(finished))}" if finished else "no checkpoint is kept"
        return CheckpointError(f"Cannot write checkpoint {self._path(epoch)}: {_reason(error)}; {kept}.")

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()

    def _path(self, epoch: int) -> Path:
        return self.directory / str(epoch)


def _placed(leaf: Any) -> jax.ShapeDtypeStruct:
    """Where a restored array goes: the target's own sharding (a mesh when training), else this process's first device.

    Orbax would otherwise place arrays as they were saved, on devices a smaller machine may not have.
    """
    struct = _orbax().utils.to_shape_dtype_struct(leaf)
    if getattr(struct, "sharding", None) is None:
        struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=SingleDeviceSharding(jax.local_devices()[0]))
    return struct


def _score(metrics: dict[str, float]) -> float:
    return metrics[SCORE]


def _join_writers(timeout: float = WRITERS_TIMEOUT) -> None:
    """Let Orbax's writer threads end: when one part of a checkpoint fails, others may still be writing theirs."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if type(thread).__module__.startswith("orbax.") and thread is not threading.current_thread():
            threading.Thread.join(thread, max(0.0, deadline - time.monotonic()))  # Orbax's own join re-raises


def _is_os_error(error: BaseException) -> bool:
    """Whether an error comes from the operating system: Python's own, or Tensorstore's with its error code."""
    cause = root_cause(error)
    return isinstance(cause, OSError) or _OS_ERROR_CODE.search(str(cause)) is not None


def _reason(error: BaseException) -> str:
    """What went wrong, in the operating system's words where it can be told ("No space left on device")."""
    cause = root_cause(error)
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    code = _OS_ERROR_CODE.search(str(cause))
    return os.strerror(int(code[1])) if code else first_line(cause).rstrip(".")


def checkpoint_dir(path: str | Path) -> Path:
    """Accept a run directory or its checkpoints folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run directory or its checkpoints folder.")
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def network_meta(config: Any, custom_model: nn.Module | None = None) -> dict[str, Any]:
    """What names the network: registered by name, version and hyperparameters, or a model given in Python by class
    name (only Python can rebuild it)."""
    from mnist_jax.models import model_hparams, model_version

    if custom_model is not None:
        return {"model": None, "model_class": type(custom_model).__name__, "hparams": {}}
    return {"model": config.model, "model_version": model_version(config.model),
            "hparams": model_hparams(config.model, config.to_dict())}


def checkpoint_meta(config: Any, datasets: Any, record: dict[str, Any], network: dict[str, Any]) -> dict[str, Any]:
    """Everything a predictor needs beside the arrays, and nothing from the training code; `network` from
    network_meta."""
    from mnist_jax.environment import package_versions
    from mnist_jax.models import PIXEL_SCALE

    return {
        **network,
        "preprocessing": {"input": "28x28 greyscale, white digit on black", "pixel_scale": PIXEL_SCALE},
        "class_names": list(datasets.class_names),
        "dataset": datasets.name,
        "packages": package_versions(),
        "config": config.to_dict(),
        "epoch": record["epoch"],
        "metrics": {k: v for k, v in record.items() if k != "epoch"},
    }


def check_same_network(meta: dict[str, Any], network: dict[str, Any], where: Path) -> None:
    """Refuse to resume a checkpoint of another network than the run's configuration names (it is not damaged)."""
    keys = ("model", "model_class", "hparams")
    saved, wanted = ({key: value.get(key) for key in keys} for value in (meta, network))
    if saved != wanted:
        raise CheckpointError(f"Checkpoint {where} holds another network ({_describe(saved)}) than the run's "
                              f"configuration names ({_describe(wanted)}); resume with the configuration it was "
                              f"trained with.")


def _describe(network: dict[str, Any]) -> str:
    name = network.get("model") or network.get("model_class")
    hparams = ", ".join(f"{key}={value}" for key, value in (network.get("hparams") or {}).items())
    return f"{name} {hparams}".strip()


def restore_for_inference(path: str | Path, which: str | int = "best",
                          model: nn.Module | None = None) -> tuple[int, nn.Module, Any, dict[str, Any]]:
    """Restore (epoch, model, parameters, metadata) from a run or checkpoints directory.

    The network is rebuilt from the checkpoint's metadata, or given as `model` (required for a run trained with a
    model given in Python). For a model with state (BatchNorm), `restore_variables` gives the rest.
    """
    epoch, model, variables, meta = restore_variables(path, which, model)
    return epoch, model, variables["params"], meta


def restore_variables(path: str | Path, which: str | int = "best",
                      model: nn.Module | None = None) -> tuple[int, nn.Module, dict[str, Any], dict[str, Any]]:
    """Restore (epoch, model, variables, metadata): variables as `model.apply` takes them, {"params": ..., and
    any other collection such as "batch_stats"}."""
    from mnist_jax.models import abstract_variables

    checkpointer = Checkpointer(checkpoint_dir(path), read_only=True)
    try:
        epoch = checkpointer.resolve(which)
        where = checkpointer.directory / str(epoch)
        meta = checkpointer.restore_meta(epoch)
        given = model is not None
        model = model or _model_from_meta(meta, where)
        targets = abstract_variables(model)
        model_state = {name: tree for name, tree in targets.items() if name != "params"}
        try:
            arrays = checkpointer.restore_arrays(epoch, params=targets["params"],
                                                 **({"model_state": model_state} if model_state else {}))
        except CheckpointError:
            if given:  # more likely another network than a damaged file
                raise CheckpointError(f"Checkpoint {where} does not restore into the given {type(model).__name__}: "
                                      f"its parameters belong to another network, or it is damaged.") from None
            raise
    finally:
        checkpointer.close()
    return epoch, model, {"params": arrays["params"], **arrays.get("model_state", {})}, meta


def _model_from_meta(meta: dict[str, Any], where: Path) -> nn.Module:
    """The registered network a checkpoint names, at the version this mnist_jax computes."""
    from mnist_jax.models import create_model

    if meta.get("model") is None and meta.get("model_class"):
        raise CheckpointError(f"{where} was trained with a model given in Python ({meta['model_class']}); load it "
                              f"in Python with Predictor.load(run_dir, model={meta['model_class']}(...)).")
    check_model_version(meta, where)
    try:
        return create_model(meta["model"], **meta["hparams"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"Checkpoint {where} has unusable metadata ({error}).") from None


def check_model_version(meta: dict[str, Any], where: Path) -> None:
    """Refuse a checkpoint of an older network whose parameters fit this one's but mean something else."""
    from mnist_jax.models import model_version

    saved, current = meta.get("model_version", 1), model_version(meta.get("model"))
    if saved != current:
        raise CheckpointError(f"Checkpoint {where} holds version {saved} of the {meta.get('model')} network, not this "
                              f"mnist_jax's version {current} (same parameter shapes, another function); train it "
                              f"again.")
