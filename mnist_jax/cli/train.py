"""`mnist-jax train`: train a model and leave a run directory.

Its flags are generated from `TrainConfig`: every field has one, with the field's comment as help.
"""

import argparse
import dataclasses
import logging
import time
import types
from typing import Any

from mnist_jax import config as cfg
from mnist_jax.cli import STARTED, add_compile_cache_flag, add_flag, use_compile_cache
from mnist_jax.recipes import RECIPES, recipe_config

log = logging.getLogger(__name__)

ALIASES = {"learning_rate": ("--lr",)}  # short names users know
MODEL_FIELDS = ("model", "filters", "hidden", "depth", "dropout", "dtype")  # what summary and benchmark take


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a model on MNIST and evaluate it on the test set",
                                 description="Train a model, validate every epoch, checkpoint every epoch, and "
                                             "evaluate once on the full test set.")
    add_flag(parser, "--recipe", "start from a named group of settings (mnist_jax/recipes.py); the other flags given "
                                 "override its fields", default=None, choices=tuple(RECIPES))
    add_config_flags(parser)
    add_flag(parser, "--run-dir", "where to write the run (default: a new folder under runs/)", default=None)
    add_flag(parser, "--resume", "continue the run in this directory from its newest good checkpoint "
                                 "(its config.json is used; only --epochs may change)", default=None, metavar="RUN_DIR")
    add_flag(parser, "--no-progress", "hide the progress bar", action="store_true")
    add_flag(parser, "--no-report", "skip report.html and the figures at the end", action="store_true")
    add_compile_cache_flag(parser)
    add_distributed_flags(parser)
    parser.set_defaults(run=run)


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    """--devices, and jax.distributed.initialize's arguments for a run over several processes (hosts)."""
    group = parser.add_argument_group("devices and hosts (data-parallel; every process gets the same command line)")
    add_flag(group, "--devices", "use the first N devices (default: all, of every process)", type=int, default=None,
             metavar="N")
    add_flag(group, "--coordinator-address", "HOST:PORT of process 0, for a run over several processes "
                                             "(default: none, or what Slurm, Open MPI or Kubernetes set)", default=None)
    add_flag(group, "--num-processes", "how many processes take part", type=int, default=None)
    add_flag(group, "--process-id", "this process's number, 0 to --num-processes minus 1", type=int, default=None)


def add_config_flags(parser: argparse.ArgumentParser, fields: tuple[str, ...] | None = None) -> None:
    """One flag per TrainConfig field (or per field named); a flag not given leaves no attribute on the args."""
    group = parser.add_argument_group("configuration (TrainConfig fields)")
    defaults, docs, choices = cfg.TrainConfig(), cfg.field_docs(), _choices()
    for field in dataclasses.fields(cfg.TrainConfig):
        if fields is not None and field.name not in fields:
            continue
        kind = _flag_type(field.type)
        options = {"dest": field.name, "default": argparse.SUPPRESS,
                   "help": f"{docs[field.name]} (default: {getattr(defaults, field.name)})"}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options |= {"type": kind, "choices": choices.get(field.name), "metavar": field.name.upper()}
            if options["choices"]:
                options["metavar"] = "{" + ",".join(options["choices"]) + "}"
        group.add_argument(cfg.flag(field.name), *ALIASES.get(field.name, ()), **options)


def config_from_args(args: argparse.Namespace, base: cfg.TrainConfig | None = None) -> cfg.TrainConfig:
    """`base` (the defaults) with the fields whose flags were given."""
    given = {field.name: getattr(args, field.name) for field in dataclasses.fields(cfg.TrainConfig)
             if hasattr(args, field.name)}
    return (base or cfg.TrainConfig()).replace(**given)


