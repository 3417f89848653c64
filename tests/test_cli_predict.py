"""`mnist-jax predict`: files, random test images, benchmark, and one-sentence errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_jax import data
from mnist_jax.cli import EXIT_USER_ERROR, main
from mnist_jax.config import TrainConfig
from mnist_jax.predictor import Predictor
from mnist_jax.rundir import RunDir
from mnist_jax.train import train_and_evaluate
from tests.test_jsonio import strict_loads
from tests.test_predictor import assert_consistent_benchmark

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits_mnist_dir):
    """A tiny MLP trained for two epochs on the digits written as MNIST IDX files (so --data-dir matters)."""
    config = TrainConfig(dataset="mnist", data_dir=str(digits_mnist_dir), model="mlp", hidden=32, epochs=2,
                         batch_size=32)
    return str(train_and_evaluate(config, RunDir.create(tmp_path_factory.mktemp("cli") / "run")).run_dir.path)


@pytest.fixture(scope="module")
def digits_test():
    return data.load_train_test("digits", "idx", None)[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_test):
    """Three test digits saved as 84x84 PNG files."""
    folder = tmp_path_factory.mktemp("files")
    paths = []
    for i, image in enumerate(digits_test.images[:3]):
        paths.append(str(folder / f"digit{i}.png"))
        Image.fromarray(image).resize((84, 84), Image.Resampling.BILINEAR).save(paths[-1])
    return paths


def predict(capsys, *args):
    """Run `mnist-jax predict ARGS`; return the exit code, stdout and stderr."""
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_files_print_one_line_each_with_label_and_confidence(run_dir, files, capsys):
    code, out, _ = predict(capsys, run_dir, *files)
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(files)
    probabilities = Predictor.load(run_dir).predict_proba(files)
    for line, file, expected in zip(lines, files, probabilities):
        name, printed_label, confidence = line.split()
        assert name == file and int(printed_label) == expected.argmax()
        assert confidence == f"{expected.max():.4f}"  # the predicted label's probability


def test_json_has_input_label_and_ten_probabilities_per_file(run_dir, files, capsys):
    code, out, _ = predict(capsys, run_dir, *files, "--json")
    results = json.loads(out)
    assert code == 0 and [result["input"] for result in results] == files
    expected = Predictor.load(run_dir).predict_proba(files)
    for result, probabilities in zip(results, expected):
        assert set(result) == {"input", "label", "probabilities"}
        # Every float32 digit kept: JSON holds the float64 of each float32, and the same checkpoint run by the same
        # program gives the same bits (within one machine and one XLA build).
        np.testing.assert_array_equal(np.float32(result["probabilities"]), probabilities)
        assert result["label"] == int(np.argmax(result["probabilities"]))


@pytest.fixture
def mixed_files(files, tmp_path):
    """Good files with a blank image and a missing file between them."""
    blank = tmp_path / "blank.png"
    Image.new("L", (84, 84), 0).save(blank)
    return [files[0], str(blank), str(tmp_path / "missing.png"), files[1]]


def test_several_files_name_each_bad_one_and_still_predict_the_good_ones(run_dir, files, mixed_files, capsys):
    code, out, err = predict(capsys, run_dir, *mixed_files)
    expected = Predictor.load(run_dir).predict(files[:2])
    assert code == EXIT_USER_ERROR
    assert [line.split()[:2] for line in out.splitlines()] == [[files[0], str(expected[0])],
                                                               [files[1], str(expected[1])]]
    errors = err.splitlines()
    assert errors == [f"mnist-jax: error: Image {mixed_files[1]!r} contains no digit: it is blank.",
                      f"mnist-jax: error: Cannot read image {mixed_files[2]!r}: no such file; expected a readable "
                      f"PNG or JPEG image."]


def test_several_files_json_holds_the_good_ones(run_dir, files, mixed_files, capsys):
    code, out, err = predict(capsys, run_dir, *mixed_files, "--json")
    assert code == EXIT_USER_ERROR and len(err.splitlines()) == 2
    assert [result["input"] for result in strict_loads(out)] == [files[0], files[1]]


def test_json_with_every_file_bad_is_an_empty_list(run_dir, mixed_files, capsys):
    code, out, err = predict(capsys, run_dir, *mixed_files[1:3], "--json")
    assert code == EXIT_USER_ERROR and strict_loads(out) == [] and len(err.splitlines()) == 2


def test_json_output_is_strict_even_with_nan(run_dir, files, capsys, monkeypatch):
    monkeypatch.setattr(Predictor, "predict_proba", lambda self, images: np.full((len(images), 10), np.nan))
    code, out, _ = predict(capsys, run_dir, files[0], "--json")
    assert code == 0 and strict_loads(out)[0]["probabilities"] == [None] * 10


def test_which_picks_the_checkpoint(run_dir, files, capsys):
    first = json.loads(predict(capsys, run_dir, *files, "--json", "--which", "1")[1])
    latest = json.loads(predict(capsys, run_dir, *files, "--json", "--which", "latest")[1])
    np.testing.assert_array_equal(np.float32([r["probabilities"] for r in first]),
                                  Predictor.load(run_dir, 1).predict_proba(files))  # bit for bit, as above
    assert [r["probabilities"] for r in first] != [r["probabilities"] for r in latest]


def test_random_prints_predicted_and_true_labels_and_the_count_correct(run_dir, digits_test, capsys):
    code, out, _ = predict(capsys, run_dir, "--random", 10, "--seed", 3)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 11
    rows = [line.split() for line in lines[:10]]
    indices = [int(row[0][len("test["):-1]) for row in rows]
    assert [int(row[4]) for row in rows] == digits_test.labels[indices].tolist()
    correct = sum(row[2] == row[4] for row in rows)
    assert lines[-1] == f"{correct}/10 correct"


def test_random_json_is_reproducible_and_labels_come_from_the_test_set(run_dir, digits_test, capsys):
    results = json.loads(predict(capsys, run_dir, "--random", 5, "--seed", 1, "--json")[1])
    assert results == json.loads(predict(capsys, run_dir, "--random", 5, "--seed", 1, "--json")[1])
    assert results != json.loads(predict(capsys, run_dir, "--random", 5, "--seed", 2, "--json")[1])
    indices = [int(result["input"][len("test["):-1]) for result in results]
    assert len(set(indices)) == 5
    assert [result["true_label"] for result in results] == digits_test.labels[indices].tolist()
    expected = Predictor.load(run_dir).predict(digits_test.images[indices])
    assert [result["label"] for result in results] == expected.tolist()


def test_random_reads_the_data_dir_flag_over_the_runs(run_dir, tiny_mnist_dir, capsys):
    # The tiny folder's test set is 10 images labelled 0..9 in order, unlike the run's digits.
    results = json.loads(predict(capsys, run_dir, "--random", 10, "--json", "--data-dir", tiny_mnist_dir)[1])
    assert [result["true_label"] for result in results] == list(range(10))


def test_benchmark_json_reports_latency_and_throughput(run_dir, capsys):
    code, out, _ = predict(capsys, run_dir, "--benchmark", "--json")
    report = json.loads(out)
    assert code == 0 and report["model"] == "mlp"
    assert_consistent_benchmark(report, [1, 64, 512])


@pytest.mark.parametrize("args, problem", [
    ([], "Give image files, --random N or --benchmark"),
    (["--random", 3, "FILES"], "Give image files, --random N or --benchmark"),
    (["--random", 0], "--random must be a positive number"),
    (["--random", 100000], "Cannot draw 100000 random test images"),
    (["missing.png"], "no such file"),
    (["--which", "newest", "--random", 2], "best, latest or an epoch number"),
    (["--which", 9, "--random", 2], "no checkpoint for epoch 9"),
])
def test_user_errors_end_in_one_sentence_and_exit_code_2(run_dir, files, capsys, args, problem):
    args = [files[0] if arg == "FILES" else arg for arg in args]
    code, out, err = predict(capsys, run_dir, *args)
    errors = [line for line in err.splitlines() if line.startswith("mnist-jax: error:")]
    assert code == EXIT_USER_ERROR and out == ""
    assert len(errors) == 1 and problem in errors[0] and errors[0].endswith(".")
    assert "Traceback" not in err


def test_a_missing_run_directory_is_a_user_error(tmp_path, capsys):
    code, _, err = predict(capsys, tmp_path / "no-run", "--random", 2)
    assert code == EXIT_USER_ERROR and "does not exist" in err


def test_the_script_runs_the_predict_command(run_dir):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), run_dir, "--random", "3"],
                            capture_output=True, text=True, cwd="/", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].endswith("/3 correct")


def test_a_damaged_checkpoint_is_one_sentence_on_stderr_and_nothing_else(run_dir, tmp_path):
    """Orbax's failed reads leave asyncio tasks behind; their tracebacks must not reach the terminal."""
    damaged = shutil.copytree(run_dir, tmp_path / "run")
    for path in (damaged / "checkpoints" / "2" / "params").rglob("*"):
        if path.is_file() and path.parent.name == "d":  # the array data, not the metadata
            path.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "mnist_jax", "predict", str(damaged), "--which", "2",
                             "--random", "3"], capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_USER_ERROR and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"mnist-jax: error: Checkpoint {damaged / 'checkpoints' / '2'} is damaged: ")
    assert "TensorStore" not in result.stderr  # the root cause, not the wrapper's repr
