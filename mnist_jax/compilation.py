"""XLA compiler options for our programs, and a counter of compilations so tests can show shapes stay fixed."""

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # recorded once per XLA compilation

# LLVM optimisation level 1 instead of XLA's default 2 for every program: on XLA:CPU the parameter-initialisation
# program compiles in 0.4 s instead of 4.2 s, and training runs as fast (BENCHMARKS.md, the GPU's numbers too).
FAST_COMPILE = {"xla_backend_optimization_level": 1}
# XLA:CPU's loop emitters instead of its newer fusion emitters: programs compile in about half the time but run
# 15-70% slower, the right trade for programs that run once or briefly (initialisation, an epoch's plan,
# evaluation, the speedrun's two epochs). A GPU ignores the option.
FASTEST_COMPILE = {**FAST_COMPILE, "xla_cpu_use_fusion_emitters": False}


def jit(fun: Callable | None = None, *, fastest_compile: bool = False, **options: Any) -> Any:
    """`jax.jit` with FAST_COMPILE, or FASTEST_COMPILE; usable as `@jit` or `@functools.partial(jit, ...)`."""
    if fun is None:
        return functools.partial(jit, fastest_compile=fastest_compile, **options)
    return jax.jit(fun, compiler_options=FASTEST_COMPILE if fastest_compile else FAST_COMPILE, **options)


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
