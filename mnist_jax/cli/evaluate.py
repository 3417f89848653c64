"""`mnist-jax evaluate RUN_DIR`: evaluate a saved run on the full test set."""

import argparse

from mnist_jax import jsonio
from mnist_jax.cli import add_flag


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="evaluate a run's checkpoint on the full test set",
                                 description="Restore a checkpoint of a run and evaluate it on every test image.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `mnist-jax train`")
    add_flag(parser, "--which", "checkpoint to evaluate: best, latest or an epoch number", default="best")
    add_flag(parser, "--data-dir", "folder with the MNIST IDX files (default: the run's, then $MNIST_JAX_DATA_DIR)",
             default=None)
    add_flag(parser, "--json", "print the metrics as one JSON object", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mnist_jax.predictor import evaluate_run

    metrics = evaluate_run(args.run_dir, which=args.which, data_dir=args.data_dir)
    if args.json:
        print(jsonio.dumps(metrics))
    else:
        print(f"Epoch {metrics['epoch']} ({args.which}): test accuracy {metrics['test_accuracy']:.4f}, "
              f"test loss {metrics['test_loss']:.4f} on {metrics['test_images']} images")
    return 0
