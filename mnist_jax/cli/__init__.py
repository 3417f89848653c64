"""The `mnist-jax` command line: parse flags, call the library, print results."""

import argparse
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence

from mnist_jax.errors import UserError, first_line

EXIT_USER_ERROR = 2  # the same code argparse uses for a bad flag
EXIT_INTERRUPTED = 130
STARTED = time.perf_counter()  # when the command started (after Python itself): wall-time splits count from here
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per module in mnist_jax.cli."""
    from mnist_jax.cli import benchmark, evaluate, figures, predict, speedrun, summary, train

    parser = argparse.ArgumentParser(prog="mnist-jax", description="The classic MNIST workflow in JAX, Flax and Optax.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (train, evaluate, predict, summary, figures, benchmark, speedrun):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors end in one sentence on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    previous = _interrupt_on_sigterm()
    try:
        return args.run(args) or 0
    except UserError as error:
        print_error(error)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("mnist-jax: interrupted; checkpoints already written are kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        print_error(UserError(f"The network or batch does not fit in memory ({first_line(error).rstrip('.')}); use a "
                              f"smaller --hidden, --depth, --filters, --batch-size or --eval-batch-size."))
        return EXIT_USER_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _out_of_memory(error: BaseException) -> bool:
    """Whether an error is a failed allocation: Python's MemoryError, or XLA's on the host or an accelerator."""
    if isinstance(error, MemoryError):
        return True
    jax = sys.modules.get("jax")  # an XLA error means JAX is loaded; a command that never loaded it need not
    return (jax is not None and isinstance(error, jax.errors.JaxRuntimeError)
            and any(mark in str(error) for mark in ("RESOURCE_EXHAUSTED", "Out of memory")))


def _interrupt_on_sigterm() -> "signal.Handlers | None":
    """Make SIGTERM (kill, a scheduler's stop) end a command as Ctrl-C does; return the handler it replaces."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def print_error(error: UserError) -> None:
    """Print a user error as the one sentence every command ends with."""
    print(f"mnist-jax: error: {error}", file=sys.stderr)


def _configure_logging(verbose: bool, quiet: bool) -> None:
    """Our logs at INFO (DEBUG with -v); third-party logs (Orbax's, through absl) only when fatal, or errors with -v."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mnist_jax").setLevel(level)
    try:
        from absl import logging as absl_logging

        # Orbax logs each failure it then raises, with tracebacks, from several threads; the error we raise names
        # it in one sentence, and -v shows the logs.
        absl_logging.set_verbosity(absl_logging.ERROR if verbose else absl_logging.FATAL)
    except ImportError:
        pass
    # A failed Orbax read abandons asyncio tasks and callbacks; when they are collected, after our one-sentence
    # error, Python would print their tracebacks. -v shows them; our code runs no asyncio of its own.
    if not verbose:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    if sys.unraisablehook is sys.__unraisablehook__:  # Python's printer; a host's own hook (pytest's) stays
        sys.unraisablehook = _quiet_async_leftovers


def _quiet_async_leftovers(unraisable: "sys.UnraisableHookArgs") -> None:
    """Send exceptions left over from Orbax's asynchronous reads to the debug log; print any other as Python does."""
    frames = [frame.f_code.co_filename for frame, _ in traceback.walk_tb(unraisable.exc_traceback)]
    if any(f"{os.sep}asyncio{os.sep}" in name or f"{os.sep}orbax{os.sep}" in name for name in frames):
        log.debug("Ignored after a failed asynchronous read: %s", unraisable.exc_value,
                  exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback))
    else:
        sys.__unraisablehook__(unraisable)


def add_flag(parser: argparse.ArgumentParser, flag: str, help: str, **kwargs) -> None:
    """Add a flag whose help text shows its default."""
    default = kwargs.get("default")
    suffix = "" if default is None or kwargs.get("action") == "store_true" else f" (default: {default})"
    parser.add_argument(flag, help=help + suffix, **kwargs)


def add_compile_cache_flag(parser: argparse.ArgumentParser) -> None:
    """--no-compile-cache, for the commands that compile programs."""
    add_flag(parser, "--no-compile-cache", "compile every program afresh instead of loading the ones earlier runs "
                                           "saved in the cache folder (MNIST_JAX_COMPILE_CACHE=0 does the same)",
             action="store_true")


def use_compile_cache(args: argparse.Namespace) -> None:
    """Load compiled programs saved by earlier runs, and save new ones, unless --no-compile-cache says not to."""
    from mnist_jax.compilation import enable_compile_cache

    enable_compile_cache(not args.no_compile_cache)
