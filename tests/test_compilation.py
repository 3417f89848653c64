"""Fixed shapes: training and evaluation compile once, then never again.

How many programs a run compiles is JAX's business and changes between versions; what is ours to test is that
nothing compiles again once every shape has been seen.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import data
from mnist_jax.compilation import FAST_COMPILE, FASTEST_COMPILE, compiler_options, count_compilations, jit
from mnist_jax.config import TrainConfig
from mnist_jax import compilation
from mnist_jax.steps import epoch_plan, train_steps
from mnist_jax.train import DeviceSplit, initial_state, train_and_evaluate, train_epoch
from tests.tolerances import CROSS_ENTROPY, assert_trained_close, assert_trees_close, gradient_length


def test_counter_sees_a_new_shape_and_not_a_cached_one():
    f = jax.jit(lambda x: x * 3 + 1)
    three, four = jnp.ones(3), jnp.ones(4)  # made outside: creating them compiles too
    with count_compilations() as first:
        f(three).block_until_ready()
    with count_compilations() as cached:
        f(three).block_until_ready()
    with count_compilations() as new_shape:
        f(four).block_until_ready()
    assert first.count >= 1 and first.seconds > 0  # the listener saw the compilation and its duration
    assert (cached.count, cached.seconds) == (0, 0.0)
    assert new_shape.count == first.count  # the same program again, for the new shape


def test_cpu_only_options_go_to_the_cpu_alone():
    """A GPU refuses xla_cpu_* options ("No such compile option"), which once stopped every program there."""
    assert compiler_options("cpu", fastest_compile=True) == FASTEST_COMPILE
    assert compiler_options("cpu") == compiler_options("gpu", fastest_compile=True) == FAST_COMPILE
    assert not any(name.startswith("xla_cpu_") for name in compiler_options("gpu", fastest_compile=True))
    assert any(name.startswith("xla_cpu_") for name in FASTEST_COMPILE)


@pytest.mark.parametrize("backend, cpu_only_options", [("cpu", True), ("gpu", False)])
def test_our_jit_asks_the_backend_on_first_use_and_passes_its_options(monkeypatch, backend, cpu_only_options):
    given = {}
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    monkeypatch.setattr(jax, "jit", lambda fun, **kwargs: given.update(kwargs) or fun)
    program = jit(lambda x: x + 1, fastest_compile=True, donate_argnums=0)
    assert given == {}  # nothing asked at decoration time, when the backend may not be chosen yet
    assert program(1) == 2
    assert given["donate_argnums"] == 0
    assert any(name.startswith("xla_cpu_") for name in given["compiler_options"]) == cpu_only_options


def test_our_jit_is_jax_jit_with_the_function_name_and_ahead_of_time_lowering():
    def triple_plus_one(x):
        """Docstring."""
        return x * 3 + 1

    fast = jit(triple_plus_one, fastest_compile=True)
    assert fast.__name__ == "triple_plus_one" and fast.__doc__ == "Docstring."
    np.testing.assert_array_equal(fast(jnp.arange(3)), [1, 4, 7])
    compiled = fast.lower(jnp.ones(5)).compile()
    np.testing.assert_array_equal(compiled(jnp.zeros(5)), np.ones(5))


def test_no_recompilation_after_the_first_epoch():
    datasets = data.load_datasets("digits", val_split=0.2)
    split = DeviceSplit.put(datasets.train)
    # 35 steps per epoch in calls of 10: calls of 10 and of 5 steps, both compiled in epoch 1.
    config = TrainConfig(dataset="digits", model="mlp", batch_size=32, steps_per_call=10)
    state = initial_state(config, steps_per_epoch=len(split) // 32)
    state, _ = train_epoch(config, state, split, epoch=1)
    with count_compilations() as counter:
        for epoch in (2, 3):
            state, metrics = train_epoch(config, state, split, epoch=epoch)
    assert counter.count == 0


def test_a_whole_run_compiles_nothing_after_its_first_epoch():
    """Init, the epoch, evaluation per split shape: all compiled in epoch 1, none after."""
    datasets = data.load_datasets("digits", val_split=0.2)
    config = TrainConfig(dataset="digits", model="mlp", batch_size=32, steps_per_call=0)
    counts = {}
    for epochs in (1, 3):
        jax.clear_caches()
        with count_compilations() as counter:
            train_and_evaluate(config.replace(epochs=epochs), datasets=datasets)
        counts[epochs] = counter.count
    assert counts[1] > 0  # the counter saw the first run compile
    assert counts[3] == counts[1]  # two more epochs, with their evaluations, compiled nothing more


def test_the_fast_compile_training_program_takes_the_same_steps():
    datasets = data.load_datasets("digits", val_split=0.2)
    split = DeviceSplit.put(datasets.train)
    steps, batch = 5, 32
    config = TrainConfig(dataset="digits", model="cnn", filters=4, batch_size=batch)
    batches = epoch_plan(0, 1, len(split), batch)[0][:steps]
    results = []
    for fast_compile in (False, True):
        with compilation.speedups(fast_compile=fast_compile), count_compilations() as counter:
            state = initial_state(config, steps_per_epoch=steps)
            results.append(train_steps(state, split.images, split.labels, batches, jax.random.key(1)))
        assert counter.count >= 1  # the second is another program, not the first one found in a cache
    (state, metrics), (fast_state, fast_metrics) = results
    assert int(fast_state.step) == int(state.step) == steps
    # Other compiler options fuse and order the sums differently: equal up to float32 rounding (tests/tolerances.py).
    # The CNN with 4 filters; its convolution kernel's gradient sums over the batch and the 26x26 positions.
    logits_length = 3 * 3 + 13 * 13 * 4 + 128
    step_length = gradient_length(logits_length, batch * 26 * 26)
    assert_trained_close(fast_state.params, state.params, steps, config.learning_rate, step_length)
    # Metrics summed over the steps, each a mean over the batch of a forward pass and its loss.
    assert_trees_close(fast_metrics, metrics, steps * (logits_length + CROSS_ENTROPY + batch))
