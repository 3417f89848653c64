"""Count XLA compilations, so tests and benchmarks can show that shapes stay fixed."""

import contextlib
import dataclasses
from collections.abc import Iterator

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # recorded once per XLA compilation


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
