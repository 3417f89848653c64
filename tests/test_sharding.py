"""Data-parallel training: several devices (and processes) compute what one device computes, in subprocesses.

Each test starts fresh Python processes with simulated CPU devices (XLA_FLAGS), as a multi-GPU machine or a
cluster would run them; two processes join over jax.distributed on this machine.
"""

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.tolerances import assert_close

REPO = Path(__file__).resolve().parents[1]
DIGITS = ["--dataset", "digits", "--model", "mlp", "--batch-size", "32", "--dropout", "0.2", "--no-progress",
          "--no-report"]
TIMEOUT = 300  # seconds; a hung collective fails the test instead of the suite

# One process: train the same digits run on meshes of 1, 2 and 4 devices; print each history and test loss.
MESHES = """
import json, sys
from mnist_jax import TrainConfig, train_and_evaluate
from mnist_jax.data import load_datasets
from mnist_jax.sharding import make_mesh
datasets = load_datasets("digits", val_split=0.2, seed=0)
config = TrainConfig(dataset="digits", model=sys.argv[1], filters=4, epochs=2, batch_size=32, dropout=0.2)
results = {}
for devices in (1, 2, 4):
    result = train_and_evaluate(config, mesh=make_mesh(devices), datasets=datasets)
    results[devices] = {"history": result.history, "test_loss": result.metrics["test_loss"],
                        "test_accuracy": result.metrics["test_accuracy"]}
print(json.dumps(results))
"""


def run_python(args: list[str], devices: int, **kwargs) -> subprocess.CompletedProcess:
    """`python ARGS` in a fresh process seeing `devices` CPU devices."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, **kwargs)


def losses(history: list[dict]) -> list[float]:
    return [value for record in history for key, value in sorted(record.items()) if key.endswith("loss")]


def read_history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def assert_same_curve(actual: list[dict], expected: list[dict], steps: int) -> None:
    """Loss curves equal up to float32 rounding compounded over `steps` steps (the gradients' all-reduce adds up the
    batch in another order: a few ulps a step)."""
    assert [r["epoch"] for r in actual] == [r["epoch"] for r in expected]
    assert_close(losses(actual), losses(expected), reduction_length=steps)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_two_and_four_devices_train_what_one_device_trains(model):
    done = run_python(["-c", MESHES, model], devices=4)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    steps = 2 * (1151 // 32)
    for devices in ("2", "4"):
        assert_same_curve(results[devices]["history"], results["1"]["history"], steps)
        assert_close(results[devices]["test_loss"], results["1"]["test_loss"], reduction_length=steps)
        assert results[devices]["test_accuracy"] == results["1"]["test_accuracy"]  # every test image counted once


# One process: one step of the BatchNorm CNN on meshes of 1, 2 and 4 devices; print the running statistics.
BATCH_STATS = """
import json, jax, numpy as np
from mnist_jax import sharding, steps
from mnist_jax.config import TrainConfig
from mnist_jax.data import load_datasets
from mnist_jax.train import DeviceSplit, initial_state
config = TrainConfig(dataset="digits", model="bncnn", filters=4, batch_size=32, rotation=10, ema=0.9)
datasets, results = load_datasets("digits", val_split=0.2, seed=0), {}
for devices in (1, 2, 4):
    mesh = sharding.make_mesh(devices)
    with jax.set_mesh(mesh):
        train = DeviceSplit.put(datasets.train, mesh)
        batches, rng = steps.epoch_plan(0, 1, len(train), 32)
        state, _ = steps.train_steps(initial_state(config, 1), train.images, train.labels, batches[:1], rng)
        results[devices] = [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(state.model_state)]
print(json.dumps(results))
"""


def test_batchnorm_statistics_are_over_the_whole_batch_on_every_mesh():
    """Each device sees part of the batch, yet BatchNorm's means are the whole batch's, as on one device."""
    done = run_python(["-c", BATCH_STATS], devices=4)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for devices in ("2", "4"):
        for leaf, expected in zip(results[devices], results["1"], strict=True):
            assert_close(leaf, expected, reduction_length=32 * 26 * 26)


# One process: count each program's compiles, and on which thread, over a training run on 1 and 2 devices, and
# over a `fast_compile` run on 1.
COMPILES = """
import json, jax
from mnist_jax import TrainConfig, train_and_evaluate
from mnist_jax.data import load_datasets
from mnist_jax.sharding import make_mesh
from tests.compiled import logged_compiles
datasets = load_datasets("digits", val_split=0.2, seed=0)
config = TrainConfig(dataset="digits", model="cnn", filters=4, epochs=2, batch_size=32, steps_per_call=10)
results = {}
for name, devices, fast in (("1", 1, False), ("2", 2, False), ("fast", 1, True)):
    jax.clear_caches()
    with logged_compiles() as compiled:
        train_and_evaluate(config.replace(fast_compile=fast), mesh=make_mesh(devices), datasets=datasets)
    results[name] = compiled.compiled
print(json.dumps(results))
"""


# The epoch's plan, drawn on the host, placed on 2 devices: each holds its half of every batch; the key whole.
PLACEMENT = """
import json, jax
from mnist_jax import sharding, steps
mesh = sharding.make_mesh(2)
with jax.set_mesh(mesh):
    calls, rng = steps.epoch_calls(0, 1, 100, 10, 4)
    plan, _ = steps.epoch_plan(0, 1, 100, 10)
split = sharding.batches_sharding(mesh)
print(json.dumps({"split": [block.sharding == split for block in (*calls, plan)],
                  "shapes": [list(block.shape) for block in calls],
                  "shard": list(plan.addressable_shards[0].data.shape),
                  "key_whole": rng.sharding.is_fully_replicated and len(rng.sharding.device_set) == 2}))
