"""Shared by the thin scripts: run one `mnist-jax` command with this script's arguments."""

import sys
from pathlib import Path


def run(command: str) -> None:
    """Exit with the status of `mnist-jax COMMAND ARGS...`, using this checkout's package."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a plain checkout works without installing
    from mnist_jax.cli import main

    sys.exit(main([command, *sys.argv[1:]]))
