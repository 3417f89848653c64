"""Compare mnist_jax with PyTorch eager on the same machine, in one run, the two sides taking turns.

    python scripts/compare_pytorch.py --batch-sizes 32,64,128,256,512   # training, images/s per batch size
    python scripts/compare_pytorch.py --inference                        # prediction at batch 1, 64 and 512
    python scripts/compare_pytorch.py --speedrun --seeds 5               # `mnist-jax speedrun` vs tuomaso's recipe

Training: the article CNN (Conv 32 3x3 VALID, ReLU, MaxPool 2, Dense 128, ReLU, Dense 10) with Adam (lr 1e-3) and
softmax cross-entropy, on MNIST-sized uint8 data already in memory, normalised on the fly; mnist_jax runs its
training program as `mnist-jax benchmark` times it (`--plain-flax` adds the obvious Flax step loop).
Inference: the mnist_jax Predictor, end to end from a NumPy uint8 batch to NumPy logits as `mnist-jax predict
--benchmark` times it, against the same network with the same weights in PyTorch (eval mode, inference_mode,
the uint8 batch normalised on the fly, logits back to NumPy); the two are checked to agree first.
Speedrun: real MNIST (--data-dir or $MNIST_JAX_DATA_DIR); see `tuomaso_run` for what each side's time includes.

Warm-up is untimed (training, inference); the sides take turns, once each per round (per seed for the
speedrun), and every ratio is the median of the rounds' ratios, so the machine's speed swings hit both sides alike.
JAX uses its default device; --torch-device cuda puts PyTorch on the GPU (with CUDA builds of both).

PyTorch is not a dependency of mnist_jax. Install it into the same environment first:
    pip install torch==2.13.0
or a CPU-only build: pip install torch --index-url https://download.pytorch.org/whl/cpu
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mnist_jax.benchmark import DATASET_SIZE, synthetic_data, training_run
from mnist_jax.config import TrainConfig
from mnist_jax.environment import describe_environment
from mnist_jax.train import initial_state

Timer = Callable[[], float]  # one timed run of the same work: seconds

DEFAULT_BATCH_SIZES = {"training": (64,), "inference": (1, 64, 512)}
# Images each side handles per round at each batch size: 300 steps at batch 64, 64 calls at batch 64.
DEFAULT_IMAGES = {"training": 19_200, "inference": 4_096}
WARMUP_CALLS = 3  # untimed inference calls per side first: compilation and caches


# Training ---------------------------------------------------------------------------------------------------------

def mnist_jax_timer(config: TrainConfig, steps: int) -> Timer:
    """mnist_jax's training program, exactly as `mnist-jax benchmark` times it, compiled and warmed up."""
    images, labels = synthetic_data(config.seed)
    run = training_run(config, images, labels, steps)
    return _warmed_up_timer(run, initial_state(config, steps_per_epoch=steps))


def _warmed_up_timer(run: Callable[[Any], Any], state: Any) -> Timer:
    """Run once untimed (compilation, warm-up), then time each call, every run going on from the last state."""
    state = run(state)

    def timed() -> float:
        nonlocal state
        started = time.perf_counter()
        state = run(state)
        return time.perf_counter() - started

    return timed


def plain_flax_timer(batch_size: int, steps: int, seed: int = 0) -> Timer:
    """The obvious Flax version (nn.Conv, nn.max_pool), one jitted step per batch: the baseline we started from."""
    import jax
    import optax

    from mnist_jax.layers import PlainCNN
    from mnist_jax.losses import loss_from_config
    from mnist_jax.steps import epoch_plan, init_state, train_one_step

    images, labels = synthetic_data(seed)  # the same images as mnist_jax's side
    batches = list(epoch_plan(seed, 1, DATASET_SIZE, batch_size)[0][:steps])

    def run(state):
        for indices in batches:
            state, metrics = train_one_step(state, images, labels, indices, jax.random.key(0))
        return jax.block_until_ready(state)

    return _warmed_up_timer(run, init_state(PlainCNN(), optax.adam(1e-3), loss_from_config("sparse"), seed))


