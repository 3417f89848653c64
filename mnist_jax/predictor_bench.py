"""Measure a Predictor: warm single-image latency and batched throughput, end to end from NumPy to NumPy."""

import statistics
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from mnist_jax.predictor import IMAGE_SHAPE, Predictor

BATCH_SIZES = (1, 64, 512)  # one image, a typical batch, the largest bucket (BENCHMARKS.md reports these)
LATENCY_CALLS = 200  # single-image calls timed for the median latency
REPEATS = 20  # timed calls per batch size for throughput
WARMUP_CALLS = 3  # untimed calls per shape first: compilation and caches
SEED = 0
MS_PER_S = 1000.0


def benchmark_predictor(predictor: Predictor, batch_sizes: Sequence[int] = BATCH_SIZES, repeats: int = REPEATS,
                        latency_calls: int = LATENCY_CALLS) -> dict[str, Any]:
    """Median warm latency of one image and images/s per batch size; every call ends with the result on the host."""
    rng = np.random.default_rng(SEED)
    one_image = rng.integers(0, 256, (1, *IMAGE_SHAPE), dtype=np.uint8)
    latencies = _timed_calls(predictor, one_image, latency_calls)
    throughput = []
    for batch_size in batch_sizes:
        images = rng.integers(0, 256, (batch_size, *IMAGE_SHAPE), dtype=np.uint8)
        seconds = statistics.median(_timed_calls(predictor, images, repeats))
        throughput.append({"batch_size": int(batch_size), "median_ms": seconds * MS_PER_S,
                           "images_per_second": batch_size / seconds})
    return {
        "model": predictor.meta.get("model", type(predictor.model).__name__.lower()),
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "buckets": list(predictor.buckets),
        "latency_calls": latency_calls,
        "latency_median_ms": statistics.median(latencies) * MS_PER_S,
        "latency_p90_ms": float(np.percentile(latencies, 90)) * MS_PER_S,
        "repeats": repeats,
        "throughput": throughput,
    }


def _timed_calls(predictor: Predictor, images: np.ndarray, calls: int) -> list[float]:
    """Seconds per call, after warm-up; predict_logits returns NumPy, so each call waits for the device."""
    for _ in range(WARMUP_CALLS):
        predictor.predict_logits(images)
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        predictor.predict_logits(images)
        seconds.append(time.perf_counter() - started)
    return seconds
