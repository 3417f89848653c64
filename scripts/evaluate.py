"""Thin script: the same as `mnist-jax evaluate ...`; all logic lives in the mnist_jax package."""

import sys

from mnist_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
