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
# evaluation, the speedrun's two epochs). Other backends refuse xla_cpu_* options, so only the CPU gets it.
FASTEST_COMPILE = {**FAST_COMPILE, "xla_cpu_use_fusion_emitters": False}


def compiler_options(backend: str, fastest_compile: bool = False) -> dict[str, Any]:
    """The XLA options for a program on `backend` ("cpu", "gpu", ...): FASTEST_COMPILE applies to the CPU only."""
    return FASTEST_COMPILE if fastest_compile and backend == "cpu" else FAST_COMPILE


def jit(fun: Callable | None = None, *, fastest_compile: bool = False, **options: Any) -> Any:
    """`jax.jit` with our compiler options; usable as `@jit` or `@functools.partial(jit, ...)`."""
    if fun is None:
        return functools.partial(jit, fastest_compile=fastest_compile, **options)
    return _BackendJit(fun, fastest_compile, options)


class _BackendJit:
    """A `jax.jit` made on first use, once the backend, and so which options it accepts, is known."""

    def __init__(self, fun: Callable, fastest_compile: bool, options: dict[str, Any]):
        self._fun, self._fastest_compile, self._options = fun, fastest_compile, options
        functools.update_wrapper(self, fun)

    @functools.cached_property
    def _jitted(self) -> Any:
        # Asking for the backend at import would start it before users can pick a platform.
        options = compiler_options(jax.default_backend(), self._fastest_compile)
        return jax.jit(self._fun, compiler_options=options, **self._options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._jitted(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # lower, trace, eval_shape, ... of the jitted function
        if name in ("_fun", "_fastest_compile", "_options", "_jitted"):  # unset (in a copy): no endless recursion
            raise AttributeError(name)
        return getattr(self._jitted, name)


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
