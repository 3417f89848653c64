"""Train the article CNN in JAX (mnist_jax) and in PyTorch eager on the same machine, batch and data, in one run.

PyTorch is not a dependency of mnist_jax. Install a CPU build into the same environment first, e.g.
    pip install torch --index-url https://download.pytorch.org/whl/cpu
then run
    python scripts/compare_pytorch.py [--batch-size 64] [--steps 300] [--repeats 5] [--torch-device cpu] [--json]
On a GPU machine pass --torch-device cuda (with a CUDA build of both): JAX uses its default device either way.
Both sides train on MNIST-sized uint8 data already in memory, normalised on the fly, with Adam (lr 1e-3),
softmax cross-entropy and the same model (Conv 32 3x3 VALID, ReLU, MaxPool 2, Dense 128, ReLU, Dense 10);
warm-up is untimed; the sides take turns, once each per round, and the ratio is the median of the rounds'
ratios, so the machine's speed swings hit both sides alike.
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mnist_jax.benchmark import DATASET_SIZE, synthetic_data, training_run
from mnist_jax.config import TrainConfig
from mnist_jax.environment import describe_environment
from mnist_jax.train import initial_state

Timer = Callable[[], float]  # one timed run of the same training steps: seconds


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


def torch_timer(batch_size: int, steps: int, device: str = "cpu", seed: int = 0) -> Timer:
    """The article CNN in PyTorch eager on `device` ("cpu" or "cuda"), warmed up."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (DATASET_SIZE, 1, 28, 28), np.uint8)).to(device)
    labels = torch.from_numpy(rng.integers(0, 10, DATASET_SIZE)).to(device)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(13 * 13 * 32, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(device)
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
        if device == "cuda":
            torch.cuda.synchronize()  # CUDA work is asynchronous: wait before reading the clock
        return time.perf_counter() - started

    timed()  # warm-up
    return timed


def interleaved_rounds(timers: dict[str, Timer], rounds: int) -> dict[str, list[float]]:
    """Seconds per round for each timer, taking turns, so a slow stretch of the machine hits every side alike."""
    seconds = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timed in timers.items():
            seconds[name].append(timed())
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; in each, every side runs once")
    parser.add_argument("--torch-device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: pip install torch --index-url https://download.pytorch.org/whl/cpu",
              file=sys.stderr)
        return 2
    if args.torch_device == "cuda" and not torch.cuda.is_available():
        print("--torch-device cuda: this PyTorch build sees no CUDA device.", file=sys.stderr)
        return 2
    if not 1 <= args.batch_size <= DATASET_SIZE:
        print(f"--batch-size must be 1 to {DATASET_SIZE}.", file=sys.stderr)
        return 2
    if not 1 <= args.steps <= DATASET_SIZE // args.batch_size:
        print(f"--steps must be 1 to {DATASET_SIZE // args.batch_size} at --batch-size {args.batch_size}.",
              file=sys.stderr)
        return 2
    import jax

    # The article's optimizer (constant Adam 1e-3), so both sides do the same work per step.
    config = TrainConfig(model="cnn", batch_size=args.batch_size, schedule="constant", learning_rate=1e-3)
    seconds = interleaved_rounds({"jax": mnist_jax_timer(config, args.steps),
                                  "plain": plain_flax_timer(args.batch_size, args.steps),
                                  "torch": torch_timer(args.batch_size, args.steps, args.torch_device)}, args.repeats)
    if (jax.default_backend() == "gpu") != (args.torch_device == "cuda"):
        print(f"warning: JAX runs on {jax.devices()[0]} but PyTorch on {args.torch_device}; the ratio compares "
              "two different devices.", file=sys.stderr)
    images = args.steps * args.batch_size
    per_second = {name: round(images / statistics.median(times), 1) for name, times in seconds.items()}
    ratios = [torch_s / jax_s for jax_s, torch_s in zip(seconds["jax"], seconds["torch"])]  # same round, same speed
    result = {"jax_train_images_per_second": per_second["jax"],
              "plain_flax_step_loop_images_per_second": per_second["plain"],
              "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
              "torch_device": args.torch_device, "torch_train_images_per_second": per_second["torch"],
              "jax_over_torch": round(statistics.median(ratios), 2),
              "jax_over_torch_per_round": [round(ratio, 2) for ratio in ratios],
              "batch_size": args.batch_size, "steps": args.steps, "rounds": args.repeats,
              "processor": describe_environment()["processor"], "jax_device": str(jax.devices()[0])}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"article CNN, batch {args.batch_size}, {result['processor']}, {args.repeats} interleaved rounds:")
        print(f"  JAX (mnist_jax):  {per_second['jax']:>9,.0f} images/s")
        print(f"  plain Flax loop:  {per_second['plain']:>9,.0f} images/s (nn.Conv, nn.max_pool, one jitted call "
              "per step)")
        where = "cuda" if args.torch_device == "cuda" else f"cpu, {result['torch_threads']} threads"
        print(f"  PyTorch eager:    {per_second['torch']:>9,.0f} images/s (torch {result['torch_version']} on {where})")
        print(f"  JAX / PyTorch:    {result['jax_over_torch']:.2f}x (median of the rounds' ratios, "
              f"{min(ratios):.2f}-{max(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