def run(args: argparse.Namespace) -> int:
    from mnist_jax import compilation, sharding
    from mnist_jax.data import load_datasets
    from mnist_jax.errors import UserError
    from mnist_jax.train import steps_in_epoch, train_and_evaluate

    sharding.initialize(args.coordinator_address, args.num_processes, args.process_id)  # before JAX starts
    use_compile_cache(args)
    primary = sharding.is_primary()
    if not primary:
        logging.getLogger("mnist_jax").setLevel(logging.WARNING)  # process 0 tells the story
    mesh = sharding.make_mesh(args.devices)
    config = _resumed_config(args) if args.resume else config_from_args(args, _recipe(args))
    run_dir = _run_dir(args, config, primary)  # claimed first: a second train on it is refused before any slow work
    seconds = {"start": time.perf_counter() - STARTED}
    try:
        datasets = load_datasets(config.dataset, config.source, config.data_dir, config.val_split, config.seed)
        steps_in_epoch(config, datasets)  # a batch larger than the data is an error before anything is written
        sharding.check_batch(config.batch_size, mesh)
    except UserError:
        if primary and not args.resume:
            run_dir.discard()  # a run that could not start leaves no empty run directory behind
        raise
    seconds["load"] = time.perf_counter() - STARTED - seconds["start"]
    if primary:
        print(f"Run directory: {run_dir.path}")
    with compilation.count_compilations() as compiled:
        result = train_and_evaluate(config, run_dir, mesh=mesh, datasets=datasets, resume=bool(args.resume),
                                    progress=primary and not args.no_progress)
    if not primary:
        return 0
    metrics = result.metrics
    print(f"Test accuracy: {metrics['test_accuracy']:.4f}  test loss: {metrics['test_loss']:.4f}  "
          f"({metrics['test_images']} images, {metrics['epochs']} epochs, {metrics['train_seconds']:.1f} s training)")
    seconds |= result.timings
    if not args.no_report:
        from mnist_jax.report import ReportInputs, write_report

        reported = time.perf_counter()
        print(f"Report: {write_report(ReportInputs.from_training(result, config, datasets))}")
        seconds["report"] = time.perf_counter() - reported
    if args.verbose:
        print(wall_time_split(seconds, compiled))
    return 0


def wall_time_split(seconds: dict[str, float], compiled: Any) -> str:
    """One line: the command's wall time so far and its phases, compilation (which overlaps them) last."""
    total = time.perf_counter() - STARTED
    phases = ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
    other = total - sum(seconds.values())
    loaded = f", {compiled.cache_hits} of them loaded from the compile cache" if compiled.cache_hits else ""
    return (f"Wall time {total:.1f} s: {phases}, other {other:.1f} s; {compiled.count} programs compiled in "
            f"{compiled.seconds:.1f} s within them (some on a second thread){loaded}.")


def _run_dir(args: argparse.Namespace, config: cfg.TrainConfig, primary: bool) -> Any:
    """The run directory: created and locked by process 0; the other processes of a multi-process run only name it."""
    import jax

    from mnist_jax.errors import UserError
    from mnist_jax.rundir import RunDir

    path = args.resume or args.run_dir
    if path is None and jax.process_count() > 1:
        raise UserError("A run over several processes needs --run-dir: every process must name the same folder.")
    if not primary:
        return RunDir(path, writes=False)
    return RunDir.open(path) if args.resume else RunDir.create(path, name=config.model)


def _recipe(args: argparse.Namespace) -> cfg.TrainConfig | None:
    """The configuration --recipe names, before the other flags are applied."""
    return recipe_config(args.recipe) if getattr(args, "recipe", None) else None


def _resumed_config(args: argparse.Namespace) -> cfg.TrainConfig:
    """The run's own configuration; --epochs, when given, extends (or shortens) it."""
    from mnist_jax import sharding
    from mnist_jax.rundir import CONFIG, RunDir

    run_dir = RunDir.open(args.resume)
    if sharding.is_primary():
        run_dir.lock()  # before reading its config: another process may be writing it
    config = cfg.TrainConfig.load(run_dir.path / CONFIG)
    ignored = [cfg.flag(field.name) for field in dataclasses.fields(cfg.TrainConfig)
               if field.name != "epochs" and hasattr(args, field.name)] + (["--recipe"] if args.recipe else [])
    if ignored:
        log.warning("Ignoring %s with --resume: a resumed run keeps its own configuration.", ", ".join(ignored))
    epochs = getattr(args, "epochs", config.epochs)
    if epochs != config.epochs:
        if config.schedule != "constant":
            log.warning("The %s schedule is stretched from %d to %d epochs, so the resumed run will not match an "
                        "uninterrupted one.", config.schedule, config.epochs, epochs)
        config = config.replace(epochs=epochs)  # written by the trainer once the checkpoint is restored
    return config


def _flag_type(annotation: type) -> type:
    """str for `str | None`; the annotation itself otherwise."""
    if isinstance(annotation, types.UnionType):
        return next(arg for arg in annotation.__args__ if arg is not type(None))
    return annotation


def _choices() -> dict[str, tuple[str, ...]]:
    """Field -> accepted names, from the registries (dataset is checked by the config: it depends on the source)."""
    return {"source": cfg.SOURCES, "loop": cfg.LOOPS,
            **{name: tuple(registry) for name, registry in cfg.registries().items()}}
