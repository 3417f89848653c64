"""Float32 tolerances that follow from the arithmetic, not from the results of one machine.

Two correct float32 computations of the same sum of n terms, done in different orders (another CPU's vector
width, another XLA build's fusion, a convolution written as a matrix product), each lie within
gamma_n * sum(|terms|) of the exact sum, gamma_n = n*u / (1 - n*u) with u = eps/2 (Higham, Accuracy and Stability
of Numerical Algorithms, section 4.2). So they differ by at most about n * eps * sum(|terms|): a relative
tolerance of `reduction_length * eps`. A value that passes through several sums (a network's layers, then the
gradient's sums over the batch) collects the roundings of each: its reduction length is the sum of theirs, plus a
few for each elementwise operation (exp, log, a division).

The tolerance is relative to the scale of the values compared, the largest |expected| in the array, not to each
element: an element near zero in an array of size ~1 carries the rounding of terms of size ~1, and judged
relative to itself it would fail for no reason. The scale stands in for sum(|terms|); where terms of both signs
cancel, sum(|terms|) exceeds the result, but then the rounding errors, of random sign too, grow like sqrt(n)
rather than n, which the linear bound covers.

These bounds are loose (real differences are usually a few ulps); a bug (a wrong axis, a missing bias, a
shifted window) changes values by a fraction of their scale, far above them.

Exact comparisons stay where bit-for-bit is the claim (pooling ties, a resumed run against one that never stopped,
the same seed twice): those hold within one machine and one XLA build, which is how the tests run them.
"""

from __future__ import annotations

import jax
import numpy as np

EPS = float(np.finfo(np.float32).eps)  # 2**-23: the gap between 1.0 and the next float32

# Reduction lengths of this project's computations at their default sizes.
CROSS_ENTROPY = 10 + 3  # log-sum-exp over ten classes: a sum, with an exp, a log and a subtraction around it
MLP_LOGITS = 28 * 28 + 128  # Dense 784 -> 128, Dense 128 -> 10
CNN_LOGITS = 3 * 3 * 1 + 13 * 13 * 32 + 128  # a 3x3 convolution of 1 channel, Dense 13*13*32 -> 128, Dense 128 -> 10
# A 5x5 stride-2 convolution of 1 channel, a 3x3 one of 8 channels, Dense 5*5*16 -> 128, Dense 128 -> 10.
SPEEDRUN_LOGITS = 5 * 5 * 1 + 3 * 3 * 8 + 5 * 5 * 16 + 128


def float32_rtol(reduction_length: int) -> float:
    """Relative tolerance for two float32 results whose longest chain of roundings is `reduction_length` long."""
    if reduction_length < 1:
        raise ValueError(f"reduction_length must be at least 1, got {reduction_length}")
    return reduction_length * EPS


def gradient_length(logits_length: int, longest_parameter_sum: int) -> int:
    """Reduction length of a network's gradients of the mean cross-entropy.

    The forward pass, the loss, the backward pass (through the same layers: their transposed sums are no longer
    than the forward ones), and the longest sum that makes a parameter's gradient: over the batch, times the output
    positions for a convolution kernel.
    """
    return 2 * logits_length + CROSS_ENTROPY + longest_parameter_sum


def assert_close(actual, expected, reduction_length: int, scale: float | None = None, err_msg: str = "") -> None:
    """Assert `actual` equals `expected` within float32 rounding of sums of `reduction_length` terms.

    The allowed difference is float32_rtol(reduction_length) times `scale`: by default the largest |expected| in
    the array (see the module docstring). Pass the size of the terms instead where the result is a small
    difference of larger ones. All-zero expected values, at the default scale, must be matched exactly.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if scale is None:
        scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=float32_rtol(reduction_length) * scale,
                               err_msg=err_msg)


def assert_differ(actual, expected, reduction_length: int) -> None:
    """Assert `actual` and `expected` differ by more than float32 rounding allows (the converse of assert_close)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    allowed = float32_rtol(reduction_length) * float(np.abs(expected).max())
    assert np.abs(actual - expected).max() > allowed, "the values agree up to float32 rounding"


def assert_trees_close(actual, expected, reduction_length: int) -> None:
    """assert_close for every leaf of two pytrees of the same structure, each leaf at its own scale."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    paths_and_leaves = jax.tree_util.tree_leaves_with_path(expected)
    for (path, expected_leaf), actual_leaf in zip(paths_and_leaves, jax.tree.leaves(actual)):
        assert_close(actual_leaf, expected_leaf, reduction_length, err_msg=jax.tree_util.keystr(path))


def assert_trained_close(actual, expected, steps: int, learning_rate: float, step_reduction_length: int) -> None:
    """Parameters after `steps` Adam steps taken by two programs that round differently.

    Each step moves a parameter by about the learning rate at most (Adam divides the gradient by its running size);
    a step's rounding changes that move by float32_rtol(step_reduction_length) of itself, and the changes add up
    over the steps: the parameters may differ by steps * learning_rate * float32_rtol(step_reduction_length), plus
    their own rounding in each update. Feedback through later gradients is second order over the few steps these
    tests take. Not covered: a gradient within rounding of zero at Adam's first step, where the update is the
    learning rate times its sign; such a coincidence would fail the test rather than pass it silently.
    """
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    atol = steps * learning_rate * float32_rtol(step_reduction_length)
    for (path, expected_leaf), actual_leaf in zip(jax.tree_util.tree_leaves_with_path(expected),
                                                  jax.tree.leaves(actual)):
        np.testing.assert_allclose(np.asarray(actual_leaf, np.float64), np.asarray(expected_leaf, np.float64),
                                   rtol=float32_rtol(steps), atol=atol, err_msg=jax.tree_util.keystr(path))
