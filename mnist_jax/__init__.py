"""mnist_jax: the classic MNIST workflow in pure JAX, Flax, Optax and Orbax."""

__version__ = "0.1.0"
