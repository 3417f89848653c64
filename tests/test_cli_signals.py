"""SIGTERM ends a command the way Ctrl-C does: one sentence, the interrupted exit code, handlers restored."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from mnist_jax.cli import EXIT_INTERRUPTED, main

REPO = Path(__file__).resolve().parents[1]
# A command whose work is a long sleep, started through the real main(); it says when it is under way.
SLOW_COMMAND = """
import sys, time
from mnist_jax.cli import main, speedrun

def slow(args):
    print("running", flush=True)
    time.sleep(60)

speedrun.run = slow
sys.exit(main(["speedrun"]))
"""


def test_sigterm_is_handled_like_ctrl_c():
    child = subprocess.Popen([sys.executable, "-c", SLOW_COMMAND], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline() == "running\n"
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == EXIT_INTERRUPTED
    assert err == "mnist-jax: interrupted; checkpoints already written are kept.\n"


def test_the_previous_sigterm_handler_is_restored(capsys):
    def previous(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, previous)
    try:
        assert main(["evaluate", "/no/such/run"]) == 2
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)
