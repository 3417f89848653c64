"""The run directory: the files a training run leaves for people, scripts and later commands."""

import contextlib
import datetime
import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_jax import jsonio
from mnist_jax.errors import UserError

CONFIG = "config.json"  # the resolved TrainConfig
HISTORY = "history.jsonl"  # one JSON object per finished epoch, appended as the run goes
METRICS = "metrics.json"  # final test metrics and timings
ENVIRONMENT = "environment.json"  # package versions, devices, seed
CHECKPOINTS = "checkpoints"  # Orbax checkpoints, one folder per saved epoch
LOCK = ".lock"  # flock-ed by the process writing the run; holds its PID
DEFAULT_ROOT = "runs"
# Run directories this process has locked: resolved path -> [file descriptor, holders]. The lock keeps other
# processes out; within one process it is re-entrant, so a run can be reopened (resumed) by the code that made it.
_HELD: dict[Path, list[int]] = {}


class RunDir:
    """A folder holding one training run."""

    def __init__(self, path: Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes  # False in the other processes of a multi-process run: process 0 writes the files
        self.created = False  # whether create() made the folder (discard() then removes it)

    @classmethod
    def create(cls, path: str | Path | None = None, root: str | Path = DEFAULT_ROOT, name: str = "run") -> "RunDir":
        """Create and lock the given folder, or a new time-stamped one under `root`."""
        if path is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            run = cls(_make_unused(Path(root) / f"{stamp}-{name}"))
            run.created = True
        else:
            run = cls(Path(path))
            run.created = not run.path.exists()
            _mkdir(run.path)
        run.lock()  # before anything is read or written, so two processes never both pass the check below
        if (run.path / CONFIG).exists():
            run.unlock()
            raise UserError(f"{run.path} already holds a run; resume it with --resume {run.path} or choose another "
                            f"--run-dir.")
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """Open an existing run directory, checking that it holds a configuration."""
        run = cls(Path(path))
        if not (run.path / CONFIG).is_file():
            raise UserError(f"{path} is not a run directory: it has no {CONFIG}.")
        return run

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def has_checkpoint(self) -> bool:
        """Whether a finished checkpoint exists (Orbax renames an epoch's folder to its number when complete)."""
        try:
            return any(entry.name.isdigit() and entry.is_dir() for entry in self.checkpoints.iterdir())
        except OSError:  # no checkpoints folder yet
            return False

    def lock(self) -> None:
        """Lock the run for this process's life (a crash releases it); refuse a run another process holds."""
        key = self.path.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            return
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"Cannot lock {self.path}: {error.strerror}.") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _holder(fd)
            os.close(fd)
            if isinstance(error, BlockingIOError):
                raise UserError(f"{self.path} is in use by {holder}; wait for it to finish or choose another "
                                f"--run-dir.") from None
            raise UserError(f"Cannot lock {self.path}: {error.strerror}.") from None  # e.g. no locks on this disk
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = [fd, 1]

    def unlock(self) -> None:
        """Release the lock taken by lock() (once every holder in this process has released it)."""
        key = self.path.resolve()
        if key not in _HELD:
            return
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            fd, _ = _HELD.pop(key)
            os.ftruncate(fd, 0)  # while still locked, so no new holder's PID is erased
            os.close(fd)  # closing the last descriptor releases the flock

    def discard(self) -> None:
        """Undo create() for a run that never started: the lock file, and the folder if create() made it and it is
        empty."""
        (self.path / LOCK).unlink(missing_ok=True)  # while still locked: nobody else can hold the file removed
        self.unlock()
        if self.created and not any(self.path.iterdir()):
            self.path.rmdir()

    def write_json(self, name: str, value: Any) -> Path:
        """Write a JSON file atomically, so a crash never leaves half a file."""
        if not self.writes:
            return self.path / name
        return write_atomically(self.path / name, lambda temporary: temporary.write_text(
            jsonio.dumps(value, indent=2, sort_keys=True) + "\n"))

    def read_json(self, name: str) -> Any:
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path} has no {name}.") from None
        except ValueError as error:
            raise UserError(f"{self.path / name} is not valid JSON: {error}.") from None

    def append_history(self, record: dict[str, Any]) -> None:
        """Append one epoch's record and flush it to disk at once (a torn line is ignored when read back)."""
        if not self.writes:
            return
        try:
            with open(self.path / HISTORY, "a") as f:
                f.write(jsonio.dumps(record, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as error:
            raise UserError(f"Cannot write {self.path / HISTORY}: {error.strerror or error}.") from None

    def read_history(self) -> list[dict[str, Any]]:
        """Every complete epoch record; a torn last line from a crash is ignored."""
        path = self.path / HISTORY
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break
        return records

    def truncate_history(self, epochs: int) -> None:
        """Keep only the first `epochs` records (when resuming from an earlier checkpoint)."""
        if not self.writes:
            return
        text = "".join(jsonio.dumps(r, sort_keys=True) + "\n" for r in self.read_history()[:epochs])
        write_atomically(self.path / HISTORY, lambda temporary: temporary.write_text(text))


def write_atomically(target: Path, write: Callable[[Path], Any]) -> Path:
    """Let `write` fill a temporary beside target, then rename it over target; a failure is one sentence."""
    temporary = target.with_name(target.name + ".tmp")
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException as error:  # a full disk, a read-only folder, Ctrl-C: target keeps its old content
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise UserError(f"Cannot write {target}: {error.strerror or error}.") from None
        raise
    return target


def _mkdir(path: Path, exist_ok: bool = True) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if not exist_ok:
            raise
        raise UserError(f"Cannot create the run directory {path}: a file of that name exists.") from None
    except OSError as error:
        raise UserError(f"Cannot create the run directory {path}: {error.strerror}.") from None


def _make_unused(path: Path) -> Path:
    """Create the folder, adding a numeric suffix until the name is new; mkdir decides, so two processes never share."""
    candidate, number = path, 1
    while True:
        try:
            _mkdir(candidate, exist_ok=False)
            return candidate
        except FileExistsError:
            number += 1
            candidate = path.with_name(f"{path.name}-{number}")


def _holder(fd: int) -> str:
    """Who holds a lock, from the PID its holder wrote (absent for a moment after the holder took it)."""
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def run_config(run_path: str | Path, meta: dict[str, Any]) -> Any:
    """The run's config.json (beside or above its checkpoints), else the copy saved in the checkpoint."""
    from mnist_jax.config import TrainConfig
    from mnist_jax.errors import CheckpointError

    path = Path(run_path)
    for candidate in (path / CONFIG, path.parent / CONFIG):
        if candidate.is_file():
            return TrainConfig.load(candidate)
    if "config" not in meta:
        raise CheckpointError(f"{path} has no {CONFIG} and its checkpoint does not record the training data.")
    return TrainConfig.from_dict(meta["config"])


def run_splits(run_path: str | Path, meta: dict[str, Any], data_dir: str | None = None) -> tuple[Any, Any, Any]:
    """The run's configuration and the train and test splits of the data it was trained on."""
    from mnist_jax.data import load_train_test

    config = run_config(run_path, meta)
    train, test = load_train_test(config.dataset, config.source, data_dir or config.data_dir)
    return config, train, test
