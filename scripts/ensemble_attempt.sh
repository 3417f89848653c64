#!/usr/bin/env bash
# The fourth attempt at a 99.75% ensemble of at most five (issue "Accuracy"), declared here before any of its runs
# (run once on the 2-core CPU: 99.68%, BENCHMARKS.md#recipes); a GPU runs it in minutes, the CPU in about 3 hours.
#   1. Validation picks the schedule's length: `--recipe best --val-split 0.2`, seeds 0 and 1, for each EPOCHS
#      count; the count with the highest mean final val_accuracy wins (a tie: the fewer epochs). The test set
#      plays no part.
#   2. Five members train that many epochs on all 60,000 images, seeds 10-14 (never used before): a fixed
#      schedule, no selection.
#   3. `mnist-jax evaluate` of the five (`--which latest`): the ensemble's and each member's test accuracy, once.
# Usage: MNIST_JAX_DATA_DIR=/path/to/mnist bash scripts/ensemble_attempt.sh [OUT_DIR [EPOCHS ...]]
# Each step starts only when every run of the one before finished: a run stopped by its time limit stops the script,
# and run again on the same OUT_DIR it keeps the finished runs and resumes the others from their newest checkpoint.
# EPOCHS default to 15 40 (100 was declared first and dropped before any member ran: 4 more hours on the CPU).
# Without the package installed, PYTHONPATH=. runs `python -m mnist_jax`; PYTHON picks the interpreter (default
# python3); LIMIT is each run's time limit in seconds (default 3600; 40 epochs took 1,530-1,610 on the CPU alone;
# SIGTERM stops a run as Ctrl-C does, KILL a minute later);
# FLAGS, more flags for every run (the tests train on the small digits set with FLAGS="--dataset digits ...").
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-ensemble_attempt_out}"
shift $(( $# > 0 ? 1 : 0 ))
if [ $# -gt 0 ]; then candidates=("$@"); else candidates=(15 40); fi
py="${PYTHON:-python3}"
limit="${LIMIT:-3600}"
read -r -a flags <<< "${FLAGS:-}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
"$py" -c "import jax; print(jax.__version__, jax.devices())" | tee "$out/devices.txt"

finished() {  # finished RUN_DIR: the run wrote its final metrics
  "$py" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["status"] != "finished")' "$1/metrics.json" \
    2>/dev/null
}

all_finished() {  # all_finished RUN_DIR...: every run finished; else name the ones that did not
  local run missing=0
  for run in "$@"; do
    finished "$run" || { echo "ensemble_attempt: $run did not finish (LIMIT=$limit s?); run again to resume it" >&2
                         missing=1; }
  done
  return "$missing"
}

train() {  # train NAME FLAGS...: one run under the time limit, into $out/NAME, its log and seconds beside it
  local name="$1" started=$SECONDS; shift
  if finished "$out/$name"; then echo "== $name: finished before, kept"; return; fi
  local how=(--recipe best --run-dir "$out/$name" "${flags[@]}" "$@")
  [ -d "$out/$name" ] && how=(--resume "$out/$name")  # stopped or timed out: on from its newest checkpoint
  echo "== train $name: ${how[*]}"
  timeout -k 60 "$limit" "$py" -m mnist_jax train "${how[@]}" --no-progress --no-report >>"$out/$name.log" 2>&1 \
    || echo "== FAILED: $name (see $out/$name.log)"
  echo "$name $(( SECONDS - started )) s" | tee -a "$out/times.txt"
}

pick_epochs() {  # the winning count of epochs from the validation runs' last records (kept in validation.json)
  "$py" - "$out" "${candidates[@]}" <<'EOF'
import json, pathlib, statistics, sys
out, candidates = pathlib.Path(sys.argv[1]), sorted(int(epochs) for epochs in sys.argv[2:])
scores = {epochs: statistics.mean(
    json.loads((out / f"val-e{epochs}-s{seed}" / "history.jsonl").read_text().splitlines()[-1])["val_accuracy"]
    for seed in (0, 1)) for epochs in candidates}
(out / "validation.json").write_text(json.dumps({str(epochs): score for epochs, score in scores.items()}, indent=1))
print(max(candidates, key=lambda epochs: scores[epochs]))  # sorted: a tie goes to fewer
EOF
}

validation=()
for epochs in "${candidates[@]}"; do
  for seed in 0 1; do
    train "val-e$epochs-s$seed" --val-split 0.2 --epochs "$epochs" --seed "$seed"
    validation+=("$out/val-e$epochs-s$seed")
  done
done
all_finished "${validation[@]}" || exit 1
winner=$(pick_epochs) || exit 1
echo "== validation: $(tr -d '\n ' < "$out/validation.json") -> $winner epochs"
members=()
for seed in 10 11 12 13 14; do
  train "member-e$winner-s$seed" --epochs "$winner" --seed "$seed"  # named by length: EPOCHS may change on a rerun
  members+=("$out/member-e$winner-s$seed")
done
all_finished "${members[@]}" || exit 1  # the test set is looked at once, and only with every member finished
echo "== evaluate ${members[*]}"
"$py" -m mnist_jax evaluate "${members[@]}" --which latest --json | tee "$out/ensemble.json"
