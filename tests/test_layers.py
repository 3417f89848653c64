"""The fast CNN computes exactly what the straightforward nn.Conv / nn.max_pool model computes.

Pooling is compared bit for bit (it only selects values); convolutions and networks up to float32 rounding, since
the two forms sum the same products in another order (tolerances from tests/tolerances.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import models
from mnist_jax.layers import BatchLastConv, Conv, ConvMaxPool, PlainCNN, _window_max, max_pool_2x2, native_ops
from tests.tolerances import (CNN_LOGITS, SPEEDRUN_LOGITS, assert_close, assert_trees_close,
                              gradient_length)

BATCH = 16
# The longest sums that make a parameter's gradient: each convolution kernel's, over the batch and the positions
# of its output (26x26 for the CNN, 12x12 for the speedrun's first convolution).
CNN_GRADIENTS = gradient_length(CNN_LOGITS, BATCH * 26 * 26)
SPEEDRUN_GRADIENTS = gradient_length(SPEEDRUN_LOGITS, BATCH * 12 * 12)


def reference_pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


@pytest.mark.parametrize("shape", [(3, 26, 26, 4), (2, 7, 9, 3)])
def test_max_pool_values_and_gradients_equal_nn_max_pool_including_ties(shape):
    """Bit for bit: pooling selects values and routes each gradient to one of them, no arithmetic to round."""
    x = jnp.round(jax.random.normal(jax.random.key(0), shape) * 2) / 2  # coarse values: many tied maxima
    x = x.at[0].set(0.0)  # an all-zero image: every window is a four-way tie, as after a ReLU
    np.testing.assert_array_equal(max_pool_2x2(x), reference_pool(x))
    cotangent = jax.random.normal(jax.random.key(1), reference_pool(x).shape)
    expected = jax.vjp(reference_pool, x)[1](cotangent)[0]
    np.testing.assert_array_equal(jax.vjp(max_pool_2x2, x)[1](cotangent)[0], expected)


def test_conv_has_nn_conv_parameters_and_outputs():
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 2))
    ours, flax_conv = Conv(8, (3, 3), padding="VALID"), nn.Conv(8, (3, 3), padding="VALID")
    params = flax_conv.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(0), x), params)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too
    assert_close(ours.apply(params, x), flax_conv.apply(params, x), reduction_length=3 * 3 * 2 + 1)  # and the bias


@pytest.mark.parametrize("kernel_size, strides, padding, size", [
    ((5, 5), (2, 2), "SAME", 24), ((5, 5), (2, 2), "SAME", 8),  # cdeotte's downsampling convolutions
    ((3, 3), (1, 1), "SAME", 9), ((5, 3), (2, 3), "SAME", 13),  # odd sizes: the extra padded pixel goes after
    ((5, 5), (2, 2), "VALID", 13), ((4, 4), 3, "SAME", 10)])  # a strided VALID border; an int stride
def test_strided_and_same_conv_equals_nn_conv_in_values_and_gradients(kernel_size, strides, padding, size):
    x = jax.random.normal(jax.random.key(0), (4, size, size, 3))
    ours, flax_conv = Conv(8, kernel_size, strides, padding), nn.Conv(8, kernel_size, strides, padding)
    params = flax_conv.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(0), x), params)
    params = jax.tree.map(lambda p: p + 0.1, params)
    out = ours.apply(params, x)
    (kh, kw), channels = kernel_size, x.shape[-1]
    assert_close(out, flax_conv.apply(params, x), reduction_length=kh * kw * channels + 1)  # and the bias
    cotangent = jax.random.normal(jax.random.key(1), out.shape)
    grads_ours = jax.grad(lambda p, x: (ours.apply(p, x) * cotangent).sum(), (0, 1))(params, x)
    grads_ref = jax.grad(lambda p, x: (flax_conv.apply(p, x) * cotangent).sum(), (0, 1))(params, x)
    positions = out.shape[1] * out.shape[2]
    assert_trees_close(grads_ours, grads_ref, reduction_length=x.shape[0] * positions + kh * kw * 8)


def test_conv_falls_back_to_nn_conv_for_dilation_and_explicit_padding():
    x = jnp.ones((1, 28, 28, 1))
    dilated = Conv(4, (3, 3), kernel_dilation=2, padding="VALID")
    assert dilated.init_with_output(jax.random.key(0), x)[0].shape == (1, 24, 24, 4)
    assert Conv(4, (3, 3), padding=((1, 1), (1, 1))).init_with_output(jax.random.key(0), x)[0].shape[1] == 28


def primitives(function, *args):
    """The names of the primitives a function traces to."""
    return {equation.primitive.name for equation in jax.make_jaxpr(function)(*args).eqns}


def test_native_ops_trace_xla_convolution_and_pooling_with_the_same_results():
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 2))
    conv = Conv(8, (3, 3), padding="VALID")
    params = jax.tree.map(lambda p: p + 0.1, conv.init(jax.random.key(0), x))

    def native(function):
        def traced(*args):
            with native_ops():
                return function(*args)
        return traced

    assert "conv_general_dilated" not in primitives(conv.apply, params, x)  # im2col: slices and a dot
    assert "conv_general_dilated" in primitives(native(conv.apply), params, x)
    assert_close(jax.jit(native(conv.apply))(params, x), conv.apply(params, x), reduction_length=3 * 3 * 2 + 1)
    assert "reduce_window_max" in primitives(native(max_pool_2x2), x)
    np.testing.assert_array_equal(jax.jit(native(max_pool_2x2))(x), max_pool_2x2(x))
    fused = ConvMaxPool(8, (3, 3), padding="VALID", activation=nn.relu)
    assert {"conv_general_dilated", "reduce_window_max"} <= primitives(native(fused.apply), params, x)
    assert_close(jax.jit(native(fused.apply))(params, x), fused.apply(params, x), reduction_length=3 * 3 * 2 + 1)
    assert "conv_general_dilated" not in primitives(conv.apply, params, x)  # the switch ends with the block


@pytest.mark.parametrize("size, channels, activation", [(28, 1, nn.relu), (13, 3, None)])  # 13: a row dropped
def test_conv_max_pool_equals_conv_activation_then_max_pool_in_values_and_gradients_including_ties(size, channels,
                                                                                                  activation):
    x = jax.random.normal(jax.random.key(0), (4, size, size, channels))
    x = x.at[0].set(0.0).at[1, :, : size // 2].set(1.0)  # constant patches: windows of tied maxima
    ours = ConvMaxPool(8, (3, 3), padding="VALID", activation=activation)
    flax_conv = nn.Conv(8, (3, 3), padding="VALID")
    params = flax_conv.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(0), x), params)
    params = jax.tree.map(lambda p: p + 0.1, params)

    def reference(p, x):
        y = flax_conv.apply(p, x)
        return reference_pool(activation(y) if activation else y)

    out = ours.apply(params, x)
    assert_close(out, reference(params, x), reduction_length=3 * 3 * channels + 1)
    cotangent = jax.random.normal(jax.random.key(1), out.shape)
    grads_ours = jax.grad(lambda p, x: (ours.apply(p, x) * cotangent).sum(), (0, 1))(params, x)
    grads_ref = jax.grad(lambda p, x: (reference(p, x) * cotangent).sum(), (0, 1))(params, x)
    # Kernel gradients sum over the batch and the pooled positions; input gradients (where a tie sent to another
    # window position would show) over the kernel's windows and the 8 filters.
    assert_trees_close(grads_ours, grads_ref, reduction_length=x.shape[0] * out.shape[1] * out.shape[2] + 3 * 3 * 8)


def test_the_window_maximum_passes_nan_on_wherever_it_sits_as_max_pooling_does():
    """A NaN (a diverging run) in any of a window's four positions makes that output NaN, as `max` does, never a
    silent maximum of the other values: the loop still sees the loss go non-finite."""
    windows = jnp.array([[1.0, 2.0, 3.0, 0.5]] * 4).at[jnp.arange(4), jnp.arange(4)].set(jnp.nan)  # NaN at 0..3
    y = jnp.concatenate([windows, jnp.array([[1.0, 3.0, 3.0, 2.0]])])  # and a tie, without NaN
    pooled = jax.jit(_window_max)(y.T[None, None, None, :, :])  # (1, 1, 1, 4 positions, 5 features)
    np.testing.assert_array_equal(jnp.isnan(pooled[0, 0, 0]), [True] * 4 + [False])
    assert pooled[0, 0, 0, 4] == 3.0


def test_conv_max_pool_runs_other_paddings_as_conv_then_max_pool():
    x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    ours = ConvMaxPool(4, (3, 3), padding="SAME", activation=nn.relu)
    params = ours.init(jax.random.key(0), x)
    np.testing.assert_array_equal(ours.apply(params, x), max_pool_2x2(nn.relu(Conv(4, (3, 3), padding="SAME").apply(
        params, x))))
    assert ours.apply(params, x).shape == (2, 14, 14, 4)


def test_cnn_equals_the_reference_model_in_logits_and_gradients():
    images = jax.random.uniform(jax.random.key(0), (BATCH, 28, 28, 1))
    labels = jnp.arange(BATCH) % 10
    ours = models.create_model("cnn")
    params = ours.init(jax.random.key(1), images)["params"]
    params = jax.tree.map(lambda p: p + 0.01, params)  # non-zero biases, so ties are not all at zero
    reference = PlainCNN()
    assert jax.tree.structure(reference.init(jax.random.key(1), images)["params"]) == jax.tree.structure(params)
    assert_same_logits_and_gradients(ours, reference, params, images, labels, CNN_LOGITS, CNN_GRADIENTS)


def assert_same_logits_and_gradients(ours, reference, params, images, labels, logits_length, gradients_length):
    def loss(model, p):
        logits = model.apply({"params": p}, images)
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean(), logits

    (_, logits_ours), grads_ours = jax.value_and_grad(lambda p: loss(ours, p), has_aux=True)(params)
    (_, logits_ref), grads_ref = jax.value_and_grad(lambda p: loss(reference, p), has_aux=True)(params)
    assert_close(logits_ours, logits_ref, logits_length)
    assert_trees_close(grads_ours, grads_ref, gradients_length)


def to_batch_last(x_BxHxWxC):
    return jnp.transpose(x_BxHxWxC, (3, 1, 2, 0))


@pytest.mark.parametrize("kernel_size, strides, size", [((3, 3), (1, 1), 12), ((5, 5), (2, 2), 28),
                                                        ((5, 3), (2, 3), 13)])  # odd sizes drop a border
def test_batch_last_conv_equals_nn_conv_in_parameters_values_and_gradients(kernel_size, strides, size):
    x = jax.random.normal(jax.random.key(0), (4, size, size, 3))
    ours = BatchLastConv(8, kernel_size, strides)
    flax_conv = nn.Conv(8, kernel_size, strides, padding="VALID")
    params = flax_conv.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(0), to_batch_last(x)), params)
    params = jax.tree.map(lambda p: p + 0.1, params)

    def reference(p, x):
        return to_batch_last(flax_conv.apply(p, x))

    out = ours.apply(params, to_batch_last(x))
    (kh, kw), channels = kernel_size, x.shape[-1]
    assert_close(out, reference(params, x), reduction_length=kh * kw * channels + 1)  # and the bias
    cotangent = jax.random.normal(jax.random.key(1), out.shape)
    grads_ours = jax.grad(lambda p, x: (ours.apply(p, to_batch_last(x)) * cotangent).sum(), (0, 1))(params, x)
    grads_ref = jax.grad(lambda p, x: (reference(p, x) * cotangent).sum(), (0, 1))(params, x)
    # The convolution is linear: kernel gradients sum over the batch and the output positions, input gradients
    # over the kernel's windows and the 8 filters.
    positions = out.shape[1] * out.shape[2]
    assert_trees_close(grads_ours, grads_ref, reduction_length=x.shape[0] * positions + kh * kw * 8)


def test_batch_last_conv_rejects_inputs_smaller_than_its_kernel():
    with pytest.raises(ValueError, match="4x4 inputs are smaller than the 5x5 kernel"):
        BatchLastConv(8, (5, 5)).init(jax.random.key(0), jnp.ones((2, 4, 4, 1)))


class PlainSpeedrunCNN(nn.Module):
    """The speedrun network written the obvious way, with Flax's own layers."""

    @nn.compact
    def __call__(self, x_BxHxWx1, train=False):
        x = nn.relu(nn.Conv(8, (5, 5), strides=2, padding="VALID")(x_BxHxWx1))
        x = reference_pool(nn.relu(nn.Conv(16, (3, 3), padding="VALID")(x)))
        x = nn.relu(nn.Dense(128)(x.reshape((x.shape[0], -1))))
        return nn.Dense(10)(x)


def test_speedrun_cnn_equals_the_reference_model_in_parameters_logits_and_gradients():
    images = jax.random.uniform(jax.random.key(0), (BATCH, 28, 28, 1))
    labels = jnp.arange(BATCH) % 10
    ours, reference = models.create_model("speedrun", filters=8), PlainSpeedrunCNN()
    params = ours.init(jax.random.key(1), images)["params"]
    jax.tree.map(np.testing.assert_array_equal, reference.init(jax.random.key(1), images)["params"], params)
    assert_same_logits_and_gradients(ours, reference, jax.tree.map(lambda p: p + 0.01, params), images, labels,
                                     SPEEDRUN_LOGITS, SPEEDRUN_GRADIENTS)
