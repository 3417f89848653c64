"""Models with state (BatchNorm), the weights' moving average and augmentation, through training, checkpoints,
exact resume, the Predictor and ensembles."""

import json
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from mnist_jax import Predictor, TrainConfig, augment, train_and_evaluate
from mnist_jax.checkpoints import restore_variables
from mnist_jax.cli import main
from mnist_jax.data import load_datasets
from mnist_jax.models import prepare_images
from mnist_jax.predictor import softmax
from mnist_jax.rundir import RunDir

CONFIG = TrainConfig(dataset="digits", model="bncnn", filters=4, dropout=0.2, batch_size=32, epochs=2, ema=0.9,
                     rotation=10, zoom=0.1, shift=0.1, fast_compile=True)


def assert_trees_equal(a, b):
    """Bit for bit: same structure, same arrays."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


@pytest.fixture(scope="module")
def digits():
    return load_datasets("digits", val_split=0.2, seed=0)


@pytest.fixture(scope="module")
def straight(digits, tmp_path_factory):
    """Two epochs of the BatchNorm CNN with a moving average and augmentation, never interrupted."""
    return train_and_evaluate(CONFIG, RunDir.create(tmp_path_factory.mktemp("state") / "run"), datasets=digits)


def test_training_updates_the_running_statistics_and_the_average(straight):
    state = straight.state
    initial = straight_initial_state()
    assert set(state.model_state) == {"batch_stats"}
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), initial.model_state, state.model_state)
    assert all(jax.tree.leaves(changed))
    assert state.ema_params is not None
    assert not np.array_equal(state.ema_params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"])
    assert state.eval_variables()["params"] is state.ema_params


def straight_initial_state():
    from mnist_jax.train import initial_state

    return initial_state(CONFIG, 36)


def interrupted(straight, folder):
    """A copy of the straight run as if its process had died during epoch 2."""
    shutil.copytree(straight.run_dir.path, folder)
    shutil.rmtree(folder / "checkpoints" / "2")
    run_dir = RunDir.open(folder)
    run_dir.truncate_history(1)
    return run_dir


def test_checkpoints_hold_the_average_and_the_statistics_and_resume_exactly(straight, digits, tmp_path):
    epoch, _, variables, _ = restore_variables(straight.run_dir.path, "latest")
    assert epoch == 2
    assert_trees_equal(variables, straight.state.eval_variables())  # the average, what predictions use
    run_dir = interrupted(straight, tmp_path / "resumed")
    resumed = train_and_evaluate(CONFIG, run_dir, datasets=digits, resume=True)
    for field in ("params", "ema_params", "model_state", "opt_state", "step"):
        assert_trees_equal(getattr(straight.state, field), getattr(resumed.state, field))
    assert resumed.metrics["test_accuracy"] == straight.metrics["test_accuracy"]


def test_the_predictor_applies_the_average_with_the_statistics(straight, digits):
    predictor = Predictor.load(straight.run_dir.path, "latest")
    images = digits.test.images[:20]
    expected = straight.state.apply_fn(straight.state.eval_variables(), prepare_images(images), train=False)
    np.testing.assert_allclose(predictor.predict_logits(images), expected, rtol=1e-5, atol=1e-5)


class ResearchersBatchNormNet(nn.Module):
    """A module of one's own with BatchNorm, written with Flax's own layers."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), strides=(2, 2), padding="VALID")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def test_a_module_with_batch_stats_given_in_python_trains_and_predicts(digits, tmp_path):
    config = TrainConfig(dataset="digits", batch_size=32, epochs=1, fast_compile=True)
    result = train_and_evaluate(config, tmp_path / "run", model=ResearchersBatchNormNet(), datasets=digits)
    assert set(result.state.model_state) == {"batch_stats"}
    predictor = Predictor.load(tmp_path / "run", model=ResearchersBatchNormNet())
    accuracy = (predictor.predict(digits.test.images) == digits.test.labels).mean()
    assert accuracy == pytest.approx(result.metrics["test_accuracy"])


def test_an_ensemble_averages_its_members_probabilities(straight, digits, tmp_path, capsys):
    runs = [straight.run_dir.path, interrupted(straight, tmp_path / "first_epoch").path]  # epochs 2 and 1
    ensemble = Predictor.load(runs, "latest")
    assert [member.epoch for member in ensemble.members] == [2, 1]
    mean = np.mean([member.predict_proba(digits.test.images) for member in ensemble.members], axis=0)
    np.testing.assert_allclose(ensemble.predict_proba(digits.test.images), mean, rtol=1e-5, atol=1e-6)
    assert main(["evaluate", *map(str, runs), "--which", "latest", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert [member["epoch"] for member in evaluated["members"]] == [2, 1]
    assert evaluated["test_accuracy"] == pytest.approx((mean.argmax(-1) == digits.test.labels).mean())
    assert [member["test_accuracy"] for member in evaluated["members"]] == pytest.approx(
        [(member.predict(digits.test.images) == digits.test.labels).mean() for member in ensemble.members])


def test_tta_averages_the_probabilities_over_the_fixed_views(straight, digits, capsys):
    assert main(["evaluate", str(straight.run_dir.path), "--tta", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["tta"] is True and evaluated["test_images"] == len(digits.test.labels)
    state = straight.state
    views = augment.views(digits.test.images.astype(np.float32))
    probabilities = np.mean([softmax(np.asarray(state.apply_fn(state.eval_variables(), prepare_images(view))))
                             for view in views], axis=0)
    assert evaluated["test_accuracy"] == pytest.approx((probabilities.argmax(-1) == digits.test.labels).mean())


def test_the_report_shows_the_warped_training_images(straight):
    from mnist_jax.report import write_figures

    figures = write_figures(straight.run_dir.path, "latest")
    assert list(figures.figures)[:3] == ["curves", "samples", "augmented"]
    assert figures.figures["augmented"].read_bytes().startswith(b"\x89PNG")
