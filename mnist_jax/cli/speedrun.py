"""`mnist-jax speedrun`: time the fastest known recipe to 99% test accuracy over several seeds."""

import argparse

from mnist_jax import jsonio
from mnist_jax.cli import add_flag


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("speedrun", help="time a fast recipe to 99%% test accuracy over several seeds",
                                 description="Train the speedrun recipe once per seed from MNIST already in memory "
                                             "and report test accuracy and wall time (device transfer, "
                                             "compilation, training and test evaluation included). The compile "
                                             "cache stays off: every seed compiles cold, so times compare across "
                                             "runs.")
    add_flag(parser, "--seeds", "number of seeds (0, 1, ...)", type=int, default=5)
    add_flag(parser, "--data-dir", "folder with the MNIST IDX files (default: $MNIST_JAX_DATA_DIR, else download)",
             default=None)
    add_flag(parser, "--json", "print one JSON object", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mnist_jax.data import load_datasets
    from mnist_jax.errors import UserError
    from mnist_jax.speedrun import TARGET_ACCURACY, run_speedrun

    if args.seeds < 1:
        raise UserError(f"--seeds must be a positive integer, got {args.seeds}.")
    result = run_speedrun(load_datasets("mnist", data_dir=args.data_dir, val_split=0.0), seeds=args.seeds)
    if args.json:
        print(jsonio.dumps(result))
        return 0
    for run_result in result["runs"]:
        print(f"seed {run_result['seed']}: test accuracy {run_result['test_accuracy']:.4f}  "
              f"{run_result['seconds']:.2f} s")
    print(f"mean {result['test_accuracy_mean']:.4f} (min {result['test_accuracy_min']:.4f}, max "
          f"{result['test_accuracy_max']:.4f})  time mean {result['seconds']:.2f} s (min {result['seconds_min']:.2f}, "
          f"max {result['seconds_max']:.2f}) on {result['device']}, cold compiles (compile cache off)")
    if not result["all_reached_target"]:
        print(f"Not every seed reached {TARGET_ACCURACY:.1%}.")
    return 0
