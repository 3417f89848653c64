"""Measure training and inference speed: compile time apart, warm-up untimed, every timing blocked on the device."""

import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from mnist_jax import compilation, sharding
from mnist_jax.compilation import count_compilations
from mnist_jax.config import TrainConfig
from mnist_jax.environment import describe_environment
from mnist_jax.errors import UserError
from mnist_jax.models import model_from_config
from mnist_jax.summary import summarize, summary_totals
from mnist_jax.steps import TrainState, epoch_plan, predict_logits, train_one_step, train_steps
from mnist_jax.train import initial_state

BACKWARD_FLOPS_FACTOR = 3  # a training step costs about forward + 2x forward for the gradients
DATASET_SIZE = 48_000  # MNIST's training split after the 20% validation hold-out
RSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux


def benchmark(config: TrainConfig, steps: int = 200, repeats: int = 5, eval_batch_size: int = 1000,
              eval_images: int = 10_000, devices: int | None = None, warm_compile: bool = True) -> dict[str, Any]:
    """Training and inference images/s, compile seconds, GFLOP/s, compilations and peak memory for one config.

    Data-parallel over the first `devices` devices (all by default), as `mnist-jax train` runs. Compile seconds
    are cold (an empty cache); with `warm_compile`, also warm: the same programs loaded from a temporary persistent
    cache the cold compiles filled, as the next run finds them.
    """
    most_steps = DATASET_SIZE // config.batch_size
    if not 1 <= steps <= most_steps:
        raise UserError(f"--steps {steps} at --batch-size {config.batch_size} does not fit the {DATASET_SIZE:,} "
                        f"benchmark images: use 1 to {most_steps} steps (and a batch of at most {DATASET_SIZE:,}).")
    mesh = sharding.make_mesh(devices)
    sharding.check_batch(config.batch_size, mesh)
    flops_per_image = _flops_per_image(config)
    with (tempfile.TemporaryDirectory(prefix="mnist_jax_compile_") as cache,
          compilation.persistent_cache(cache if warm_compile else None),
          jax.set_mesh(mesh), compilation.speedups(config.fast_compile)):
        images, labels = synthetic_data(config.seed, mesh)
        state = initial_state(config, steps_per_epoch=steps)
        run = training_run(config, images, labels, steps)
        train, state = _time_training(run, state, steps * config.batch_size, repeats)
        inference = _time_inference(state, images[:eval_images], eval_batch_size, repeats)  # the trained parameters
        warm = _warm_compile(run, state, images[:eval_images], eval_batch_size) if warm_compile else None
    return {
        "model": config.model, "batch_size": config.batch_size, "dtype": config.dtype, "loop": config.loop,
        "devices": mesh.size,
        "fast_compile": config.fast_compile,
        "steps": steps, "repeats": repeats,
        "train_images_per_second": train["images_per_second"],
        "eval_images_per_second": inference["images_per_second"],
        "compile_seconds": round(train["compile_seconds"] + inference["compile_seconds"], 3),
        "train_compile_seconds": round(train["compile_seconds"], 3),
        "eval_compile_seconds": round(inference["compile_seconds"], 3),
        **_warm_fields(warm),
        "train_gflops_per_second": round(BACKWARD_FLOPS_FACTOR * flops_per_image * train["images_per_second"] / 1e9, 2),
        "eval_gflops_per_second": round(flops_per_image * inference["images_per_second"] / 1e9, 2),
        "flops_per_image": flops_per_image,
        "compilations_after_warmup": train["compilations_after_warmup"] + inference["compilations_after_warmup"],
        "peak_memory_bytes": peak_memory_bytes(),
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "processor": describe_environment()["processor"],
    }


