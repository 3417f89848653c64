"""scripts/ensemble_attempt.sh on the digits: validation picks the epochs, five new seeds train that long, and the
ensemble is evaluated once."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensemble_attempt.sh"


def attempt(out: Path, flags: str = "", succeeds: bool = True) -> subprocess.CompletedProcess:
    """The script on the digits with 1 or 2 epochs to choose from (and more training flags)."""
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(SCRIPT.parents[1]), "LIMIT": "600",
           "FLAGS": f"--dataset digits --filters 4 --batch-size 32 {flags}"}
    done = subprocess.run(["bash", str(SCRIPT), str(out), "1", "2"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert (done.returncode == 0) == succeeds, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_validation_alone_picks_the_epochs_of_the_five_members(tmp_path):
    out = tmp_path / "attempt"
    done = attempt(out)
    scores = json.loads((out / "validation.json").read_text())
    assert set(scores) == {"1", "2"}
    for epochs, score in scores.items():  # the mean of the two validation runs' last records
        finals = [json.loads((out / f"val-e{epochs}-s{seed}" / "history.jsonl").read_text().splitlines()[-1])
                  for seed in (0, 1)]
        assert score == sum(record["val_accuracy"] for record in finals) / 2
    winner = max(sorted(scores, key=int), key=lambda epochs: scores[epochs])
    assert re.search(rf"-> {winner} epochs", done.stdout)
    ensemble = json.loads((out / "ensemble.json").read_text())
    members = [str(out / f"member-e{winner}-s{seed}") for seed in range(10, 15)]
    assert [member["run_dir"] for member in ensemble["members"]] == members
    for member in ensemble["members"]:  # trained the winning length on the whole training set: no validation
        history = (Path(member["run_dir"]) / "history.jsonl").read_text().splitlines()
        assert len(history) == int(winner) and "val_accuracy" not in json.loads(history[-1])
        assert member["epoch"] == int(winner)
    assert 0 <= ensemble["test_accuracy"] <= 1

    # Run again: the finished runs are kept; one stopped before its final metrics resumes from its checkpoint, and
    # while it cannot finish (here: its config damaged) the ensemble is not evaluated again.
    last = out / f"member-e{winner}-s14"
    (last / "metrics.json").unlink()
    (out / "ensemble.json").unlink()
    config = (last / "config.json").read_text()
    (last / "config.json").write_text("{")
    stopped = attempt(out, succeeds=False)
    assert f"{last} did not finish" in stopped.stderr
    assert "== evaluate" not in stopped.stdout and not (out / "ensemble.json").exists()
    (last / "config.json").write_text(config)
    again = attempt(out)
    assert again.stdout.count("finished before, kept") == 8
    assert f"== train member-e{winner}-s14: --resume {last}" in again.stdout
    assert json.loads((out / "ensemble.json").read_text())["members"] == ensemble["members"]


def test_no_member_trains_before_every_validation_run_finished(tmp_path):
    out = tmp_path / "attempt"
    stopped = attempt(out, "--batch-size 100000", succeeds=False)  # every validation run fails at once
    assert stopped.stderr.count("did not finish") == 4  # 2 lengths x 2 seeds
    assert not list(out.glob("member-*")) and not (out / "validation.json").exists()
