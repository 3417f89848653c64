"""The speed seam: XLA compiler options for our programs, compiling ahead on a second thread, counting compiles,
and keeping compiled programs on disk for the next run.

The training loop reads the same without any of this: `compilation.jit` is `jax.jit` with compiler options, and
`speedups(...)` is a `with` block the loop could drop and still compute the same numbers.
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import importlib.util
import logging
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from mnist_jax.download import CACHE_DIR_ENV, default_cache_dir
from mnist_jax.errors import UserError

log = logging.getLogger(__name__)

# Recorded once per program XLA compiles, or loads from the persistent cache (the duration covers either).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"  # recorded once per program loaded from the persistent cache

COMPILE_CACHE_ENV = "MNIST_JAX_COMPILE_CACHE"  # 0, false, no or off: compile every program afresh
COMPILE_CACHE_MB_ENV = "MNIST_JAX_COMPILE_CACHE_MB"  # the cache's size limit; the least recently used go first
JAX_CACHE_DIR_ENV = "JAX_COMPILATION_CACHE_DIR"  # JAX's own setting: a user who set it chose the folder
COMPILE_SUBDIR = "compile"  # beside the MNIST files' folder, so deleting one leaves the other
# A run's programs take about 0.2 MB on the CPU (5 programs of 15-60 KB, compressed): 512 MiB keeps thousands of
# configurations there, and room for accelerators' larger programs.
DEFAULT_CACHE_MB = 512
_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on", "")

# LLVM optimisation level 1 instead of XLA's default 2 for every program: on XLA:CPU the parameter-initialisation
# program compiles in 0.4 s instead of 4.2 s, and training runs as fast (BENCHMARKS.md, the GPU's numbers too).
FAST_COMPILE = {"xla_backend_optimization_level": 1}
# XLA:CPU's loop emitters instead of its newer fusion emitters: programs compile in about half the time but run
# 15-70% slower, the right trade for programs that run once or briefly (initialisation, evaluation, the speedrun's
# two epochs). Other backends refuse xla_cpu_* options, so only the CPU gets it.
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

    Compiling training and evaluation there while this thread initialises (or, for a short run, the initialisation
    and evaluation while this thread compiles training) saves a few tenths of a second a run on 2 cores (a call of
    a program still compiling waits for it); a failed compile raises at the end.
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
    """Programs compiled (or loaded from the persistent cache) and their total seconds since the counter started."""

    count: int = 0
    seconds: float = 0.0
    cache_hits: int = 0  # of `count`, the programs loaded from the persistent cache instead of compiled


_active: list[CompilationCounter] = []


def _on_duration(event: str, duration: float, **_) -> None:
    if event == COMPILE_EVENT:
        for counter in _active:
            counter.count += 1
            counter.seconds += duration


def _on_event(event: str, **_) -> None:
    if event == CACHE_HIT_EVENT:
        for counter in _active:
            counter.cache_hits += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)  # once per process; counters come and go
jax.monitoring.register_event_listener(_on_event)


@contextlib.contextmanager
def count_compilations() -> Iterator[CompilationCounter]:
    """Count the XLA compilations made inside the block."""
    counter = CompilationCounter()
    _active.append(counter)
    try:
        yield counter
    finally:
        _active.remove(counter)


def enable_compile_cache(enabled: bool = True) -> Path | None:
    """Save compiled programs on disk and load them in later runs, for the rest of the process; return the folder.

    The folder is `default_compile_cache_dir()`, kept under MNIST_JAX_COMPILE_CACHE_MB; or $JAX_COMPILATION_CACHE_DIR
    when set, used as JAX would, without our limit (JAX's eviction fails on entries it wrote there without one).
    `enabled=False` or MNIST_JAX_COMPILE_CACHE=0 turns the cache off, JAX's own included; a folder that cannot be
    written is one warning, and no cache.
    """
    if not (enabled and cache_enabled_by_environment()):
        if jax.config.jax_compilation_cache_dir:  # only a folder makes JAX use its cache
            _configure({"jax_enable_compilation_cache": False})
        return None
    limit = _size_limit_bytes()  # a bad value is an error before anything changes
    users_own = os.environ.get(JAX_CACHE_DIR_ENV)
    # Absolute: JAX's keys include the folder's path, which should not depend on the working directory.
    directory = Path(users_own or default_compile_cache_dir()).expanduser().absolute()
    if not _writable(directory):
        _configure({"jax_enable_compilation_cache": False})
        return None
    _configure(_cache_settings(directory, -1 if users_own else limit))
    _log_cache_warnings_once(directory)
    log.debug("Compiled programs are cached in %s.", directory)
    return directory


def default_compile_cache_dir() -> Path:
    """$MNIST_JAX_CACHE_DIR/compile, else compile/ beside the MNIST files' folder: ~/.cache/mnist_jax/compile."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    base = Path(explicit).expanduser() if explicit else default_cache_dir().parent
    return base / COMPILE_SUBDIR


@contextlib.contextmanager
def persistent_cache(directory: str | os.PathLike | None) -> Iterator[None]:
    """Inside the block, save compiled programs to `directory` and load them from it; None: no persistent cache.

    Every program is saved, however quick to compile, and nothing is evicted; the settings before are restored.
    """
    if directory is None:
        settings = {"jax_enable_compilation_cache": False}
    else:
        settings = _cache_settings(Path(directory), limit=-1) | {"jax_persistent_cache_min_compile_time_secs": 0.0}
    previous = _configure(settings)
    try:
        yield
    finally:
        _configure(previous)


def cache_enabled_by_environment() -> bool:
    """MNIST_JAX_COMPILE_CACHE as a yes or no (unset: yes)."""
    value = os.environ.get(COMPILE_CACHE_ENV, "").strip().lower()
    if value not in _OFF + _ON:
        raise UserError(f"{COMPILE_CACHE_ENV} must be 1 or 0 (on or off), got {value!r}.")
    return value not in _OFF


def _size_limit_bytes() -> int:
    """The cache's size limit from MNIST_JAX_COMPILE_CACHE_MB, else DEFAULT_CACHE_MB; -1 (none) without filelock."""
    text = os.environ.get(COMPILE_CACHE_MB_ENV, "").strip() or str(DEFAULT_CACHE_MB)
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{COMPILE_CACHE_MB_ENV} must be a positive whole number of megabytes, got {text!r}.")
    if importlib.util.find_spec("filelock") is None:  # JAX locks the folder with it while evicting
        log.debug("The compile cache has no size limit: JAX needs the filelock package to keep one.")
        return -1
    return int(text) * 2**20


def _cache_settings(directory: Path, limit: int) -> dict[str, Any]:
    """JAX's options for a persistent cache in `directory`; ones a user set through JAX's variables stay theirs."""
    settings = {"jax_compilation_cache_dir": str(directory), "jax_enable_compilation_cache": True}
    # JAX's default saves only programs that took a second or more to compile: on the CPU that is none of ours,
    # and every one loads in a fraction of its compile time.
    ours = {"jax_persistent_cache_min_compile_time_secs": 0.0, "jax_compilation_cache_max_size": limit}
    return settings | {name: value for name, value in ours.items() if name.upper() not in os.environ}


def _configure(settings: dict[str, Any]) -> dict[str, Any]:
    """Apply JAX config settings of the persistent cache; return the values they replace."""
    previous = {name: getattr(jax.config, name) for name in settings}
    if previous != settings:
        for name, value in settings.items():
            jax.config.update(name, value)
        jax_cache.reset_cache()  # JAX opens its cache, and decides whether to use it, once until reset
    return previous


def _writable(directory: Path) -> bool:
    """Whether `directory` is, or can be made, a folder that takes files; if not, warn."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        return True
    except OSError as error:
        chosen_by = JAX_CACHE_DIR_ENV if os.environ.get(JAX_CACHE_DIR_ENV) else CACHE_DIR_ENV
        log.warning("Compiled programs are not cached: %s is not a writable folder (%s); set %s to another folder "
                    "or %s=0 to turn the cache off.", directory, error.strerror or error, chosen_by, COMPILE_CACHE_ENV)
        return False


# What JAX warns, once per program, when an entry of its cache cannot be read (damaged) or written (disk full).
_CACHE_TROUBLE = re.compile(r"Error (reading|writing) persistent compilation cache|Cache value for key")


class _CacheWarnings:
    """A `warnings.showwarning` that logs JAX's warnings about its cache once per process, the rest at debug level.

    JAX never overwrites a damaged entry: its program compiles afresh in every run until the folder is deleted.
    """

    def __init__(self, show: Callable[..., None], folder: Path):
        self.show, self.folder, self.told = show, folder, threading.Event()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        if not _CACHE_TROUBLE.match(str(message)):
            self.show(message, category, filename, lineno, file, line)
        elif self.told.is_set():
            log.debug("%s", message)
        else:
            self.told.set()
            log.warning("The compile cache in %s failed (%s); those programs are compiled instead. Deleting the "
                        "folder starts the cache afresh.", self.folder, str(message).rstrip("."))


def _log_cache_warnings_once(directory: Path) -> None:
    """Route JAX's warnings about cache entries through `_CacheWarnings` (installed once per process)."""
    if isinstance(warnings.showwarning, _CacheWarnings):
        warnings.showwarning.folder = directory
    else:
        warnings.showwarning = _CacheWarnings(warnings.showwarning, directory)
