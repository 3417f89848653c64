"""The host's Threefry (shuffle.py) against jax.random itself: the same keys, bits and permutations, bit for bit."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_jax import shuffle, steps

WORDS = st.integers(0, 2**32 - 1)


def key_data(key: jax.Array) -> tuple[int, int]:
    high, low = np.asarray(jax.random.key_data(key)).tolist()
    return high, low


def as_ints(host_key: shuffle.KeyData) -> tuple[int, int]:
    return int(host_key[0]), int(host_key[1])


@settings(max_examples=30, deadline=None)
@given(seed=WORDS, data=WORDS)
def test_keys_folds_and_splits_are_jax_randoms(seed, data):
    key = jax.random.key(seed)
    assert as_ints(shuffle.key(seed)) == key_data(key)
    assert as_ints(shuffle.fold_in(shuffle.key(seed), data)) == key_data(jax.random.fold_in(key, data))
    first, second = jax.random.split(key)
    assert [as_ints(half) for half in shuffle.split(shuffle.key(seed))] == [key_data(first), key_data(second)]


@settings(max_examples=30, deadline=None)
@given(high=WORDS, low=WORDS, count=st.integers(1, 3000))
def test_bits_and_permutations_are_jax_randoms(high, low, count):
    host_key = (np.uint32(high), np.uint32(low))
    key = jax.random.wrap_key_data(np.array([high, low], np.uint32))
    np.testing.assert_array_equal(shuffle.random_bits(host_key, count), jax.random.bits(key, (count,), np.uint32))
    np.testing.assert_array_equal(shuffle.permutation(host_key, count), jax.random.permutation(key, count))


def test_a_permutation_long_enough_for_two_sorting_rounds_is_jax_randoms():
    """Past 2**(32/3) items jax.random sorts twice (ties get a second chance); MNIST's 60,000 is such a size."""
    key = jax.random.key(7)
    np.testing.assert_array_equal(shuffle.permutation(shuffle.key(7), 60_000), jax.random.permutation(key, 60_000))


@pytest.mark.parametrize("seed, epoch, count, batch",
                         [(0, 1, 48_000, 64), (3, 7, 60_000, 128), (2**31 - 1, 2, 103, 10), (1, 1, 5, 10)])
def test_the_epoch_plan_is_the_one_jax_random_draws(seed, epoch, count, batch):
    """The plan the loop trained on when it was a jitted program: a seed's batches did not change."""
    epoch_key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), steps.EPOCH_STREAM), epoch)
    shuffle_key, dropout_key = jax.random.split(epoch_key)
    order = jax.random.permutation(shuffle_key, count)
    batches, dropout_rng = steps.epoch_plan(seed, epoch, count, batch)
    np.testing.assert_array_equal(batches, order[: count // batch * batch].reshape(-1, batch))
    assert key_data(dropout_rng) == key_data(dropout_key)


def test_seeds_out_of_range_are_refused():
    with pytest.raises(ValueError, match="seed"):
        shuffle.key(-1)
    with pytest.raises(ValueError, match="seed"):
        shuffle.key(2**32)
