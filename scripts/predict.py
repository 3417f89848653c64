"""Predict digits with a trained run: the same as `mnist-jax predict ...`.

Example: python scripts/predict.py runs/RUN --random 10
"""

import sys
from pathlib import Path

# Run from a plain checkout too: this repository's package wins over any installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mnist_jax.cli import main  # noqa: E402 - needs the path above

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
