"""`train` killed with SIGKILL at seeded-random points (mid-epoch, mid-save), then `--resume`: the run it finishes is
the run that was never killed.

SIGKILL cannot be caught: nothing of ours runs, so this tests what is on disk at any instant (atomic checkpoints, the
history appended line by line, the lock released by the kernel). The kills are aimed by polling the run directory: a
history line marks an epoch finished, a `*.orbax-checkpoint-tmp` folder a save under way. History and checkpoints are
compared bit for bit, which holds within one machine and one XLA build (as these tests run).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import pytest

from mnist_jax.checkpoints import Checkpointer, restore_for_inference
from mnist_jax.rundir import CONFIG, HISTORY, LOCK

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "4", "--batch-size", "32",
         "--steps-per-call", "5", "--no-progress", "--no-report"]
TEMPORARY = "*.orbax-checkpoint-tmp*"
# (what to wait for, which epoch, the most seconds to wait after it); the delays are drawn from a seeded RNG.
TARGETS = [("training", 1, 0.5),  # epoch 1 (its compile too): no checkpoint yet, so the resume starts again
           ("saving", 1, 0.0),  # the instant a save is seen under way: its folder is certainly still temporary
           ("saving", 3, 0.05),
           ("training", 3, 0.02)]


def mnist_jax(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mnist_jax", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def reached(run: Path, target: str, epoch: int) -> bool:
    """Whether the run has started training `epoch` or saving its checkpoint."""
    if target == "training":
        history = run / HISTORY
        done = history.read_text().count("\n") if history.is_file() else 0
        return (run / CONFIG).is_file() and done == epoch - 1
    return any((run / "checkpoints").glob(f"{epoch}.orbax-checkpoint-tmp*"))


def kill_when(process: subprocess.Popen, run: Path, target: str, epoch: int, delay: float) -> None:
    """SIGKILL the process `delay` seconds after it reaches the target."""
    while not reached(run, target, epoch):
        assert process.poll() is None, f"the run ended before {target} epoch {epoch}: {process.stderr.read()}"
        time.sleep(0.0005)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


def history_without_seconds(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / HISTORY).read_text().splitlines()]
    return [{key: value for key, value in record.items() if key != "seconds"} for record in records]


def saved_params(run: Path) -> dict[int, list[np.ndarray]]:
    """Every checkpoint's parameters, by epoch."""
    checkpointer = Checkpointer(run / "checkpoints", read_only=True)
    epochs = checkpointer.steps()
    checkpointer.close()
    return {epoch: [np.asarray(leaf) for leaf in jax.tree.leaves(restore_for_inference(run, epoch)[2])]
            for epoch in epochs}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    finish(mnist_jax(*TRAIN, "--run-dir", str(run)))
    return run


def kill_and_resume(run: Path, target: str, epoch: int, delay: float) -> bool:
    """Kill a run at the target, check the lock it leaves, resume it; whether the kill left a save unfinished."""
    killed = mnist_jax(*TRAIN, "--run-dir", str(run))
    kill_when(killed, run, target, epoch, delay)
    assert killed.returncode == -signal.SIGKILL
    assert (run / LOCK).read_text() == f"{killed.pid}\n"  # the dead holder's PID stays, its flock does not
    mid_save = any((run / "checkpoints").glob(TEMPORARY))
    finish(mnist_jax("train", "--resume", str(run), "--no-progress", "--no-report"))
    return mid_save


def test_killed_runs_resume_to_the_uninterrupted_run(tmp_path, uninterrupted):
    rng = random.Random(14)
    trials = [(tmp_path / f"run{trial}", target, epoch, rng.uniform(0, longest))
              for trial, (target, epoch, longest) in enumerate(TARGETS)]
    with ThreadPoolExecutor(2) as pool:  # two at a time: each waits mostly on its subprocesses
        left_mid_save = list(pool.map(lambda trial: kill_and_resume(*trial), trials))
    expected_history, expected_params = history_without_seconds(uninterrupted), saved_params(uninterrupted)
    for run, target, epoch, _ in trials:
        where = f"{run.name}: killed {target} epoch {epoch}"
        assert history_without_seconds(run) == expected_history, where
        assert json.loads((run / "metrics.json").read_text())["status"] == "finished", where
        assert list((run / "checkpoints").glob(TEMPORARY)) == [], where
        params = saved_params(run)
        assert params.keys() == expected_params.keys(), where
        for saved in params:
            for leaf, expected_leaf in zip(params[saved], expected_params[saved], strict=True):
                np.testing.assert_array_equal(leaf, expected_leaf, err_msg=f"{where}, checkpoint {saved}")
    assert left_mid_save[1], "the kill aimed at a save under way did not find one"
