"""`mnist-jax train`: train a model and leave a run directory."""

import argparse
import logging

from mnist_jax import config as cfg
from mnist_jax.cli import add_flag
from mnist_jax.models import MODELS

DEFAULTS = cfg.TrainConfig()
log = logging.getLogger(__name__)

# flag -> (TrainConfig field, type, choices, help)
MODEL_FLAGS = {
    "--model": ("model", str, tuple(MODELS), "network: the dense mlp or the cnn"),
    "--filters": ("filters", int, None, "CNN convolution channels"),
    "--hidden": ("hidden", int, None, "width of the dense hidden layer(s)"),
    "--depth": ("depth", int, None, "MLP hidden layers"),
    "--dropout": ("dropout", float, None, "dropout rate before the output layer"),
    "--dtype": ("dtype", str, cfg.DTYPES, "compute dtype (parameters stay float32)"),
}
FLAGS = {
    **MODEL_FLAGS,
    "--epochs": ("epochs", int, None, "passes over the training split"),
    "--batch-size": ("batch_size", int, None, "training batch size"),
    "--lr": ("learning_rate", float, None, "peak learning rate"),
    "--optimizer": ("optimizer", str, cfg.OPTIMIZERS, "optimizer"),
    "--schedule": ("schedule", str, cfg.SCHEDULES, "learning-rate schedule"),
    "--loss": ("loss", str, cfg.LOSSES, "sparse: integer labels; categorical: one-hot labels"),
    "--label-smoothing": ("label_smoothing", float, None, "probability mass of each training target spread over "
                                                          "all classes"),
    "--val-split": ("val_split", float, None, "fraction of the training data held out (stratified) for validation"),
    "--seed": ("seed", int, None, "seed for parameters, validation split, data order and dropout"),
    "--init": ("init", str, cfg.INITS, "flax: each layer draws its own initial values; one_draw: the same "
                                       "distributions from one random draw, which compiles faster"),
    "--dataset": ("dataset", str, None, "mnist or digits (offline, from scikit-learn); with --source tfds any "
                                        "prepared 28x28x1 TFDS dataset, e.g. fashion_mnist"),
    "--source": ("source", str, cfg.SOURCES, "idx: MNIST IDX files (folder or download); tfds: tfds.data_source"),
    "--data-dir": ("data_dir", str, None, "folder with the MNIST IDX files, or the TFDS data_dir "
                                          "(default: $MNIST_JAX_DATA_DIR, else download once into the cache)"),
    "--eval-batch-size": ("eval_batch_size", int, None, "evaluation batch size"),
    "--steps-per-call": ("steps_per_call", int, None, "training steps per jitted call; 0 = a whole epoch per call"),
    "--loop": ("loop", str, cfg.LOOPS, "scan: many steps per jitted call; step: one call per step"),
}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model on MNIST and evaluate it on the test set",
                                 description="Train a model, validate every epoch, checkpoint every epoch, and "
                                             "evaluate once on the full test set.")
    add_config_flags(parser, FLAGS)
    add_flag(parser, "--run-dir", "where to write the run (default: a new folder under runs/)", default=None)
    add_flag(parser, "--resume", "continue the run in this directory from its newest good checkpoint "
                                 "(its config.json is used; only --epochs may change)", default=None, metavar="RUN_DIR")
    add_flag(parser, "--no-progress", "hide the progress bar", action="store_true")
    parser.set_defaults(epochs=None)  # unset: the default, or with --resume the run's own epochs
    add_flag(parser, "--no-report", "skip report.html and the figures at the end", action="store_true")
    parser.set_defaults(run=run)


def add_config_flags(parser: argparse.ArgumentParser, flags: dict) -> None:
    """Add flags that set TrainConfig fields, with the config's defaults."""
    for flag, (field, kind, choices, help) in flags.items():
        add_flag(parser, flag, help, type=kind, choices=choices, default=getattr(DEFAULTS, field))


def config_from_args(args: argparse.Namespace, flags: dict = FLAGS) -> cfg.TrainConfig:
    """The TrainConfig the flags describe (fields without a flag, or left unset, keep their defaults)."""
    values = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, *_) in flags.items()}
    return cfg.TrainConfig(**{field: value for field, value in values.items() if value is not None})


def run(args: argparse.Namespace) -> int:
    from mnist_jax.data import load_datasets
    from mnist_jax.rundir import RunDir
    from mnist_jax.trainer import steps_in_epoch, train_and_evaluate

    config = _resumed_config(args) if args.resume else config_from_args(args)
    # Load the data before creating anything, so a data error leaves no empty run directory behind.
    datasets = load_datasets(config.dataset, config.source, config.data_dir, config.val_split, config.seed)
    steps_in_epoch(config, datasets)  # a batch larger than the data is an error before anything is written
    run_dir = RunDir.open(args.resume) if args.resume else RunDir.create(args.run_dir, name=config.model)
    print(f"Run directory: {run_dir.path}")
    result = train_and_evaluate(config, run_dir, datasets=datasets, progress=not args.no_progress,
                                resume=bool(args.resume))
    metrics = result.metrics
    print(f"Test accuracy: {metrics['test_accuracy']:.4f}  test loss: {metrics['test_loss']:.4f}  "
          f"({metrics['test_images']} images, {metrics['epochs']} epochs, {metrics['train_seconds']:.1f} s training)")
    if not args.no_report:
        from mnist_jax.report import write_report

        print(f"Report: {write_report(run_dir.path)}")
    return 0


def _resumed_config(args: argparse.Namespace) -> cfg.TrainConfig:
    """The run's own configuration; --epochs, when given, extends (or shortens) it."""
    from mnist_jax.rundir import CONFIG, RunDir

    run_dir = RunDir.open(args.resume)
    config = cfg.TrainConfig.load(run_dir.path / CONFIG)
    ignored = [flag for flag, (field, *_) in FLAGS.items()
               if field != "epochs" and getattr(args, flag[2:].replace("-", "_")) != getattr(DEFAULTS, field)]
    if ignored:
        log.warning("Ignoring %s with --resume: a resumed run keeps its own configuration.", ", ".join(ignored))
    if args.epochs is not None and args.epochs != config.epochs:
        if config.schedule != "constant":
            log.warning("The %s schedule is stretched from %d to %d epochs, so the resumed run will not match an "
                        "uninterrupted one.", config.schedule, config.epochs, args.epochs)
        config = config.replace(epochs=args.epochs)  # written by the trainer once the checkpoint is restored
    return config