"""


def test_the_host_drawn_plan_is_split_over_the_devices_and_its_key_is_whole():
    done = run_python(["-c", PLACEMENT], devices=2)
    assert done.returncode == 0, done.stderr[-2000:]
    placed = json.loads(done.stdout.strip().splitlines()[-1])
    assert placed == {"split": [True] * 4, "shapes": [[4, 10], [4, 10], [2, 10]], "shard": [10, 5], "key_whole": True}


def test_the_loop_runs_the_programs_compiled_ahead_without_compiling_them_again():
    """Training and both evaluations compile on the second thread while the first thread initialises; the loop
    finds them there (or waits for them), on one device and on two: each program is compiled once. A
    `fast_compile` run swaps the threads: training first on the loop's, the initialisation on the second."""
    done = run_python(["-c", COMPILES], devices=2)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    fast = results.pop("fast")
    assert Counter(name for name, _ in fast) == {"init_state": 1, "train_steps": 2, "eval_step": 2}
    # Training compiles here alone; the initialisation and evaluations race it from the second thread.
    assert Counter(name for name, on_main_thread in fast if on_main_thread)["train_steps"] == 2
    trained_ahead = 0
    for devices, compiled in results.items():
        # 35 steps an epoch in calls of 10: blocks of 10 and of 5 rows, two training programs; validation and test.
        # The epoch's plan is drawn on the host: no program.
        assert Counter(name for name, _ in compiled) == {"init_state": 1, "train_steps": 2, "eval_step": 2}, devices
        ahead = Counter(name for name, on_main_thread in compiled if not on_main_thread)
        assert ahead["init_state"] == 0, devices
        trained_ahead += ahead["train_steps"]
    # Whichever thread reaches the compiler first compiles, the other waits: the loop, initialising first, comes
    # second, but a busy machine could reorder a race; over two runs the second thread wins at least one.
    assert trained_ahead >= 1


def test_a_checkpoint_crosses_device_counts_both_ways(tmp_path):
    """Saved on 4 devices, resumed on 1 (and the other way round): the curve an uninterrupted run draws."""
    epochs_1 = [*DIGITS, "--epochs", "1", "--schedule", "constant"]
    for first, then in ((4, 1), (1, 4)):
        run = tmp_path / f"{first}-then-{then}"
        assert run_python(["-m", "mnist_jax", "train", *epochs_1, "--run-dir", str(run)], devices=first).returncode == 0
        resumed = run_python(["-m", "mnist_jax", "train", "--resume", str(run), "--epochs", "2", "--no-progress",
                              "--no-report"], devices=then)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        whole = tmp_path / f"whole-{first}-{then}"
        assert run_python(["-m", "mnist_jax", "train", *DIGITS, "--epochs", "2", "--schedule", "constant",
                           "--run-dir", str(whole)], devices=first).returncode == 0
        assert_same_curve(read_history(run), read_history(whole), steps=2 * (1151 // 32))
        evaluated = run_python(["-m", "mnist_jax", "evaluate", str(run), "--json"], devices=1)
        assert evaluated.returncode == 0, evaluated.stderr[-2000:]
        assert json.loads(evaluated.stdout)["epoch"] in (1, 2)


def test_two_processes_of_two_devices_train_one_run_together(tmp_path):
    """jax.distributed over loopback: the run one process with four devices makes, written by process 0 alone."""
    with socket.socket() as probe:  # a free port for the coordinator
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = tmp_path / "together"
    command = ["-m", "mnist_jax", "train", *DIGITS, "--epochs", "2", "--run-dir", str(run),
               "--coordinator-address", f"127.0.0.1:{port}", "--num-processes", "2"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    processes = [subprocess.Popen([sys.executable, *command, "--process-id", str(rank)], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        outputs = [process.communicate(timeout=TIMEOUT) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-2000:]
    assert "Test accuracy" in outputs[0][0] and "Test accuracy" not in outputs[1][0]  # process 0 reports alone
    assert "Run directory" not in outputs[1][0]  # (Gloo's own lines go to both)
    alone = tmp_path / "alone"
    assert run_python(["-m", "mnist_jax", "train", *DIGITS, "--epochs", "2", "--run-dir", str(alone)],
                      devices=4).returncode == 0
    assert_same_curve(read_history(run), read_history(alone), steps=2 * (1151 // 32))
    mesh = json.loads((run / "environment.json").read_text())["mesh"]
    assert mesh["shape"] == {"data": 4} and mesh["process_count"] == 2 and len(mesh["devices"]) == 4


@pytest.mark.parametrize("flags, message", [
    (["--devices", "4", "--batch-size", "30"], "--batch-size 30 does not split evenly over 4 devices"),
    (["--devices", "9"], "--devices must be from 1 to 4"),
    (["--num-processes", "2", "--process-id", "5", "--coordinator-address", "127.0.0.1:1"],
     "--process-id must be from 0 to 1"),
])
def test_device_and_process_mistakes_are_one_sentence(tmp_path, flags, message):
    done = run_python(["-m", "mnist_jax", "train", *DIGITS, *flags, "--run-dir", str(tmp_path / "run")], devices=4)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("mnist-jax: error: ") and message in done.stderr


def test_a_cluster_is_detected_from_its_environment_and_nothing_else(monkeypatch):
    from mnist_jax import sharding

    for name in [v for v in os.environ if v.startswith(("SLURM_", "OMPI_"))] + ["KUBERNETES_SERVICE_HOST"]:
        monkeypatch.delenv(name, raising=False)
    assert not sharding._cluster_detected()
    sharding.initialize()  # outside a cluster: nothing to join, one process
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # a pod without the kubernetes package: one process
    assert not sharding._cluster_detected()
    for name, value in {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_NTASKS": "2",
                        "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(name, value)
    assert sharding._cluster_detected()