def torch_article_cnn(device: str):
    """The article CNN in PyTorch (NCHW), PyTorch's default initialisation."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(13 * 13 * 32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(device)


def torch_timer(batch_size: int, steps: int, device: str = "cpu", seed: int = 0) -> Timer:
    """The article CNN trained in PyTorch eager on `device` ("cpu" or "cuda"), warmed up."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (DATASET_SIZE, 1, 28, 28), np.uint8)).to(device)
    labels = torch.from_numpy(rng.integers(0, 10, DATASET_SIZE)).to(device)
    model = torch_article_cnn(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def timed() -> float:
        started = time.perf_counter()
        order = torch.randperm(DATASET_SIZE, device=device)
        for step in range(steps):
            indices = order[step * batch_size:(step + 1) * batch_size]
            batch = images[indices].float() / 255
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(batch), labels[indices]).backward()
            optimizer.step()
        _synchronize(device)
        return time.perf_counter() - started

    timed()  # warm-up
    return timed


def _synchronize(device: str) -> None:
    """CUDA work is asynchronous: wait for it before reading the clock."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def training_timers(batch_size: int, steps: int, device: str, plain_flax: bool) -> dict[str, Timer]:
    """The sides that train `steps` steps at `batch_size`, each warmed up."""
    # The article's optimizer (constant Adam 1e-3), so both sides do the same work per step.
    config = TrainConfig(model="cnn", batch_size=batch_size, schedule="constant", learning_rate=1e-3)
    timers = {"jax": mnist_jax_timer(config, steps), "torch": torch_timer(batch_size, steps, device)}
    if plain_flax:
        timers["plain"] = plain_flax_timer(batch_size, steps)
    return timers


# Inference --------------------------------------------------------------------------------------------------------

def inference_timers(batch_size: int, calls: int, device: str, seed: int = 0) -> dict[str, Timer]:
    """The Predictor and PyTorch eager, the same article CNN and weights, `calls` calls on one uint8 batch each."""
    import jax
    import torch

    from mnist_jax.models import create_model
    from mnist_jax.predictor import Predictor

    model = create_model("cnn")
    params = model.init(jax.random.key(seed), np.zeros((1, 28, 28, 1), np.float32))["params"]
    predictor = Predictor(model, params)
    torch_model = torch_article_cnn(device).eval()
    torch_model.load_state_dict(torch_weights(params))
    images = np.random.default_rng(seed).integers(0, 256, (batch_size, 28, 28), np.uint8)

    def torch_logits(images_BxHxW: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            pixels = torch.from_numpy(images_BxHxW).to(device).unsqueeze(1).float().div_(255)
            return torch_model(pixels).cpu().numpy()  # .cpu() waits for CUDA

    _check_agree(predictor.predict_logits(images), torch_logits(images))
    return {"jax": _calls_timer(predictor.predict_logits, images, calls),
            "torch": _calls_timer(torch_logits, images, calls)}


def torch_weights(params: dict[str, Any]) -> dict[str, Any]:
    """The article CNN's Flax parameters as the PyTorch model's state dict (OIHW kernels, (out, in) matrices)."""
    import torch

    conv, hidden, out = params["Conv_0"], params["Dense_0"], params["Dense_1"]
    # Flax flattens (H, W, C) activations, PyTorch (C, H, W): reorder the first Dense kernel's rows to match.
    hidden_kernel = np.asarray(hidden["kernel"]).reshape(13, 13, 32, -1).transpose(2, 0, 1, 3).reshape(13 * 13 * 32, -1)
    arrays = {"0.weight": np.asarray(conv["kernel"]).transpose(3, 2, 0, 1), "0.bias": conv["bias"],
              "4.weight": hidden_kernel.T, "4.bias": hidden["bias"],
              "6.weight": np.asarray(out["kernel"]).T, "6.bias": out["bias"]}
    return {name: torch.tensor(np.asarray(array, np.float32)) for name, array in arrays.items()}  # copies


def _check_agree(jax_logits: np.ndarray, torch_logits: np.ndarray) -> None:
    """Refuse to time two models that do not compute the same logits: 1e-4 of their scale is far above float32
    rounding (about 1e-6 here) and far below what a misplaced weight does."""
    scale = float(np.abs(jax_logits).max())
    if not np.allclose(jax_logits, torch_logits, rtol=0, atol=1e-4 * scale):
        raise RuntimeError(f"The Predictor's and PyTorch's logits differ by up to "
                           f"{np.abs(jax_logits - torch_logits).max():.3g}: not the same model.")


def _calls_timer(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, calls: int) -> Timer:
    """`calls` calls of `predict` on `images` (each returns NumPy, so each waits for the device), warmed up."""
    for _ in range(WARMUP_CALLS):
        predict(images)

    def timed() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            predict(images)
        return time.perf_counter() - started

    return timed


# Speedrun ---------------------------------------------------------------------------------------------------------

TUOMASO_BATCH_SIZE = 256
TUOMASO_TEST_BATCH_SIZE = 2000
TUOMASO_LR = 1e-2
TUOMASO_MEAN, TUOMASO_STD = 0.1307, 0.3081  # torchvision's MNIST normalisation, as its data_saver.py applies


def tuomaso_data(datasets: Any, device: str) -> tuple[Any, Any, Any, Any]:
    """The recipe's preloaded tensors: normalised float32 (N, 1, 28, 28) images and int64 labels on `device`,
    the training set shuffled once (DataLoader's shuffle there, NumPy's seed 0 here), as its data_saver.py saves
    them (once, untimed)."""
    import torch

    def tensors(split, order):
        pixels = torch.from_numpy(split.images[order]).unsqueeze(1).float().div(255)
        return (pixels.sub(TUOMASO_MEAN).div(TUOMASO_STD).to(device),
                torch.from_numpy(split.labels[order].astype(np.int64)).to(device))

    shuffled = np.random.default_rng(0).permutation(len(datasets.train))
    return (*tensors(datasets.train, shuffled), *tensors(datasets.test, np.arange(len(datasets.test))))


def tuomaso_net(device: str):
    """The notebook's Net as a Sequential: the same layers in the same order, so the same initialisation."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 24, 5, 1), torch.nn.MaxPool2d(2), torch.nn.ReLU(),
        torch.nn.Conv2d(24, 32, 3, 1), torch.nn.MaxPool2d(2), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(800, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10), torch.nn.LogSoftmax(dim=1)).to(device)


