"""XLA compiler options for our programs, and a counter of compilations so tests can show shapes stay fixed."""

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # recorded once per XLA compilation

# LLVM optimisation level 1 instead of XLA's default 2, and XLA:CPU's older loop emitters instead of its new
# fusion emitters, for the training and evaluation programs: a speedrun seed compiles in about a third of the
# time (init 4.2 s -> 0.4 s from the level, training program 1.3 s -> 0.8 s from the emitters), and training
# runs as fast (BENCHMARKS.md has the measurements, the GPU's too; GPUs ignore the XLA:CPU option).
FAST_COMPILE = {"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False}


def jit(fun: Callable | None = None, **options: Any) -> Any:
    """`jax.jit` with FAST_COMPILE; usable as `@jit` or `@functools.partial(jit, donate_argnums=0)`."""
    if fun is None:
        return functools.partial(jit, **options)
    return jax.jit(fun, compiler_options=FAST_COMPILE, **options)


@dataclasses.dataclass
class CompilationCounter:
    """Compilations and their total seconds since the counter started."""

    count: int = 0
    seconds: float = 0.0


_active: list[CompilationCounter] = []


def _on_event(event: str, duration: float, **_) -> None:
    if event == COMPILE_EVENT:
        for counter in _active:
            counter.count += 1
            counter.seconds += duration


jax.monitoring.register_event_duration_secs_listener(_on_event)  # once per process; counters come and go


@contextlib.contextmanager
def count_compilations() -> Iterator[CompilationCounter]:
    """Count the XLA compilations made inside the block."""
    counter = CompilationCounter()
    _active.append(counter)
    try:
        yield counter
    finally:
        _active.remove(counter)
