"""The speed seam: XLA compiler options for our programs, compiling ahead on a second thread, counting compiles.

The training loop reads the same without any of this: `compilation.jit` is `jax.jit` with compiler options, and
`speedups(...)` is a `with` block the loop could drop and still compute the same numbers.
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
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


@dataclasses.dataclass
class _Settings:
    fast_compile_training: bool = False  # set by speedups(); read by programs declared fastest_compile=None


_settings = _Settings()


def jit(fun: Callable | None = None, *, fastest_compile: bool | None = False, **options: Any) -> Any:
    """`jax.jit` with our compiler options; usable as `@jit` or `@functools.partial(jit, ...)`.

    fastest_compile: True for programs that run once; None for the training programs, which follow
    `speedups(fast_compile=...)`.
    """
    if fun is None:
        return functools.partial(jit, fastest_compile=fastest_compile, **options)
    return _BackendJit(fun, fastest_compile, options)


class _BackendJit:
    """A `jax.jit` made on first use, once the default backend, and so which options it accepts, is known.

    The options follow the process's default backend: in a process with several, a program placed on another
    backend gets the default's options. Unlike `jax.jit`, it does not bind as a method.
    """

    _lock = threading.Lock()  # the background thread may make a program's first call

    def __init__(self, fun: Callable, fastest_compile: bool | None, options: dict[str, Any]):
        self._fun, self._fastest_compile, self._options, self._jitted = fun, fastest_compile, options, {}
        functools.update_wrapper(self, fun)

    def _jit(self) -> Any:
        fastest = self._fastest_compile
        if fastest is None:
            fastest = _settings.fast_compile_training
        if fastest not in self._jitted:
            with self._lock:  # one jax.jit per function and choice, so every thread finds the programs others compiled
                if fastest not in self._jitted:
                    # Asking for the backend at import would start it before users can pick a platform.
                    options = compiler_options(jax.default_backend(), fastest)
                    self._jitted[fastest] = jax.jit(self._fun, compiler_options=options, **self._options)
        return self._jitted[fastest]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._jit()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # lower, trace, eval_shape, ... of the jitted function
        if name.startswith("_"):  # our own fields, unset in a copy under construction: no endless recursion
            raise AttributeError(name)
        return getattr(self._jit(), name)


@contextlib.contextmanager
def speedups(fast_compile: bool = False, precompile: Sequence[Callable[[], Any]] = ()) -> Iterator[None]:
    """Inside the block, run `precompile` (ahead-of-time compiles) on a second thread and, with `fast_compile`,
    compile the training programs in about half the time for somewhat slower steps (short runs: the speedrun).

    Compiling the programs that come later (the epoch's plan, evaluation) while this thread initialises and
    compiles training saves about a third of a second a run on 2 cores; a failed compile raises at the end.
    """
    previous = _settings.fast_compile_training
    _settings.fast_compile_training = fast_compile
    background = concurrent.futures.ThreadPoolExecutor(1)
    try:
        futures = [background.submit(compile_program) for compile_program in precompile]
        yield
        for future in futures:
            future.result()  # raises what the compilation raised, if anything
    finally:
        background.shutdown(cancel_futures=True)
        _settings.fast_compile_training = previous


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