def tuomaso_run(seed: int, data: tuple[Any, Any, Any, Any]) -> dict[str, Any]:
    """One run of tuomaso/train_mnist_fast's final recipe (8_Final_00s76.ipynb, `main()`), timed as it times it.

    Its Net (Conv 24 5x5, MaxPool 2, ReLU, Conv 32 3x3, MaxPool 2, ReLU, Dense 256, ReLU, Dense 10, log-softmax),
    Adam (lr 1e-2, betas 0.7 and 0.9) under OneCycleLR (peak 1e-2, no momentum cycling), batch 256, one epoch of
    the 60,000 training images in the saved order, every test image in batches of 2,000. Timed, as its %%timeit
    times main(): building the model and optimizer, training, testing; not the preloading (`tuomaso_data`).
    mnist_jax's side (`speedrun.timed_run`) counts from uint8 arrays in host memory: the device transfer,
    initialisation, every compilation (each seed compiles from scratch), two epochs and the test evaluation.
    Adapted: PyTorch eager on this script's --torch-device (the recipe used a GPU), torch.manual_seed(seed) before
    the model is built (the notebook seeds nothing), data read by mnist_jax's IDX loader instead of torchvision.
    """
    import torch
    import torch.nn.functional as F

    train_images, train_labels, test_images, test_labels = data
    torch.manual_seed(seed)
    started = time.perf_counter()
    model = tuomaso_net(train_images.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=TUOMASO_LR, betas=(0.7, 0.9))
    steps = (len(train_images) - 1) // TUOMASO_BATCH_SIZE + 1  # the last, smaller batch included
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=TUOMASO_LR, total_steps=steps,
                                                    cycle_momentum=False)
    model.train()
    for i in range(steps):
        batch = slice(TUOMASO_BATCH_SIZE * i, TUOMASO_BATCH_SIZE * (i + 1))
        optimizer.zero_grad()
        F.nll_loss(model(train_images[batch]), train_labels[batch]).backward()
        optimizer.step()
        scheduler.step()
    model.eval()
    correct, test_loss = 0, 0.0
    with torch.no_grad():
        for i in range(len(test_images) // TUOMASO_TEST_BATCH_SIZE):
            batch = slice(TUOMASO_TEST_BATCH_SIZE * i, TUOMASO_TEST_BATCH_SIZE * (i + 1))
            output = model(test_images[batch])
            test_loss += F.nll_loss(output, test_labels[batch], reduction="sum").item()  # as the notebook does
            correct += (output.argmax(dim=1) == test_labels[batch]).sum().item()
    seconds = time.perf_counter() - started
    return {"seed": seed, "test_accuracy": correct / len(test_labels), "seconds": round(seconds, 3)}


def speedrun_rows(seeds: int, data_dir: str | None, device: str) -> list[dict[str, Any]]:
    """Per seed, `mnist-jax speedrun`'s run and then tuomaso's, on real MNIST."""
    from mnist_jax.data import load_datasets
    from mnist_jax.speedrun import RECIPE, timed_run

    datasets = load_datasets("mnist", data_dir=data_dir, val_split=0.0)
    data = tuomaso_data(datasets, device)
    rows = []
    for seed in range(seeds):
        ours, theirs = timed_run(RECIPE.replace(seed=seed), datasets), tuomaso_run(seed, data)
        rows.append({"seed": seed, "jax_seconds": ours["seconds"], "jax_test_accuracy": ours["test_accuracy"],
                     "torch_seconds": theirs["seconds"], "torch_test_accuracy": theirs["test_accuracy"],
                     "jax_over_torch_time": round(ours["seconds"] / theirs["seconds"], 3)})
    return rows


# Rounds, ratios and tables ----------------------------------------------------------------------------------------

def interleaved_rounds(timers: dict[str, Timer], rounds: int) -> dict[str, list[float]]:
    """Seconds per round for each timer, taking turns, so a slow stretch of the machine hits every side alike."""
    seconds = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timed in timers.items():
            seconds[name].append(timed())
    return seconds


def speedups(jax_seconds: Sequence[float], torch_seconds: Sequence[float]) -> tuple[float, list[float]]:
    """How many times as fast mnist_jax was in each round (PyTorch's seconds over its), and their median."""
    ratios = [torch_s / jax_s for jax_s, torch_s in zip(jax_seconds, torch_seconds, strict=True)]
    return statistics.median(ratios), ratios


def throughput_row(batch_size: int, images: int, seconds: dict[str, list[float]]) -> dict[str, Any]:
    """One batch size's result: each side's images/s over its median round, and the median of the rounds' ratios."""
    median, ratios = speedups(seconds["jax"], seconds["torch"])
    row = {"batch_size": batch_size, "images_per_round": images}
    names = {"jax": "jax", "torch": "torch", "plain": "plain_flax_step_loop"}
    for side, times in seconds.items():
        row[f"{names[side]}_images_per_second"] = round(images / statistics.median(times), 1)
    return row | {"jax_over_torch": round(median, 2), "jax_over_torch_per_round": [round(r, 2) for r in ratios]}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, numbers with thousands separators (floats under 100 with two decimals)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = [headers, ["---"] * len(headers), *[[cell(value) for value in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def throughput_table(rows: Sequence[dict[str, Any]]) -> str:
    """The training or inference rows as a table: images/s of each side and their ratio, per batch size."""
    columns = {"batch": "batch_size", "mnist_jax images/s": "jax_images_per_second",
               "PyTorch eager images/s": "torch_images_per_second"}
    if "plain_flax_step_loop_images_per_second" in rows[0]:
        columns["plain Flax loop images/s"] = "plain_flax_step_loop_images_per_second"
    return markdown_table([*columns, "mnist_jax / PyTorch", "rounds' ratios"], [
        [*(row[key] for key in columns.values()), f"{row['jax_over_torch']:.2f}x",
         f"{min(row['jax_over_torch_per_round']):.2f}-{max(row['jax_over_torch_per_round']):.2f}x"] for row in rows])


def speedrun_table(rows: Sequence[dict[str, Any]]) -> str:
    """The speedrun rows as a table: each side's seconds and test accuracy per seed, and the time ratio."""
    return markdown_table(
        ["seed", "mnist_jax s", "mnist_jax test accuracy", "tuomaso (PyTorch) s", "tuomaso test accuracy",
         "mnist_jax time / tuomaso's"],
        [[row["seed"], row["jax_seconds"], f"{row['jax_test_accuracy']:.2%}", row["torch_seconds"],
          f"{row['torch_test_accuracy']:.2%}", f"{row['jax_over_torch_time']:.2f}x"] for row in rows])


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'32,64,128' -> (32, 64, 128); anything else is refused in one sentence (argparse prints it)."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers separated by commas, such as 32,64,128; "
                                         f"got {text!r}")
    return sizes


def training_steps(batch_size: int, images: int | None, steps: int | None) -> int:
    """Steps a round at `batch_size`: --steps, else --images' worth (at least one); refused if over the data."""
    if batch_size > DATASET_SIZE:
        raise ValueError(f"batch size {batch_size} exceeds the {DATASET_SIZE:,} training images.")
    steps = steps or max(1, (images or DEFAULT_IMAGES["training"]) // batch_size)
    if steps * batch_size > DATASET_SIZE:
        raise ValueError(f"{steps} steps of {batch_size} images exceed the {DATASET_SIZE:,} training images: use at "
                         f"most {DATASET_SIZE // batch_size} steps at batch {batch_size}.")
    return steps


def inference_calls(batch_size: int, images: int | None) -> int:
    """Predictor calls a round at `batch_size`: --images' worth, at least one."""
    return max(1, (images or DEFAULT_IMAGES["inference"]) // batch_size)


# Command line -----------------------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--inference", action="store_true", help="time the Predictor against PyTorch inference")
    mode.add_argument("--speedrun", action="store_true", help="time `mnist-jax speedrun` against tuomaso's recipe")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--batch-sizes", type=parse_batch_sizes, default=None, metavar="B1,B2,...",
                       help="batch sizes to compare (default: 64 for training, 1,64,512 for inference)")
    sizes.add_argument("--batch-size", type=int, default=None, help="one batch size (the same as --batch-sizes B)")
    parser.add_argument("--images", type=int, default=None,
                        help="images each side handles a round at each batch size (default: 19,200 for training, "
                             "4,096 for inference)")
    parser.add_argument("--steps", type=int, default=None, help="training steps a round, instead of --images")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; in each, every side runs once")
    parser.add_argument("--plain-flax", action="store_true", help="training: also time the obvious Flax step loop")
    parser.add_argument("--seeds", type=int, default=5, help="speedrun: seeds 0, 1, ... (one round each)")
    parser.add_argument("--data-dir", default=None,
                        help="speedrun: the MNIST IDX files (default: $MNIST_JAX_DATA_DIR, else download)")
    parser.add_argument("--torch-device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="PyTorch's CPU threads (default: its own choice, one a core)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    args.mode = "speedrun" if args.speedrun else "inference" if args.inference else "training"
    if args.batch_size is not None:
        args.batch_sizes = parse_batch_sizes(str(args.batch_size))
    args.batch_sizes = args.batch_sizes or DEFAULT_BATCH_SIZES.get(args.mode, ())
    for name in ("images", "steps", "repeats", "seeds", "torch_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive whole number, got {getattr(args, name)}.")
    try:  # refuse a step count over the data now, not after timing the batch sizes before it
        args.rounds_work = {size: training_steps(size, args.images, args.steps) if args.mode == "training"
                            else inference_calls(size, args.images) for size in args.batch_sizes}
    except ValueError as error:
        parser.error(str(error))
    return args


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen comparison: its rows, and what they were measured on."""
    if args.mode == "speedrun":
        rows = speedrun_rows(args.seeds, args.data_dir, args.torch_device)
        summary = {"jax_over_torch_time": round(statistics.median(r["jax_over_torch_time"] for r in rows), 3),
                   "all_reached_99": all(min(r["jax_test_accuracy"], r["torch_test_accuracy"]) >= 0.99
                                         for r in rows)}
        return {"rows": rows, "seeds": args.seeds, **summary}
    rows = []
    for batch_size, work in args.rounds_work.items():  # training steps or Predictor calls a round
        if args.mode == "training":
            timers = training_timers(batch_size, work, args.torch_device, args.plain_flax)
        else:
            timers = inference_timers(batch_size, work, args.torch_device)
        rows.append(throughput_row(batch_size, work * batch_size, interleaved_rounds(timers, args.repeats)))
    return {"rows": rows, "rounds": args.repeats}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: pip install torch==2.13.0 (see this script's --help).", file=sys.stderr)
        return 2
    if args.torch_device == "cuda" and not torch.cuda.is_available():
        print("--torch-device cuda: this PyTorch build sees no CUDA device.", file=sys.stderr)
        return 2
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    import jax

    from mnist_jax.errors import UserError

    load_before = os.getloadavg()[0]  # other work on the machine: the rounds' ratios cope with it, up to a point
    try:
        result = compare(args)
    except UserError as error:  # e.g. no MNIST folder for --speedrun
        print(error, file=sys.stderr)
        return 2
    if (jax.default_backend() == "gpu") != (args.torch_device == "cuda"):
        print(f"warning: JAX runs on {jax.devices()[0]} but PyTorch on {args.torch_device}; the ratios compare "
              "two different devices.", file=sys.stderr)
    result = {"mode": args.mode, **result, "torch_version": torch.__version__,
              "torch_threads": torch.get_num_threads(), "torch_device": args.torch_device,
              "processor": describe_environment()["processor"], "jax_device": str(jax.devices()[0]),
              "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(result) if args.json else report(result))
    return 0


def report(result: dict[str, Any]) -> str:
    """The human-readable result: what was measured, where, and one table."""
    where = (f"{result['processor']}; JAX on {result['jax_device']}, torch {result['torch_version']} on "
             f"{result['torch_device']} ({result['torch_threads']} threads); load average "
             f"{result['load_average_before_after'][0]:.1f} before, {result['load_average_before_after'][1]:.1f} after")
    if result["mode"] == "speedrun":
        return (f"`mnist-jax speedrun` vs tuomaso/train_mnist_fast, real MNIST, seeds 0-{result['seeds'] - 1} taking "
                f"turns; {where}\n{speedrun_table(result['rows'])}\nmnist_jax's time / tuomaso's: "
                f"{result['jax_over_torch_time']:.2f}x (median of the seeds')")
    what = "article CNN training" if result["mode"] == "training" else "article CNN inference (Predictor)"
    return (f"{what}, {result['rounds']} interleaved rounds, ratio = median of the rounds'; {where}\n"
            f"{throughput_table(result['rows'])}")


if __name__ == "__main__":
    sys.exit(main())
