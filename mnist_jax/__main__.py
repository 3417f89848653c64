"""Allow `python -m mnist_jax`."""

import sys

from mnist_jax.cli import main

sys.exit(main())
