"""The run directory's lock: one process at a time, released by unlock or by the holder's death."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_jax.errors import UserError
from mnist_jax.rundir import CONFIG, LOCK, RunDir

REPO = Path(__file__).resolve().parents[1]
HOLD = ("import sys; from mnist_jax.rundir import RunDir; RunDir.{}(sys.argv[1]){}; print('locked', flush=True); "
        "sys.stdin.read()")


def hold_lock(path: Path, how: str = "create", then: str = "") -> subprocess.Popen:
    """A child process that locks the run directory and holds it until its stdin closes or it is killed."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", HOLD.format(how, then), str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline() == "locked\n", child.stderr.read()
    return child


def try_lock(path: Path) -> subprocess.CompletedProcess:
    """Lock the run directory in a fresh process; its stderr carries the refusal."""
    code = "import sys; from mnist_jax.rundir import RunDir; RunDir(sys.argv[1]).lock()"
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=60)


def test_second_process_is_refused_with_the_holders_pid(tmp_path):
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(UserError) as caught:
            RunDir.create(tmp_path / "run")
        assert str(caught.value) == (f"{tmp_path / 'run'} is in use by process {holder.pid}; wait for it to finish "
                                     f"or choose another --run-dir.")
        assert not (tmp_path / "run" / CONFIG).exists()
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    holder = hold_lock(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    run_dir = RunDir.create(tmp_path / "run")  # no "in use" error: the kernel dropped the dead holder's lock
    assert (tmp_path / "run" / LOCK).read_text() == f"{os.getpid()}\n"
    run_dir.unlock()


def test_unlock_lets_another_process_in(tmp_path):
    run_dir = RunDir.create(tmp_path / "run")
    refused = try_lock(tmp_path / "run")
    assert refused.returncode != 0 and f"in use by process {os.getpid()};" in refused.stderr
    run_dir.unlock()
    assert try_lock(tmp_path / "run").returncode == 0


def test_lock_is_reentrant_within_a_process(tmp_path):
    first = RunDir.create(tmp_path / "run")
    second = RunDir(tmp_path / "run")
    second.lock()  # the code that created a run may reopen it, e.g. to resume
    second.unlock()
    assert try_lock(tmp_path / "run").returncode != 0  # still held for `first`
    first.unlock()
    assert try_lock(tmp_path / "run").returncode == 0


def test_existing_run_is_refused_and_left_unlocked(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CONFIG).write_text("{}")
    with pytest.raises(UserError, match="already holds a run; resume it with --resume"):
        RunDir.create(tmp_path / "run")
    assert try_lock(tmp_path / "run").returncode == 0


def test_lock_file_that_cannot_be_created_is_one_sentence(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "open", read_only)  # chmod cannot stop root, who runs these tests
    with pytest.raises(UserError) as caught:
        RunDir(tmp_path / "run").lock()
    assert str(caught.value) == f"Cannot lock {tmp_path / 'run'}: Permission denied."


def test_run_dir_name_taken_by_a_file(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(UserError, match="a file of that name exists"):
        RunDir.create(tmp_path / "run")


def test_has_checkpoint_counts_only_finished_epochs(tmp_path):
    run_dir = RunDir.create(tmp_path / "run")
    assert not run_dir.has_checkpoint()
    (run_dir.checkpoints / "1.orbax-checkpoint-tmp-1700000000").mkdir(parents=True)  # a save cut short
    assert not run_dir.has_checkpoint()
    (run_dir.checkpoints / "1").mkdir()
    assert run_dir.has_checkpoint()
    run_dir.unlock()
