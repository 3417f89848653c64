"""Strict JSON: every file and --json output parses with a parser that rejects NaN and Infinity."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from mnist_jax import jsonio
from mnist_jax.checkpoints import Checkpointer
from mnist_jax.rundir import HISTORY, RunDir

NAN_RECORD = {"epoch": 1, "train_loss": float("nan"), "val_loss": np.float32("inf"), "lr": -math.inf,
              "nested": [{"x": np.float64("nan")}, (1.5, np.float16(2))]}
STRICT_RECORD = {"epoch": 1, "train_loss": None, "val_loss": None, "lr": None, "nested": [{"x": None}, [1.5, 2.0]]}


def strict_loads(text: str):
    """json.loads that raises on the bare NaN, Infinity and -Infinity tokens, like JavaScript's JSON.parse."""
    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_strict_loads_rejects_what_plain_json_writes():
    with pytest.raises(ValueError, match="NaN"):
        strict_loads(json.dumps({"x": float("nan")}))


def test_to_strict_replaces_non_finite_floats_with_none_at_any_depth():
    assert jsonio.to_strict(NAN_RECORD) == STRICT_RECORD
    assert jsonio.to_strict(np.array([1.0, np.nan])) == [1.0, None]
    assert jsonio.to_strict({"n": np.int64(3), "ok": True, "s": "NaN"}) == {"n": 3, "ok": True, "s": "NaN"}


def test_to_strict_leaves_the_input_unchanged():
    record = {"loss": [float("nan")]}
    jsonio.to_strict(record)
    assert math.isnan(record["loss"][0])


def test_dumps_is_strict():
    assert strict_loads(jsonio.dumps(NAN_RECORD, sort_keys=True)) == STRICT_RECORD


def test_run_dir_files_are_strict(tmp_path):
    run_dir = RunDir.create(tmp_path / "run")
    run_dir.write_json("metrics.json", NAN_RECORD)
    run_dir.append_history(NAN_RECORD)
    run_dir.append_history(NAN_RECORD | {"epoch": 2})
    assert strict_loads((run_dir.path / "metrics.json").read_text()) == STRICT_RECORD
    assert [strict_loads(line) for line in (run_dir.path / HISTORY).read_text().splitlines()] == [
        STRICT_RECORD, STRICT_RECORD | {"epoch": 2}]
    run_dir.truncate_history(1)
    assert [strict_loads(line) for line in (run_dir.path / HISTORY).read_text().splitlines()] == [STRICT_RECORD]


def test_checkpoint_metadata_is_strict(tmp_path):
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(1, {"w": jnp.zeros(2)}, {"step": jnp.array(1)}, {"epoch": 1, "val_loss": float("nan")}, 0.5)
    checkpointer.wait()
    assert checkpointer.restore_meta(1) == {"epoch": 1, "val_loss": None}
    assert strict_loads((tmp_path / "ckpt" / "1" / "meta" / "metadata").read_text()) == {"epoch": 1, "val_loss": None}
    checkpointer.close()
