"""`mnist-jax samples`, `mnist-jax report RUN_DIR` and `mnist-jax plots RUN_DIR`: pictures of the data and of a run."""

import argparse

from mnist_jax import config as cfg
from mnist_jax.cli import add_compile_cache_flag, add_flag, use_compile_cache

DEFAULTS = cfg.TrainConfig()
DEFAULT_SAMPLES_FILE = "samples.png"
DEFAULT_COUNT = 20  # plots.DEFAULT_SAMPLES, not imported so that --help needs no matplotlib


def register(commands: argparse._SubParsersAction) -> None:
    _register_samples(commands)
    for name, run, help in (("report", run_report, "write a run's figures and a self-contained report.html"),
                            ("plots", run_plots, "write a run's figures only (no HTML)")):
        parser = commands.add_parser(name, help=help, description=f"Evaluate a run's checkpoint on the test set and "
                                                                   f"{help.removeprefix('write ')}.")
        parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `mnist-jax train`")
        add_flag(parser, "--which", "checkpoint to use: best, latest or an epoch number", default="best")
        add_flag(parser, "--data-dir", "folder with the MNIST IDX files (default: the run's, then $MNIST_JAX_DATA_DIR)",
                 default=None)
        add_compile_cache_flag(parser)
        parser.set_defaults(run=run)


def _register_samples(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("samples", help="save a grid of random training images with their labels",
                                 description="Pick seeded random training images and save them, labelled, as a PNG.")
    add_flag(parser, "--count", "number of images", type=int, default=DEFAULT_COUNT)
    add_flag(parser, "--out", "PNG file to write", default=DEFAULT_SAMPLES_FILE)
    add_flag(parser, "--dataset", "mnist or digits; with --source tfds any prepared 28x28x1 TFDS dataset",
             default=DEFAULTS.dataset)
    add_flag(parser, "--source", "idx or tfds", choices=cfg.SOURCES, default=DEFAULTS.source)
    add_flag(parser, "--data-dir", "folder with the MNIST IDX files, or the TFDS data_dir", default=None)
    add_flag(parser, "--seed", "seed of the random choice", type=int, default=DEFAULTS.seed)
    parser.set_defaults(run=run_samples)


def run_samples(args: argparse.Namespace) -> int:
    from mnist_jax.data import load_train_test
    from mnist_jax.plots import plot_samples, save_figure

    train, _ = load_train_test(args.dataset, args.source, args.data_dir)
    print(save_figure(plot_samples(train.images, train.labels, args.count, seed=args.seed), args.out))
    return 0


def run_report(args: argparse.Namespace) -> int:
    from mnist_jax.report import write_report

    use_compile_cache(args)
    print(write_report(args.run_dir, which=args.which, data_dir=args.data_dir))
    return 0


def run_plots(args: argparse.Namespace) -> int:
    from mnist_jax.report import write_figures

    use_compile_cache(args)
    for path in write_figures(args.run_dir, which=args.which, data_dir=args.data_dir).figures.values():
        print(path)
    return 0
