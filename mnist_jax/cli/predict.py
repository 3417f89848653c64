"""`mnist-jax predict RUN_DIR`: classify image files or random test images, or benchmark the predictor."""

import argparse
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_jax import jsonio
from mnist_jax.cli import EXIT_USER_ERROR, add_compile_cache_flag, add_flag, print_error, use_compile_cache
from mnist_jax.errors import UserError

if TYPE_CHECKING:  # importing the predictor loads JAX, which `--help` should not wait for
    from mnist_jax.predictor import Predictor


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="predict digits in image files or random test images",
                                 usage="%(prog)s RUN_DIR (FILE [FILE ...] | --random N | --benchmark) [options]",
                                 description="Restore a checkpoint of a run and classify PNG/JPEG files (any size; "
                                             "they are centred MNIST-style), random test images, or time it.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `mnist-jax train`, "
                                                           "or its checkpoints folder")
    # nargs="+" made optional, not nargs="*": argparse lets a "*" positional match nothing right after RUN_DIR,
    # which would reject files that follow an option (`predict RUN --which 3 a.png`).
    files = parser.add_argument("files", metavar="FILE", nargs="+", default=[],
                                help="PNG or JPEG images of one digit each")
    files.required = False
    add_flag(parser, "--which", "checkpoint to use: best, latest or an epoch number", default="best")
    add_flag(parser, "--random", "predict this many random test images instead of files", type=int, default=None,
             metavar="N")
    add_flag(parser, "--seed", "seed that picks the random test images", type=int, default=0)
    add_flag(parser, "--data-dir", "folder with the MNIST IDX files (default: the run's, then $MNIST_JAX_DATA_DIR)",
             default=None)
    add_flag(parser, "--benchmark", "measure single-image latency and batched throughput instead",
             action="store_true")
    add_flag(parser, "--json", "print machine-readable JSON", action="store_true")
    add_compile_cache_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mnist_jax.predictor import Predictor

    _check_mode(args)
    use_compile_cache(args)
    predictor = Predictor.load(args.run_dir, args.which)
    if args.benchmark:
        return _benchmark(predictor, args.json)
    if args.random is not None:
        return _random(predictor, args)
    return _files(predictor, args.files, args.json)


def _check_mode(args: argparse.Namespace) -> None:
    """Exactly one of: files, --random N, --benchmark."""
    modes = [bool(args.files), args.random is not None, args.benchmark]
    if sum(modes) != 1:
        raise UserError("Give image files, --random N or --benchmark (exactly one) after the run directory.")
    if args.random is not None and args.random < 1:
        raise UserError(f"--random must be a positive number of images, got {args.random}.")


def _files(predictor: "Predictor", files: list[str], as_json: bool) -> int:
    """Classify every readable file; name each unreadable one on stderr, and exit 2 if there was any."""
    loaded = [_load(file) for file in files]  # pixels, or the error that names the file
    good = [i for i, item in enumerate(loaded) if not isinstance(item, UserError)]
    probabilities_NxK = predictor.predict_proba(np.stack([loaded[i] for i in good])) if good else []
    results = {i: _result(files[i], probabilities) for i, probabilities in zip(good, probabilities_NxK)}
    if as_json:
        print(jsonio.dumps(list(results.values())), flush=True)
    for i, result in enumerate(loaded):  # in the order given, so a terminal shows each error where its file was
        if i not in results:
            print_error(result)
        elif not as_json:
            confidence = max(results[i]["probabilities"])
            print(f"{files[i]}  {_name(predictor, results[i]['label'])}  {confidence:.4f}", flush=True)
    return EXIT_USER_ERROR if len(results) < len(files) else 0


def _load(file: str) -> "np.ndarray | UserError":
    """A file's MNIST-style pixels, or the one-sentence error saying why it cannot be read."""
    from mnist_jax.images import load_mnist_image

    try:
        return load_mnist_image(file)
    except UserError as error:
        return error


def _random(predictor: "Predictor", args: argparse.Namespace) -> int:
    from mnist_jax.predictor import random_test_images

    indices, test = random_test_images(args.run_dir, predictor.meta, args.random, args.seed, args.data_dir)
    probabilities_NxK = predictor.predict_proba(test.images)
    results = [_result(f"test[{index}]", probabilities) | {"true_label": int(label)}
               for index, probabilities, label in zip(indices, probabilities_NxK, test.labels)]
    if args.json:
        print(jsonio.dumps(results))
        return 0
    for result in results:
        mark = "ok" if result["label"] == result["true_label"] else "WRONG"
        print(f"{result['input']:>12}  predicted {_name(predictor, result['label'])}  "
              f"true {_name(predictor, result['true_label'])}  {max(result['probabilities']):.4f}  {mark}")
    correct = sum(result["label"] == result["true_label"] for result in results)
    print(f"{correct}/{len(results)} correct")
    return 0


def _benchmark(predictor: "Predictor", as_json: bool) -> int:
    from mnist_jax.predictor_bench import benchmark_predictor

    report = benchmark_predictor(predictor)
    if as_json:
        print(jsonio.dumps(report))
        return 0
    print(f"{report['model']} on {report['device']}: single image {report['latency_median_ms']:.3f} ms median "
          f"({report['latency_p90_ms']:.3f} ms p90, {report['latency_calls']} calls)")
    for row in report["throughput"]:
        print(f"batch {row['batch_size']:>5}: {row['images_per_second']:>10.0f} images/s "
              f"({row['median_ms']:.3f} ms per call)")
    return 0


def _result(name: str, probabilities: np.ndarray) -> dict[str, Any]:
    return {"input": name, "label": int(probabilities.argmax()),
            "probabilities": [float(p) for p in probabilities]}


def _name(predictor: "Predictor", label: int) -> str:
    """The label, with its class name when that says more than the number (e.g. Fashion-MNIST)."""
    name = predictor.class_names[label]
    return str(label) if name == str(label) else f"{label} ({name})"
