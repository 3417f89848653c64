"""Orbax checkpoints: retention of newest and best, exact resume, and damaged-checkpoint fallback.

A resumed run is compared with one that never stopped bit for bit: both run the same programs on the same data in
the same order, which gives identical floats within one machine and one XLA build (as these tests run); across
machines, only the rounding may differ.
"""

import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import data
from mnist_jax.checkpoints import Checkpointer, restore_for_inference
from mnist_jax.config import TrainConfig
from mnist_jax.errors import CheckpointError
from mnist_jax.models import abstract_params, create_model, model_version
from mnist_jax.rundir import RunDir
from mnist_jax.train import initial_state, steps_in_epoch, train_and_evaluate, training_arrays
from tests.compiled import logged_compiles

CONFIG = TrainConfig(dataset="digits", model="mlp", batch_size=32, dropout=0.3, epochs=2)


@pytest.fixture(scope="module")
def digits():
    return data.load_datasets("digits", val_split=0.2, seed=0)


def assert_trees_equal(a, b):
    """Bit for bit: same structure, same arrays."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_keeps_the_two_newest_and_the_best(tmp_path):
    checkpointer = Checkpointer(tmp_path / "ckpt")
    for epoch, score in enumerate([0.9, 0.99, 0.5, 0.6, 0.7], start=1):
        checkpointer.save(epoch, {"w": jnp.full((2,), float(epoch))}, {"step": jnp.array(epoch)}, {"epoch": epoch},
                          score)
    checkpointer.wait()
    assert checkpointer.steps() == [2, 4, 5]
    assert checkpointer.best_step() == 2 and checkpointer.latest_step() == 5
    restored = checkpointer.restore_arrays(2, params={"w": jnp.zeros((2,))})["params"]
    assert np.asarray(restored["w"]).tolist() == [2.0, 2.0]
    assert checkpointer.restore_meta(4) == {"epoch": 4}
    with pytest.raises(CheckpointError, match="has no checkpoint for epoch 3"):
        checkpointer.resolve(3)
    checkpointer.close()


def test_resume_continues_exactly(tmp_path, digits):
    """A 2-epoch run that died after epoch 1, resumed, equals one that never stopped (one-cycle schedule too)."""
    straight = train_and_evaluate(CONFIG, RunDir.create(tmp_path / "straight"), datasets=digits)
    run_dir = RunDir.create(tmp_path / "resumed")
    train_and_evaluate(CONFIG, run_dir, datasets=digits)
    shutil.rmtree(run_dir.checkpoints / "2")  # as if the process died during epoch 2
    run_dir.truncate_history(1)
    resumed = train_and_evaluate(CONFIG, run_dir, datasets=digits, resume=True)
    assert_trees_equal(straight.state.params, resumed.state.params)
    assert_trees_equal(straight.state.opt_state, resumed.state.opt_state)
    assert int(resumed.state.step) == int(straight.state.step)
    assert [r["epoch"] for r in run_dir.read_history()] == [1, 2]
    assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]


def test_extending_a_constant_schedule_run_equals_a_longer_run(tmp_path, digits):
    config = CONFIG.replace(schedule="constant")
    straight = train_and_evaluate(config, datasets=digits)
    run_dir = RunDir.create(tmp_path / "run")
    train_and_evaluate(config.replace(epochs=1), run_dir, datasets=digits)
    resumed = train_and_evaluate(config, run_dir, datasets=digits, resume=True)
    assert_trees_equal(straight.state.params, resumed.state.params)


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, digits, caplog):
    run_dir = RunDir.create(tmp_path / "run")
    train_and_evaluate(CONFIG.replace(epochs=3), run_dir, datasets=digits)
    for path in (run_dir.checkpoints / "3" / "params").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncate every array file
    with caplog.at_level(logging.WARNING, logger="mnist_jax"):
        result = train_and_evaluate(CONFIG.replace(epochs=3), run_dir, datasets=digits, resume=True)
    fallback = [r.getMessage() for r in caplog.records if "resuming from the previous good one" in r.getMessage()]
    assert fallback and "checkpoints/3" in fallback[0] and "checkpoints/2" in fallback[0]
    assert [r["epoch"] for r in run_dir.read_history()] == [1, 2, 3]  # epoch 3 was trained again
    assert result.metrics["epochs"] == 3
    # The damaged files were set aside, not deleted, and the new epoch 3 checkpoint is sound.
    assert len(list((tmp_path / "run" / "checkpoints.damaged").iterdir())) == 1
    assert_trees_equal(restore_for_inference(run_dir.path, "latest")[2], result.state.params)


def test_restore_for_inference_matches_the_trained_parameters(tmp_path, digits):
    run_dir = RunDir.create(tmp_path / "run")
    result = train_and_evaluate(CONFIG, run_dir, datasets=digits)
    epoch, model, params, meta = restore_for_inference(run_dir.path, "latest")
    assert epoch == 2 and meta["model"] == "mlp" and meta["hparams"]["dropout"] == 0.3
    assert meta["model_version"] == model_version("mlp") == 1
    assert meta["class_names"] == [str(d) for d in range(10)] and meta["dataset"] == "digits"
    assert_trees_equal(params, result.state.params)
    # The checkpoints folder itself works too.
    assert restore_for_inference(run_dir.checkpoints, 1)[0] == 1


def test_missing_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        restore_for_inference(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="No checkpoints found"):
        restore_for_inference(tmp_path / "empty")


def test_resume_without_checkpoints_starts_the_run_again_and_says_so(tmp_path, digits, caplog):
    """Killed before its first checkpoint: neither stuck (resume) nor refused (a new run), but started afresh."""
    run_dir = RunDir.create(tmp_path / "run")
    run_dir.write_json("config.json", CONFIG.to_dict())
    run_dir.append_history({"epoch": 1, "train_loss": 9.0})  # a record whose checkpoint never landed
    result = train_and_evaluate(CONFIG, run_dir, datasets=digits, resume=True)
    assert "has no checkpoint yet; starting it from scratch" in caplog.text
    assert [record["epoch"] for record in run_dir.read_history()] == list(range(1, CONFIG.epochs + 1))
    assert run_dir.read_history()[0]["train_loss"] != 9.0
    assert result.metrics["epochs"] == CONFIG.epochs


def test_unknown_checkpoint_choice_is_a_clear_error(tmp_path):
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(1, {"w": jnp.zeros(2)}, {"step": jnp.array(1)}, {}, 0.5)
    checkpointer.wait()
    with pytest.raises(CheckpointError, match="'foo' is not best, latest or an epoch number"):
        checkpointer.resolve("foo")
    checkpointer.close()


def save_checkpoint_of(directory, model_name, hparams, **meta):
    """A one-epoch checkpoint of zero parameters for the named network, with the given extra metadata."""
    params = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype),
                          abstract_params(create_model(model_name, **hparams)))
    checkpointer = Checkpointer(directory)
    checkpointer.save(1, params, {"step": jnp.array(1)}, {"model": model_name, "hparams": hparams, **meta}, 0.5)
    checkpointer.wait()
    checkpointer.close()


def test_a_checkpoint_of_an_older_network_with_the_same_shapes_is_refused(tmp_path):
    speedrun = {"filters": 8, "hidden": 128}
    save_checkpoint_of(tmp_path / "old", "speedrun", speedrun)  # saved before versions were recorded: version 1
    with pytest.raises(CheckpointError, match="holds version 1 of the speedrun network, not this mnist_jax's "
                                              "version 2"):
        restore_for_inference(tmp_path / "old")
    save_checkpoint_of(tmp_path / "new", "speedrun", speedrun, model_version=model_version("speedrun"))
    assert restore_for_inference(tmp_path / "new")[0] == 1
    save_checkpoint_of(tmp_path / "mlp", "mlp", {"hidden": 32})  # networks still at version 1 keep loading
    assert restore_for_inference(tmp_path / "mlp")[0] == 1


def test_resuming_a_run_of_an_older_network_is_refused(tmp_path, digits):
    config = TrainConfig(dataset="digits", model="speedrun", filters=4, hidden=16, batch_size=32, epochs=2)
    run_dir = RunDir.create(tmp_path / "run")
    run_dir.write_json("config.json", config.to_dict())
    state = initial_state(config, steps_in_epoch(config, digits))
    checkpointer = Checkpointer(run_dir.checkpoints)  # as the run saved it, before versions were recorded
    checkpointer.save(1, state.params, training_arrays(state), {"model": "speedrun", "hparams": {}}, 0.5)
    checkpointer.wait()
    checkpointer.close()
    with pytest.raises(CheckpointError, match="holds version 1 of the speedrun network"):
        train_and_evaluate(config, run_dir, datasets=digits, resume=True)
    assert (run_dir.checkpoints / "1").is_dir()  # refused, not set aside as damaged


@pytest.mark.parametrize("change", [{"model": "cnn"}, {"hidden": 64}])
def test_resuming_another_network_is_refused_and_its_checkpoints_stay(tmp_path, digits, change):
    """Another network's checkpoints do not fit, but are not damaged: nothing is set aside."""
    train_and_evaluate(CONFIG.replace(epochs=1), tmp_path / "run", datasets=digits)
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    with pytest.raises(CheckpointError, match="holds another network .*mlp hidden=128.* than the run's configuration"):
        train_and_evaluate(CONFIG.replace(**change), tmp_path / "run", datasets=digits, resume=True)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
    assert not (tmp_path / "run" / "checkpoints.damaged").exists()


def test_a_resumed_run_trains_with_the_program_compiled_ahead(tmp_path):
    """The restored state has the fresh state's types (a plain int32 step), so the training program compiled on the
    second thread is the one the resumed loop runs: compiled once, not twice."""
    config = CONFIG.replace(model="cnn", filters=4, epochs=1)
    train_and_evaluate(config, RunDir.create(tmp_path / "run"))
    jax.clear_caches()
    with logged_compiles() as compiled:
        train_and_evaluate(config.replace(epochs=2), tmp_path / "run", resume=True)
    assert compiled.names.count("train_steps") == 1
