"""Failures that used to end in a traceback: resuming a read-only run, and a network or batch too large for memory.

Tests run as root, where chmod does not stop writes: read-only folders are read-only bind mounts (skipped where
mounting is not allowed), or a refusal injected by monkeypatching. No test allocates more than a small network: an
allocation too large to succeed is raised by a stand-in, or refused before it is tried.
"""

import contextlib
import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from mnist_jax import data
from mnist_jax import train as train_module
from mnist_jax.cli import main
from mnist_jax.config import TrainConfig
from mnist_jax.errors import UserError
from mnist_jax.models import check_fits, create_model
from mnist_jax.train import train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
RESUME = ["train", "--no-progress", "--no-report", "--resume"]
TRAIN_DIGITS = ["train", "--dataset", "digits", "--model", "mlp", "--batch-size", "32", "--epochs", "1",
                "--no-progress", "--no-report"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished two-epoch run; tests resume copies of it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train_and_evaluate(TrainConfig(dataset="digits", model="mlp", batch_size=32, epochs=2), run,
                       datasets=data.load_datasets("digits", val_split=0.2, seed=0))
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


@contextlib.contextmanager
def read_only(folder: Path):
    """The folder read-only for everyone, root included, while the block runs."""
    bound = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bound.stderr.strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def checkpoints_of(run: Path) -> list[str]:
    return sorted(entry.name for entry in (run / "checkpoints").iterdir())


def test_resuming_a_read_only_run_is_one_sentence(run, capsys):
    with read_only(run):
        assert main([*RESUME, str(run), "--epochs", "3"]) == 2
    assert capsys.readouterr().err == f"mnist-jax: error: Cannot lock {run}: Read-only file system.\n"


def test_resuming_onto_read_only_checkpoints_keeps_them_and_is_one_sentence(run, capsys):
    with read_only(run / "checkpoints"):
        assert main([*RESUME, str(run), "--epochs", "3"]) == 2
    checkpoints = run / "checkpoints"
    assert capsys.readouterr().err == (f"mnist-jax: error: Cannot write checkpoint {checkpoints / '3'}: Read-only "
                                       f"file system; the newest checkpoint kept is {checkpoints / '2'}.\n")
    assert checkpoints_of(run) == ["1", "2"]


def test_a_damaged_checkpoint_that_cannot_be_moved_aside_is_one_sentence(run, monkeypatch, capsys):
    for chunk in (run / "checkpoints" / "2" / "params").rglob("d/*"):
        chunk.write_bytes(b"")  # epoch 2 damaged: resuming sets it aside and continues from epoch 1

    def read_only_disk(source, target):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(shutil, "move", read_only_disk)
    assert main([*RESUME, str(run), "--epochs", "3"]) == 2
    aside = re.escape(str(run / "checkpoints.damaged"))
    assert re.fullmatch(rf"mnist-jax: error: Cannot move the damaged checkpoint {re.escape(str(run))}/checkpoints/2 "
                        rf"aside to {aside}/2-\d{{8}}-\d{{6}}: Read-only file system\.\n", capsys.readouterr().err)
    assert checkpoints_of(run) == ["1", "2"]


@pytest.mark.parametrize(("error", "detail"), [
    (jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 26843545600 bytes."),
     "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 26843545600 bytes"),
    (MemoryError(), "MemoryError"),
], ids=["xla", "python"])
def test_running_out_of_memory_is_one_sentence(tmp_path, monkeypatch, capsys, error, detail):
    def allocate(*args, **kwargs):
        raise error

    monkeypatch.setattr(train_module, "train_and_evaluate", allocate)
    assert main([*TRAIN_DIGITS, "--run-dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (f"mnist-jax: error: The network or batch does not fit in memory ({detail}); "
                                       f"use a smaller --hidden, --depth, --filters, --batch-size or "
                                       f"--eval-batch-size.\n")


def test_other_runtime_errors_still_raise(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("INTERNAL: a bug of ours, not the user's")

    monkeypatch.setattr(train_module, "train_and_evaluate", broken)
    with pytest.raises(jax.errors.JaxRuntimeError):
        main([*TRAIN_DIGITS, "--run-dir", str(tmp_path / "run")])


def test_a_network_larger_than_memory_is_refused_before_allocating():
    model = create_model("mlp", hidden=2_000_000_000, depth=4)  # 4 * 10**18 weights a layer: XLA would abort
    with pytest.raises(UserError, match=r"^The network does not fit in memory: its parameters alone take "
                                        r"[\d,.]+ GiB, the device has [\d,.]+ GiB; use a smaller --hidden, "
                                        r"--depth or --filters\.$"):
        check_fits(model)
    check_fits(create_model("mlp"))  # the default network fits anywhere


def test_cli_refuses_a_network_larger_than_memory_in_one_line(tmp_path):
    argv = [*TRAIN_DIGITS, "--hidden", "2000000000", "--depth", "4", "--run-dir", str(tmp_path / "run")]
    finished = subprocess.run([sys.executable, "-m", "mnist_jax", "-q", *argv], capture_output=True, text=True,
                              timeout=120, env=os.environ | {"PYTHONPATH": str(REPO)})  # apart: an abort ends it only
    assert finished.returncode == 2
    assert finished.stderr.startswith("mnist-jax: error: The network does not fit in memory: ")
    assert finished.stderr.count("\n") == 1

