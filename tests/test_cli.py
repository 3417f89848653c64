"""The train and evaluate commands, the run directory contract, and one-sentence errors."""

import json
import subprocess
import sys

import pytest

from mnist_jax.cli import main
from mnist_jax.rundir import RunDir

TRAIN_DIGITS = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", "2", "--batch-size", "32",
                "--no-progress"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main([*TRAIN_DIGITS, "--run-dir", str(run_dir)]) == 0
    return run_dir


def test_train_writes_the_run_directory(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"] == "mlp" and config["epochs"] == 2 and config["val_split"] == 0.2
    history = [json.loads(line) for line in (trained_run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"} <= history[0].keys()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"test_accuracy", "test_loss", "epochs", "train_seconds"} <= metrics.keys()
    assert metrics["epochs"] == 2 and metrics["test_accuracy"] > 0.8
    environment = json.loads((trained_run / "environment.json").read_text())
    assert environment["seed"] == 0 and environment["packages"]["jax"] and environment["devices"]
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]
    assert (trained_run / "report.html").is_file() and (trained_run / "figures" / "curves.png").is_file()


def test_evaluate_reproduces_the_final_test_accuracy(trained_run, capsys):
    assert main(["evaluate", str(trained_run), "--which", "latest", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert evaluated["epoch"] == 2 and evaluated["test_images"] == metrics["test_images"]
    # The same count of correct images over the same number: the same float.
    assert evaluated["test_accuracy"] == metrics["test_accuracy"]


def test_default_run_dir_is_created_under_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--no-progress",
                 "--no-report"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.endswith("-mlp") and (run / "metrics.json").is_file()
    assert not (run / "report.html").exists()
    assert str(run.relative_to(tmp_path)) in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["train", "--epochs", "0"], "--epochs must be a positive integer, got 0."),
    (["train", "--val-split", "1.5"], "--val-split must be in [0, 1), got 1.5."),
    (["train", "--dataset", "cifar10"], "--dataset must be one of"),
    (["train", "--data-dir", "/no/such/folder"], "MNIST data directory /no/such/folder does not exist"),
    (["evaluate", "/no/such/run"], "/no/such/run is not a run directory"),
    (["train", "--resume", "/no/such/run"], "/no/such/run is not a run directory"),
])
def test_user_errors_are_one_sentence_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_flag_value_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "many"])
    assert exit_info.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_corrupt_data_file_is_one_sentence(tmp_path, tiny_mnist_dir, capsys):
    (tiny_mnist_dir / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    assert main(["train", "--data-dir", str(tiny_mnist_dir), "--run-dir", str(tmp_path / "r")]) == 2
    assert "is a damaged gzip file" in capsys.readouterr().err


def test_python_dash_m_and_help_explain_every_flag():
    out = subprocess.run([sys.executable, "-m", "mnist_jax", "train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ["--model", "--epochs", "--batch-size", "--lr", "--optimizer", "--loss", "--val-split", "--seed",
                 "--data-dir", "--source", "--dataset", "--run-dir", "--resume"]:
        assert flag in out
    assert "(default: 64)" in out and "(default: cnn)" in out


def test_resume_extends_a_run_and_keeps_its_configuration(tmp_path, caplog):
    run_dir = tmp_path / "run"
    common = ["--no-progress", "--no-report"]
    assert main(["train", "--dataset", "digits", "--model", "mlp", "--batch-size", "32", "--epochs", "1",
                 "--schedule", "constant", "--run-dir", str(run_dir), *common]) == 0
    assert main(["train", "--resume", str(run_dir), "--epochs", "2", "--lr", "0.5", *common]) == 0
    assert "Ignoring --learning-rate with --resume" in caplog.text
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 2 and config["model"] == "mlp" and config["batch_size"] == 32
    assert [json.loads(line)["epoch"] for line in (run_dir / "history.jsonl").read_text().splitlines()] == [1, 2]
    # Without --epochs, a resumed run keeps its own epoch count: nothing is left to train.
    assert main(["train", "--resume", str(run_dir), *common]) == 0
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2


def test_data_error_leaves_no_empty_run_directory(tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path / "absent"), "--run-dir", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_never_overwritten(trained_run, capsys):
    before = (trained_run / "history.jsonl").read_text()
    assert main([*TRAIN_DIGITS, "--run-dir", str(trained_run)]) == 2
    assert "already holds a run; resume it with --resume" in capsys.readouterr().err
    assert (trained_run / "history.jsonl").read_text() == before


def test_batch_larger_than_the_data_writes_nothing(tmp_path, capsys):
    assert main(["train", "--dataset", "digits", "--batch-size", "5000", "--run-dir", str(tmp_path / "run")]) == 2
    assert "--batch-size 5000 is larger than the" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_failed_resume_leaves_the_configuration_alone(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"dataset": "digits", "model": "mlp", "epochs": 1,
                                                     "batch_size": 5000}))
    assert main(["train", "--resume", str(run_dir), "--epochs", "7", "--no-progress"]) == 2
    assert "--batch-size 5000 is larger than the" in capsys.readouterr().err
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 1


@pytest.mark.parametrize("content,message", [("[1, 2]", "is not a JSON object"),
                                             ('{"epochs": "3"}', "has a value of the wrong type"),
                                             ("{not json", "Cannot read the configuration")])
def test_bad_configuration_file_is_one_sentence(tmp_path, capsys, content, message):
    (tmp_path / "config.json").write_text(content)
    assert main(["train", "--resume", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_folder_the_user_made_is_kept_and_released_after_a_data_error(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    assert main(["train", "--data-dir", str(tmp_path / "absent"), "--run-dir", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())
    RunDir.create(tmp_path / "mine").unlock()  # nothing holds it


def test_the_run_directory_is_claimed_before_the_data_is_loaded(tmp_path, capsys):
    """A second train on a directory in use is refused at once, not after loading (or downloading) the data."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "held")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--data-dir", str(tmp_path / "absent"), "--run-dir", str(tmp_path / "held")]) == 2
        assert f"is in use by process {holder.pid}" in capsys.readouterr().err  # not the missing data
    finally:
        holder.kill()
        holder.wait()


HOLD_LOCK = """
import sys, time
from mnist_jax.rundir import RunDir
RunDir.create(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_train_imports_no_more_than_it_needs_before_its_first_step():
    """Orbax (the first checkpoint), Matplotlib (the report) and scikit-learn wait until a command uses them."""
    code = ("import sys; from mnist_jax.cli import build_parser; build_parser(); import mnist_jax.train; "
            "print(' '.join(m for m in ('orbax.checkpoint', 'matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
