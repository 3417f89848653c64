"""Which programs XLA compiles, and on which thread: read from JAX's compile log (tests that count compiles)."""

import contextlib
import logging
from collections.abc import Iterator

import jax

FINISHED = "Finished XLA compilation of jit("  # how JAX logs each compile, then the program's name and ")"


class CompiledPrograms(logging.Handler):
    """Collects (program name, compiled on the main thread) for each compile JAX logs."""

    def __init__(self):
        super().__init__()
        self.compiled: list[tuple[str, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(FINISHED):
            self.compiled.append((message[len(FINISHED):].split(")")[0], record.threadName == "MainThread"))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.compiled]


@contextlib.contextmanager
def logged_compiles() -> Iterator[CompiledPrograms]:
    """The compiles of every thread inside the block (jax.log_compiles() would log the calling thread's alone)."""
    handler, jax_logger = CompiledPrograms(), logging.getLogger("jax")
    jax_logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        yield handler
    finally:
        jax.config.update("jax_log_compiles", False)
        jax_logger.removeHandler(handler)