def synthetic_data(seed: int, mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array]:
    """MNIST-sized uint8 images and labels on the device, or on every device of `mesh` (speed does not depend on
    pixel values)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (DATASET_SIZE, 28, 28), np.uint8)
    labels = rng.integers(0, 10, DATASET_SIZE).astype(np.int32)
    if mesh is None:
        return jax.device_put(images), jax.device_put(labels)
    return sharding.put_replicated(images, mesh), sharding.put_replicated(labels, mesh)


def _flops_per_image(config: TrainConfig) -> int:
    return summary_totals(summarize(model_from_config(config)))["flops_per_image"]


def _time_training(run: Callable[[TrainState], TrainState], state: TrainState, images_per_call: int,
                   repeats: int) -> tuple[dict[str, float], TrainState]:
    """Median images/s over `repeats` timed calls of `run`, after one untimed warm-up call."""
    with count_compilations() as warmup:
        state = run(state)
    seconds = []
    with count_compilations() as timed:
        for _ in range(repeats):
            started = time.perf_counter()
            state = run(state)
            seconds.append(time.perf_counter() - started)
    images_per_second = images_per_call / statistics.median(seconds)
    timing = {"images_per_second": round(images_per_second, 1), "compile_seconds": warmup.seconds,
              "compilations_after_warmup": timed.count}
    return timing, state  # the state passed in was donated to the training program


def training_run(config: TrainConfig, images: jax.Array, labels: jax.Array,
                 steps: int) -> Callable[[TrainState], TrainState]:
    """What the benchmark times: `steps` training steps from a state, as `config.loop` runs them, until done."""
    batches, rng = epoch_plan(config.seed, 1, len(labels), config.batch_size)
    batches = batches[:steps]

    def run(state: TrainState) -> TrainState:
        if config.loop == "step":
            for indices in batches:
                state, metrics = train_one_step(state, images, labels, indices, rng)
        else:
            state, metrics = train_steps(state, images, labels, batches, rng)
        jax.block_until_ready((state, metrics))
        return state

    return run


def _time_inference(state: TrainState, images, batch_size: int, repeats: int) -> dict[str, float]:
    """Median images/s of jitted batched inference over `images`, after an untimed warm-up."""
    with count_compilations() as warmup:
        predict_logits(state.apply_fn, state.eval_variables(), images, batch_size).block_until_ready()
    seconds = []
    with count_compilations() as timed:
        for _ in range(repeats):
            started = time.perf_counter()
            predict_logits(state.apply_fn, state.eval_variables(), images, batch_size).block_until_ready()
            seconds.append(time.perf_counter() - started)
    return {"images_per_second": round(len(images) / statistics.median(seconds), 1),
            "compile_seconds": warmup.seconds, "compilations_after_warmup": timed.count}


def _warm_compile(run: Callable[[TrainState], TrainState], state: TrainState, images,
                  batch_size: int) -> dict[str, float]:
    """Compile seconds of the training and inference programs again, with every compiled program forgotten but the
    persistent cache's: what the next run of the same configuration pays."""
    jax.clear_caches()
    with count_compilations() as train:
        state = run(state)
    with count_compilations() as inference:
        predict_logits(state.apply_fn, state.eval_variables(), images, batch_size).block_until_ready()
    return {"train": train.seconds, "eval": inference.seconds, "programs": train.count + inference.count,
            "cache_hits": train.cache_hits + inference.cache_hits}


def _warm_fields(warm: dict[str, float] | None) -> dict[str, Any]:
    """The warm compile's entries of the result; None where it was not measured."""
    if warm is None:
        return {"compile_seconds_warm": None, "train_compile_seconds_warm": None, "eval_compile_seconds_warm": None,
                "warm_programs": None, "warm_cache_hits": None}
    return {"compile_seconds_warm": round(warm["train"] + warm["eval"], 3),
            "train_compile_seconds_warm": round(warm["train"], 3), "eval_compile_seconds_warm": round(warm["eval"], 3),
            "warm_programs": warm["programs"], "warm_cache_hits": warm["cache_hits"]}


def peak_memory_bytes() -> int:
    """Peak device memory where the backend reports it (GPU), else the process's peak resident memory."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_UNIT
