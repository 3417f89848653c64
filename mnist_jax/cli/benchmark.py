"""`mnist-jax benchmark`: training and inference speed of one model configuration."""

import argparse

from mnist_jax import jsonio
from mnist_jax.cli import add_flag
from mnist_jax.cli.train import MODEL_FIELDS, add_config_flags, config_from_args

BENCHMARK_FIELDS = (*MODEL_FIELDS, "batch_size", "loop", "fast_compile", "seed")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("benchmark", help="measure training and inference images/s, compile time, memory",
                                 description="Time the jitted training step and batched inference on MNIST-sized "
                                             "data already on the device: warm-up untimed, compile time reported "
                                             "apart, every timing blocked on the device, median of repeats.")
    add_config_flags(parser, BENCHMARK_FIELDS)
    add_flag(parser, "--steps", "training steps per timed call", type=int, default=200)
    add_flag(parser, "--devices", "data-parallel over the first N devices (default: all)", type=int, default=None,
             metavar="N")
    add_flag(parser, "--repeats", "timed calls; the median is reported", type=int, default=5)
    add_flag(parser, "--json", "print one JSON object", action="store_true")
    add_flag(parser, "--no-compile-cache", "report cold compile times only, without compiling again from a "
                                           "temporary compile cache (the warm times)", action="store_true")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mnist_jax.benchmark import benchmark
    from mnist_jax.compilation import cache_enabled_by_environment
    from mnist_jax.errors import UserError

    if args.steps < 1 or args.repeats < 1:
        raise UserError("--steps and --repeats must be positive integers.")
    config = config_from_args(args)
    result = benchmark(config, steps=args.steps, repeats=args.repeats, devices=args.devices,
                       warm_compile=not args.no_compile_cache and cache_enabled_by_environment())
    if args.json:
        print(jsonio.dumps(result))
        return 0
    print(f"{result['model']} batch {result['batch_size']} {result['dtype']} ({result['loop']} loop) "
          f"on {result['devices']} x {result['device']} ({result['processor']})")
    print(f"  training:  {result['train_images_per_second']:>10,.0f} images/s  "
          f"{result['train_gflops_per_second']:>7.2f} GFLOP/s  compile {_compile(result, 'train')}")
    print(f"  inference: {result['eval_images_per_second']:>10,.0f} images/s  "
          f"{result['eval_gflops_per_second']:>7.2f} GFLOP/s  compile {_compile(result, 'eval')}")
    print(f"  compilations after warm-up: {result['compilations_after_warmup']}  "
          f"peak memory: {result['peak_memory_bytes'] / 2**20:,.0f} MiB")
    return 0


def _compile(result: dict, program: str) -> str:
    """Cold compile seconds, and warm (from the compile cache) where measured."""
    cold, warm = result[f"{program}_compile_seconds"], result[f"{program}_compile_seconds_warm"]
    return f"{cold:.2f} s" if warm is None else f"{cold:.2f} s cold, {warm:.2f} s warm"
