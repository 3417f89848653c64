"""one_draw initialises every kernel and bias the way Flax's defaults do, from a single random draw."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import models
from mnist_jax.config import TrainConfig
from mnist_jax.errors import UserError
from mnist_jax.initializers import INITS, TRUNCATED_NORMAL_STDDEV, one_draw_params
from mnist_jax.train import initial_state
from tests.tolerances import assert_differ, float32_rtol

IMAGES = jnp.zeros((1, 28, 28, 1))


@pytest.mark.parametrize("name", list(models.MODELS))
def test_one_draw_has_flax_shapes_zero_biases_and_lecun_normal_kernels(name):
    model = models.create_model(name)
    ours = one_draw_params(model, jax.random.key(0), IMAGES)
    flax_params = model.init(jax.random.key(0), IMAGES)["params"]
    assert jax.tree.structure(ours) == jax.tree.structure(flax_params)
    for (path, leaf), flax_leaf in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(flax_params)):
        assert leaf.shape == flax_leaf.shape and leaf.dtype == flax_leaf.dtype
        if path[-1].key in ("bias", "scale"):  # BatchNorm's scale starts at one
            np.testing.assert_array_equal(leaf, 0.0 if path[-1].key == "bias" else 1.0)
            continue
        target = math.sqrt(1.0 / math.prod(leaf.shape[:-1]))  # LeCun normal: variance 1 / fan_in
        # Truncated at two (uncorrected) deviations; the draw and its scaling are each rounded to float32.
        assert np.abs(leaf).max() <= 2 * target / TRUNCATED_NORMAL_STDDEV * (1 + float32_rtol(2))
        # A sample's spread is within a few percent of the target at 10,000 values, within 20% at 200 (over 4
        # standard errors), as Flax's own: a kernel drawn at another scale fails.
        tolerance = 0.03 if leaf.size >= 10_000 else 0.2
        assert float(leaf.std()) == pytest.approx(target, rel=tolerance)
        assert float(flax_leaf.std()) == pytest.approx(target, rel=tolerance)


def test_one_draw_depends_on_the_key_alone():
    model = models.create_model("speedrun", filters=8)
    first, again = (one_draw_params(model, jax.random.key(1), IMAGES) for _ in range(2))
    other = one_draw_params(model, jax.random.key(2), IMAGES)
    jax.tree.map(np.testing.assert_array_equal, first, again)
    assert_differ(first["Dense_0"]["kernel"], other["Dense_0"]["kernel"], reduction_length=1)
    # Each kernel is its own slice of the draw, not a copy of another's (even at another scale: compare directions).
    conv, dense = first["Conv_0"]["kernel"].ravel()[:100], first["Dense_0"]["kernel"].ravel()[:100]
    assert_differ(conv / np.linalg.norm(conv), dense / np.linalg.norm(dense), reduction_length=100)


def test_one_draw_makes_one_random_draw_where_flax_makes_one_per_layer():
    """Why it compiles faster: XLA:CPU compiles a random-number generator for each draw."""
    model = models.create_model("speedrun", filters=8)

    def draws(init):
        return str(jax.make_jaxpr(lambda key: INITS[init](model, key, IMAGES))(jax.random.key(0))).count(
            "random_bits")

    assert draws("one_draw") == 1 and draws("flax") >= 4


def test_one_draw_refuses_parameters_it_does_not_know():
    class Scaled(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(x.reshape((x.shape[0], -1))) * self.param("gain", nn.initializers.ones, ())

    with pytest.raises(ValueError, match=r"not \['gain'\]"):
        one_draw_params(Scaled(), jax.random.key(0), IMAGES)


def test_the_config_picks_the_initialisation_and_checks_its_name():
    flax_state = initial_state(TrainConfig(model="mlp", init="flax"), steps_per_epoch=1)
    one_draw_state = initial_state(TrainConfig(model="mlp", init="one_draw"), steps_per_epoch=1)
    assert_differ(flax_state.params["Dense_0"]["kernel"], one_draw_state.params["Dense_0"]["kernel"],
                  reduction_length=1)
    with pytest.raises(UserError, match="--init must be one of flax, one_draw"):
        TrainConfig(init="zeros")
