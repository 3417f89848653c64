#!/usr/bin/env bash
# One short GPU check: the tests that matter, the benchmark (float32 and bfloat16) and the speedrun, in one call.
# Usage: MNIST_JAX_DATA_DIR=/path/to/mnist bash scripts/gpu_check.sh [OUT_DIR]
# Needs a CUDA build of JAX: pip install -e '.[test]' 'jax[cuda12]'
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check_out}"
mkdir -p "$out"
python -c "import jax; print(jax.devices()); assert jax.default_backend() == 'gpu', 'no GPU backend'" \
  || { echo "gpu_check: JAX sees no GPU" >&2; exit 2; }
status=0
python -m pytest -q tests/test_layers.py tests/test_train.py tests/test_compilation.py tests/test_predictor.py \
  tests/test_full_mnist.py 2>&1 | tee "$out/tests.log" || status=1
for dtype in float32 bfloat16; do
  for batch in 64 1024; do
    mnist-jax benchmark --model cnn --batch-size "$batch" --dtype "$dtype" --json | tee "$out/benchmark-cnn-$batch-$dtype.json" || status=1
  done
done
mnist-jax speedrun --seeds 5 --json | tee "$out/speedrun.json" || status=1
exit "$status"
