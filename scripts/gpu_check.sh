#!/usr/bin/env bash
# One short GPU check: the tests that matter, the benchmark (float32 and bfloat16), the speedrun and the
# PyTorch comparison, in one call. Each step has its own time limit, and a failed step does not stop the rest.
# Usage: MNIST_JAX_DATA_DIR=/path/to/mnist bash scripts/gpu_check.sh [OUT_DIR]
# Needs a CUDA build of JAX (pip install -e '.[test]' 'jax[cuda12]'); without installing the package, run it
# with PYTHONPATH=. and it calls `python -m mnist_jax`. PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check_out}"
py="${PYTHON:-python3}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
"$py" -c "import jax; print(jax.__version__, jax.devices()); assert jax.default_backend() == 'gpu', 'no GPU backend'" \
  || { echo "gpu_check: JAX sees no GPU" >&2; exit 2; }
"$py" -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda.*|flax|optax|orbax-checkpoint|numpy|torch) ' | tee "$out/versions.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/versions.txt"
status=0
step() {  # step NAME SECONDS COMMAND...: run one step under a time limit; stdout to $out/NAME.out, stderr to NAME.log
  local name="$1" limit="$2"; shift 2
  echo "== $*"
  timeout "$limit" "$@" 2>"$out/$name.log" | tee "$out/$name.out" || { echo "== FAILED: $* (see $out/$name.log)"; status=1; }
}
step speedrun 90 "$py" -m mnist_jax speedrun --seeds 5 --json
for dtype in float32 bfloat16; do
  for batch in 64 1024; do
    steps=$(( batch >= 1024 ? 40 : 200 ))  # the benchmark refuses more steps than its 48,000 images hold
    step "benchmark-cnn-$batch-$dtype" 40 "$py" -m mnist_jax benchmark --model cnn --batch-size "$batch" \
      --steps "$steps" --dtype "$dtype" --json
  done
done
if "$py" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  step compare-pytorch 90 "$py" scripts/compare_pytorch.py --batch-size 64 --steps 300 --repeats 5 --torch-device cuda --json
  step compare-pytorch-inference 90 "$py" scripts/compare_pytorch.py --inference --torch-device cuda --json
fi
gpus=$("$py" -c "import jax; print(jax.device_count())")
if [ "$gpus" -gt 1 ]; then  # data-parallel: the multi-device tests, and images/s on 1, 2, ... all GPUs
  step tests-sharding 300 "$py" -m pytest -q -p no:cacheprovider tests/test_sharding.py
  for n in $(seq 1 "$gpus"); do
    [ $(( n & (n - 1) )) -eq 0 ] || [ "$n" -eq "$gpus" ] || continue  # 1, 2, 4, 8 and all
    step "benchmark-cnn-1024-devices-$n" 60 "$py" -m mnist_jax benchmark --model cnn --batch-size 1024 --steps 40 \
      --devices "$n" --json
  done
fi
# On an H100 these took over 240 s: a 180 s limit stopped them after 27 tests, and the other 53 took 66 s.
step tests 360 "$py" -m pytest -q -p no:cacheprovider tests/test_layers.py tests/test_train.py tests/test_compilation.py \
  tests/test_predictor.py tests/test_full_mnist.py
exit "$status"
