"""Thin script: the same as `mnist-jax train ...`; all logic lives in the mnist_jax package."""

import sys

from mnist_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
