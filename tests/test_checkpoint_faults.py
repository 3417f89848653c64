"""A full disk or a refused folder while saving a checkpoint: one sentence naming the checkpoint and the one kept,
no temporary folder left, no training past the next save, and the run resumes once the disk is fixed.

Orbax writes a checkpoint in the background: a failure there surfaces at the next epoch's save, a failure to make
its folders (made in the foreground) at once. Faults are injected into Orbax's file calls, and the CLI is also run on
a real 2 MB disk (a tmpfs, which needs root; skipped otherwise).
"""

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from orbax.checkpoint._src.path import async_path

from mnist_jax import data
from mnist_jax.checkpoints import TEMPORARY, restore_for_inference
from mnist_jax.config import TrainConfig
from mnist_jax.errors import CheckpointError
from mnist_jax.rundir import HISTORY, METRICS, RunDir
from mnist_jax.train import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
CONFIG = TrainConfig(dataset="digits", model="mlp", batch_size=32, steps_per_call=5, epochs=4)


@pytest.fixture(scope="module")
def digits():
    return data.load_datasets("digits", val_split=0.2, seed=0)


def failing(original, fails, error: OSError):
    """An Orbax file call that raises `error` for the paths `fails` picks."""
    async def call(path, *args, **kwargs):
        if fails(Path(path)):
            raise error
        return await original(path, *args, **kwargs)

    return call


def epochs_in(run: Path) -> list[int]:
    return [record["epoch"] for record in RunDir(run).read_history()]


def checkpoint_folders(run: Path) -> list[str]:
    return sorted(entry.name for entry in (run / "checkpoints").iterdir())


def test_a_failed_background_write_stops_the_run_at_the_next_save(tmp_path, digits, monkeypatch):
    def last_file_of_epoch_2(path):  # every array written, the commit marker refused: a temporary folder is left
        return path.name == "commit_success.txt" and path.parent.name.startswith("2.orbax-checkpoint-tmp")

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(async_path, "write_text", failing(async_path.write_text, last_file_of_epoch_2, full))
    run = tmp_path / "run"
    with pytest.raises(CheckpointError) as caught:
        train_and_evaluate(CONFIG, run, datasets=digits)
    checkpoints = run / "checkpoints"
    assert str(caught.value) == (f"Cannot write checkpoint {checkpoints / '2'}: No space left on device; the newest "
                                 f"checkpoint kept is {checkpoints / '1'}.")
    assert checkpoint_folders(run) == ["1"]  # epoch 2's temporary folder removed, epoch 1 kept
    assert epochs_in(run) == [1, 2, 3]  # epoch 3 overlapped the failed write; its save stopped the run
    assert not (run / METRICS).exists()

    monkeypatch.undo()  # the disk has room again
    resumed = train_and_evaluate(CONFIG, run, datasets=digits, resume=True)
    assert epochs_in(run) == [1, 2, 3, 4] and resumed.metrics["status"] == "finished"
    assert restore_for_inference(run, "latest")[0] == 4


def test_a_checkpoint_folder_that_cannot_be_made_stops_the_run_at_once(tmp_path, digits, monkeypatch):
    def epoch_1(path):
        return path.name.startswith("1.orbax-checkpoint-tmp")

    refused = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(async_path, "mkdir", failing(async_path.mkdir, epoch_1, refused))
    run = tmp_path / "run"
    with pytest.raises(CheckpointError) as caught:
        train_and_evaluate(CONFIG, run, datasets=digits)
    assert str(caught.value) == (f"Cannot write checkpoint {run / 'checkpoints' / '1'}: Permission denied; no "
                                 f"checkpoint is kept.")
    assert checkpoint_folders(run) == [] and epochs_in(run) == [1]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs: room for two or three checkpoints of the digits MLP, not for a run of four epochs."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_cli_on_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(small_disk):
    run = small_disk / "run"
    command = [sys.executable, "-m", "mnist_jax", "-q", "train", "--dataset", "digits", "--model", "mlp", "--epochs",
               "4", "--batch-size", "32", "--steps-per-call", "5", "--run-dir", str(run), "--no-progress",
               "--no-report"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120,
                              env=os.environ | {"PYTHONPATH": str(REPO)})
    assert finished.returncode == 2, finished.stderr
    checkpoints = re.escape(str(run / "checkpoints"))
    line = re.fullmatch(rf"mnist-jax: error: Cannot write checkpoint {checkpoints}/(\d+): No space left on device; "
                        rf"the newest checkpoint kept is {checkpoints}/(\d+)\.\n", finished.stderr)
    assert line, finished.stderr
    failed, kept = int(line[1]), int(line[2])
    assert kept == failed - 1
    assert not list((run / "checkpoints").glob(TEMPORARY))
    assert max(int(name) for name in checkpoint_folders(run)) == kept
    assert len(epochs_in(run)) <= failed + 1  # the epoch that overlapped the failed write, no more
    assert restore_for_inference(run, kept)[0] == kept
    assert (run / HISTORY).is_file() and not (run / METRICS).exists()
