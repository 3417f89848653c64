"""`mnist-jax evaluate RUN_DIR [RUN_DIR ...]`: evaluate a saved run, or an ensemble of runs, on the full test set."""

import argparse

from mnist_jax import jsonio
from mnist_jax.cli import add_compile_cache_flag, add_flag, use_compile_cache


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="evaluate a run's checkpoint (or an ensemble of runs) on the full "
                                                  "test set",
                                 description="Restore a checkpoint of a run and evaluate it on every test image; with "
                                             "several runs, their averaged probabilities (an ensemble) and each run.")
    parser.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="a run directory written by `mnist-jax train`")
    add_flag(parser, "--which", "checkpoint to evaluate: best, latest or an epoch number", default="best")
    add_flag(parser, "--tta", "test-time augmentation: average each run's probabilities over the image as it is, "
                              "shifted one pixel each way and rotated 10 degrees each way", action="store_true")
    add_flag(parser, "--data-dir", "folder with the MNIST IDX files (default: the run's, then $MNIST_JAX_DATA_DIR)",
             default=None)
    add_flag(parser, "--json", "print the metrics as one JSON object", action="store_true")
    add_compile_cache_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mnist_jax.predictor import evaluate_run, evaluate_runs

    use_compile_cache(args)
    if len(args.run_dirs) == 1 and not args.tta:
        metrics = evaluate_run(args.run_dirs[0], which=args.which, data_dir=args.data_dir)
    else:
        metrics = evaluate_runs(args.run_dirs, which=args.which, data_dir=args.data_dir, tta=args.tta)
    if args.json:
        print(jsonio.dumps(metrics))
        return 0
    for member in metrics.get("members", []):
        print(f"{member['run_dir']}, epoch {member['epoch']} ({args.which}): test accuracy "
              f"{member['test_accuracy']:.4f}, test loss {member['test_loss']:.4f}")
    what = f"Epoch {metrics['epoch']} ({args.which})" if "epoch" in metrics else (
        f"Ensemble of {len(metrics['members'])}" if len(metrics["members"]) > 1 else "With TTA")
    print(f"{what}: test accuracy {metrics['test_accuracy']:.4f}, test loss {metrics['test_loss']:.4f} on "
          f"{metrics['test_images']} images")
    return 0
