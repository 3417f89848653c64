"""The same as `mnist-jax samples ...`; all logic lives in the mnist_jax package."""

from _command import run

if __name__ == "__main__":
    run("samples")
