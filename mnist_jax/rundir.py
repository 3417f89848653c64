"""The run directory: the files a training run leaves for people, scripts and later commands."""

import datetime
import json
import os
from pathlib import Path
from typing import Any

from mnist_jax import jsonio
from mnist_jax.errors import UserError

CONFIG = "config.json"  # the resolved TrainConfig
HISTORY = "history.jsonl"  # one JSON object per finished epoch, appended as the run goes
METRICS = "metrics.json"  # final test metrics and timings
ENVIRONMENT = "environment.json"  # package versions, devices, seed
CHECKPOINTS = "checkpoints"  # Orbax checkpoints, one folder per saved epoch
DEFAULT_ROOT = "runs"


class RunDir:
    """A folder holding one training run."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path | None = None, root: str | Path = DEFAULT_ROOT, name: str = "run") -> "RunDir":
        """Create the given folder, or a new time-stamped one under `root`."""
        if path is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = _unused(Path(root) / f"{stamp}-{name}")
        path = Path(path)
        if (path / CONFIG).exists():
            raise UserError(f"{path} already holds a run; resume it with --resume {path} or choose another --run-dir.")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"Cannot create the run directory {path}: {error.strerror}.") from None
        return cls(path)

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

    def write_json(self, name: str, value: Any) -> Path:
        """Write a JSON file atomically, so a crash never leaves half a file."""
        target = self.path / name
        temporary = target.with_suffix(target.suffix + ".tmp")
        temporary.write_text(jsonio.dumps(value, indent=2, sort_keys=True) + "\n")
        os.replace(temporary, target)
        return target

    def read_json(self, name: str) -> Any:
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path} has no {name}.") from None
        except ValueError as error:
            raise UserError(f"{self.path / name} is not valid JSON: {error}.") from None

    def append_history(self, record: dict[str, Any]) -> None:
        """Append one epoch's record and flush it to disk at once."""
        with open(self.path / HISTORY, "a") as f:
            f.write(jsonio.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

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
        kept = self.read_history()[:epochs]
        temporary = self.path / (HISTORY + ".tmp")
        temporary.write_text("".join(jsonio.dumps(r, sort_keys=True) + "\n" for r in kept))
        os.replace(temporary, self.path / HISTORY)


def _unused(path: Path) -> Path:
    """Add a numeric suffix until the path does not exist yet."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate
