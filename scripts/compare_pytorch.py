"""Train the article CNN in JAX (mnist_jax) and in PyTorch eager on the same machine, batch and data, in one run.

PyTorch is not a dependency of mnist_jax. Install a CPU build into the same environment first, e.g.
    pip install torch --index-url https://download.pytorch.org/whl/cpu
then run
    python scripts/compare_pytorch.py [--batch-size 64] [--steps 300] [--repeats 5] [--torch-device cpu] [--json]
On a GPU machine pass --torch-device cuda (with a CUDA build of both): JAX uses its default device either way.
Both sides train on MNIST-sized uint8 data already in memory, normalised on the fly, with Adam (lr 1e-3),
softmax cross-entropy and the same model (Conv 32 3x3 VALID, ReLU, MaxPool 2, Dense 128, ReLU, Dense 10);
warm-up is untimed and the median of the repeats is reported.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np

from mnist_jax.benchmark import DATASET_SIZE, benchmark
from mnist_jax.config import TrainConfig


def plain_flax_images_per_second(batch_size: int, steps: int, repeats: int, seed: int = 0) -> float:
    """The obvious Flax version (nn.Conv, nn.max_pool), one jitted step per batch: the baseline we started from."""
    import jax
    import optax

    from mnist_jax.layers import PlainCNN
    from mnist_jax.train import create_train_state, epoch_batches, train_one_step

    rng = np.random.default_rng(seed)
    images = jax.device_put(rng.integers(0, 256, (DATASET_SIZE, 28, 28), np.uint8))
    labels = jax.device_put(rng.integers(0, 10, DATASET_SIZE).astype(np.int32))
    state = create_train_state(PlainCNN(), optax.adam(1e-3), jax.random.key(seed))
    batches = list(epoch_batches(jax.random.key(seed), DATASET_SIZE, batch_size)[:steps])

    def run(state):
        for indices in batches:
            state, metrics = train_one_step(state, images, labels, indices, jax.random.key(0))
        return jax.block_until_ready(state)

    state = run(state)  # warm-up and compilation
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        state = run(state)
        seconds.append(time.perf_counter() - started)
    return round(steps * batch_size / statistics.median(seconds), 1)


def torch_images_per_second(batch_size: int, steps: int, repeats: int, device: str = "cpu", seed: int = 0) -> dict:
    """Median training images/s of the article CNN in PyTorch eager on `device` ("cpu" or "cuda")."""
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

    def run() -> None:
        order = torch.randperm(DATASET_SIZE, device=device)
        for step in range(steps):
            indices = order[step * batch_size:(step + 1) * batch_size]
            batch = images[indices].float() / 255
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(batch), labels[indices]).backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()  # CUDA work is asynchronous: wait before reading the clock

    run()  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(), "torch_device": device,
            "torch_train_images_per_second": round(steps * batch_size / statistics.median(seconds), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        print("PyTorch is not installed: pip install torch --index-url https://download.pytorch.org/whl/cpu",
              file=sys.stderr)
        return 2
    if args.torch_device == "cuda" and not torch.cuda.is_available():
        print("--torch-device cuda: this PyTorch build sees no CUDA device.", file=sys.stderr)
        return 2
    # The article's optimizer (constant Adam 1e-3), so both sides do the same work per step.
    config = TrainConfig(model="cnn", batch_size=args.batch_size, schedule="constant", learning_rate=1e-3)
    jax_result = benchmark(config, steps=args.steps, repeats=args.repeats)
    plain = plain_flax_images_per_second(args.batch_size, args.steps, args.repeats)
    torch_result = torch_images_per_second(args.batch_size, args.steps, args.repeats, args.torch_device)
    if (jax_result["backend"] == "gpu") != (args.torch_device == "cuda"):
        print(f"warning: JAX runs on {jax_result['device']} but PyTorch on {args.torch_device}; the ratio compares "
              "two different devices.", file=sys.stderr)
    ratio = jax_result["train_images_per_second"] / torch_result["torch_train_images_per_second"]
    result = {"jax_train_images_per_second": jax_result["train_images_per_second"],
              "plain_flax_step_loop_images_per_second": plain, **torch_result,
              "jax_over_torch": round(ratio, 2), "batch_size": args.batch_size, "steps": args.steps,
              "processor": jax_result["processor"], "jax_device": jax_result["device"]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"article CNN, batch {args.batch_size}, {jax_result['processor']}:")
        print(f"  JAX (mnist_jax):  {result['jax_train_images_per_second']:>9,.0f} images/s")
        print(f"  plain Flax loop:  {plain:>9,.0f} images/s (nn.Conv, nn.max_pool, one jitted call per step)")
        where = "cuda" if args.torch_device == "cuda" else f"cpu, {result['torch_threads']} threads"
        print(f"  PyTorch eager:    {result['torch_train_images_per_second']:>9,.0f} images/s "
              f"(torch {result['torch_version']} on {where})")
        print(f"  JAX / PyTorch:    {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
