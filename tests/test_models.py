"""Models: pinned parameter counts, output shapes, dtypes, the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import models
from mnist_jax.errors import UserError

# Keras reports the same counts for the article's models; speedrun: 416 + 4,640 + 102,528 + 1,290.
# bncnn: 197,802 trainable (Keras adds BatchNorm's 640 running statistics: 198,442).
# stridecnn: 325,994 (cdeotte's Keras model: 327,242 with its 416 convolution biases and 832 running statistics).
PARAMETER_COUNTS = {"mlp": 101_770, "cnn": 693_962, "speedrun": 108_874, "bncnn": 197_802,
                    "stridecnn": 325_994}


def count(params) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
@pytest.mark.parametrize("batch", [1, 7])
def test_parameter_count_and_output_shape(name, batch):
    model = models.create_model(name)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert count(variables["params"]) == PARAMETER_COUNTS[name]
    assert model.apply(variables, jnp.zeros((batch, 28, 28, 1))).shape == (batch, 10)


def test_cnn_hyperparameters_change_the_shapes():
    model = models.create_model("cnn", filters=8, hidden=16)
    params = models.abstract_params(model)
    assert params["Conv_0"]["kernel"].shape == (3, 3, 1, 8)
    assert params["Dense_0"]["kernel"].shape == (13 * 13 * 8, 16)


def test_mlp_depth():
    params = models.abstract_params(models.create_model("mlp", depth=3, hidden=32))
    assert [params[f"Dense_{i}"]["kernel"].shape for i in range(4)] == [(784, 32), (32, 32), (32, 32), (32, 10)]


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_bfloat16_computes_in_bf16_but_keeps_float32_parameters(name):
    model = models.create_model(name, dtype="bfloat16")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
    logits = model.apply(variables, jnp.ones((2, 28, 28, 1)))
    assert logits.dtype == jnp.float32  # logits are cast back for a stable loss
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, jnp.ones((2, 28, 28, 1)))
    products = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name in ("dot_general", "conv_general_dilated")]
    assert products and all(var.aval.dtype == jnp.bfloat16 for eqn in products for var in eqn.invars)


def test_dropout_only_in_training():
    model = models.create_model("cnn", dropout=0.5)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    x = jnp.ones((2, 28, 28, 1))
    # Bit for bit: the same program on the same inputs (within one machine and one XLA build).
    assert jnp.array_equal(model.apply(variables, x), model.apply(variables, x))
    trained = [model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(i)}) for i in range(2)]
    assert not jnp.array_equal(*trained)


def test_model_hparams_picks_only_known_fields():
    options = {"filters": 4, "hidden": 8, "depth": 2, "epochs": 3, "dropout": 0.1, "dtype": "float32"}
    assert models.model_hparams("mlp", options) == {"hidden": 8, "depth": 2, "dropout": 0.1, "dtype": "float32"}
    assert models.model_hparams("cnn", options) == {"filters": 4, "hidden": 8, "dropout": 0.1, "dtype": "float32"}


def test_every_registered_model_has_a_pinned_count():
    assert set(PARAMETER_COUNTS) == set(models.MODELS)


def test_batchnorm_cnn_keeps_running_statistics_that_training_updates_and_inference_uses():
    model = models.create_model("bncnn", filters=4)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert set(variables) == {"params", "batch_stats"}
    x = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1))
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (8, 10)
    moved = jax.tree.map(lambda old, new: not jnp.array_equal(old, new), variables["batch_stats"],
                         updates["batch_stats"])
    assert all(jax.tree.leaves(moved))
    # Inference normalises with the running statistics: one image's logits do not depend on the others.
    alone = model.apply({**variables, **updates}, x[:1])
    np.testing.assert_allclose(alone, model.apply({**variables, **updates}, x)[:1], rtol=1e-5, atol=1e-5)


def test_unknown_model():
    with pytest.raises(UserError, match="--model must be one of mlp, cnn, speedrun"):
        models.create_model("resnet")


def test_prepare_images_scales_to_unit_range():
    images = jnp.array([[[0, 255]]], jnp.uint8).repeat(28, 1).repeat(14, 2)
    x = models.prepare_images(images)
    assert x.shape == (1, 28, 28, 1) and x.dtype == jnp.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
