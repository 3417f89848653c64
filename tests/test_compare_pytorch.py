"""scripts/compare_pytorch.py: its arguments, ratios and tables, without PyTorch (CI does not install it)."""

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compare_pytorch.py"


@pytest.fixture(scope="module")
def compare():
    """The script as a module (it imports PyTorch only inside the functions that time it)."""
    spec = importlib.util.spec_from_file_location("compare_pytorch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batch_sizes_are_parsed_from_a_comma_separated_list(compare):
    assert compare.parse_batch_sizes("32,64,128,256,512") == (32, 64, 128, 256, 512)
    assert compare.parse_batch_sizes("64") == (64,)


@pytest.mark.parametrize("text", ["32,x", "", "64,,128", "0", "32,-64", "1.5"])
def test_a_bad_batch_size_list_is_refused_in_one_sentence(compare, capsys, text):
    with pytest.raises(argparse.ArgumentTypeError, match="positive whole numbers separated by commas"):
        compare.parse_batch_sizes(text)
    with pytest.raises(SystemExit) as exited:
        compare.parse_args(["--batch-sizes", text])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(f"got {text!r}") and error.count(". ") == 0  # one sentence, naming what was given


def test_batch_size_is_one_of_batch_sizes_and_each_mode_has_its_defaults(compare):
    assert compare.parse_args(["--batch-size", "128"]).batch_sizes == (128,)
    assert compare.parse_args([]).batch_sizes == (64,)
    inference = compare.parse_args(["--inference"])
    assert inference.mode == "inference" and inference.batch_sizes == (1, 64, 512)
    assert compare.parse_args(["--speedrun", "--seeds", "3"]).mode == "speedrun"


def test_training_rounds_hold_19200_images_or_the_given_steps(compare):
    args = compare.parse_args(["--batch-sizes", "32,64,512"])
    assert args.rounds_work == {32: 600, 64: 300, 512: 37}  # 19,200 images, whole steps
    assert compare.parse_args(["--batch-size", "64", "--steps", "300"]).rounds_work == {64: 300}
    assert compare.parse_args(["--inference", "--images", "1024"]).rounds_work == {1: 1024, 64: 16, 512: 2}


@pytest.mark.parametrize("argv, problem", [
    (["--batch-sizes", "64,512", "--steps", "100"], "100 steps of 512 images exceed the 48,000 training images"),
    (["--batch-size", "50000"], "batch size 50000 exceeds the 48,000 training images"),
    (["--repeats", "0"], "--repeats must be a positive whole number"),
    (["--torch-threads", "-1"], "--torch-threads must be a positive whole number"),
    (["--inference", "--speedrun"], "not allowed with argument"),
])
def test_impossible_runs_are_refused_before_any_work(compare, capsys, argv, problem):
    with pytest.raises(SystemExit) as exited:
        compare.parse_args(argv)
    assert exited.value.code == 2 and problem in capsys.readouterr().err


def test_the_ratio_is_the_median_of_the_rounds_ratios_not_of_the_medians(compare):
    # Rounds where mnist_jax took 1, 2 and 4 s and PyTorch 3, 2 and 4 s: 3x, 1x and 1x as fast.
    median, ratios = compare.speedups([1.0, 2.0, 4.0], [3.0, 2.0, 4.0])
    assert ratios == [3.0, 1.0, 1.0] and median == 1.0  # the medians' ratio would say 3 / 2 = 1.5x
    with pytest.raises(ValueError):
        compare.speedups([1.0, 2.0], [1.0])  # every round has both sides


def test_a_row_gives_each_sides_images_per_second_over_its_median_round(compare):
    row = compare.throughput_row(64, 6400, {"jax": [0.5, 1.0, 0.25], "torch": [2.0, 2.0, 4.0]})
    assert row["jax_images_per_second"] == 12_800.0 and row["torch_images_per_second"] == 3_200.0
    assert row["jax_over_torch_per_round"] == [4.0, 2.0, 16.0] and row["jax_over_torch"] == 4.0


def test_interleaved_rounds_take_turns(compare):
    calls = []
    timers = {name: (lambda name=name: calls.append(name) or float(len(calls))) for name in ("jax", "torch")}
    seconds = compare.interleaved_rounds(timers, rounds=3)
    assert calls == ["jax", "torch"] * 3
    assert seconds == {"jax": [1.0, 3.0, 5.0], "torch": [2.0, 4.0, 6.0]}


def test_markdown_table_formats_numbers_for_reading(compare):
    table = compare.markdown_table(["batch", "images/s", "ratio"], [[64, 12922.44, "2.09x"], [512, 7.5, "0.50x"]])
    assert table.splitlines() == ["| batch | images/s | ratio |", "| --- | --- | --- |", "| 64 | 12,922 | 2.09x |",
                                  "| 512 | 7.50 | 0.50x |"]


def test_throughput_table_has_a_row_per_batch_size_and_the_plain_flax_column_only_when_timed(compare):
    rows = [compare.throughput_row(size, 1000, {"jax": [0.1, 0.1], "torch": [0.2, 0.3]}) for size in (32, 64)]
    table = compare.throughput_table(rows).splitlines()
    assert table[0] == "| batch | mnist_jax images/s | PyTorch eager images/s | mnist_jax / PyTorch | rounds' ratios |"
    assert table[2:] == ["| 32 | 10,000 | 4,000 | 2.50x | 2.00-3.00x |", "| 64 | 10,000 | 4,000 | 2.50x | 2.00-3.00x |"]
    plain = compare.throughput_row(64, 1000, {"jax": [0.1], "torch": [0.2], "plain": [0.5]})
    assert "| 64 | 10,000 | 5,000 | 2,000 | 2.00x | 2.00-2.00x |" in compare.throughput_table([plain])


def test_speedrun_table_shows_both_sides_seconds_and_accuracy_per_seed(compare):
    rows = [{"seed": 0, "jax_seconds": 3.5, "jax_test_accuracy": 0.9912, "torch_seconds": 14.0,
             "torch_test_accuracy": 0.9899, "jax_over_torch_time": 0.25}]
    assert compare.speedrun_table(rows).splitlines()[2] == "| 0 | 3.50 | 99.12% | 14.00 | 98.99% | 0.25x |"


def test_models_that_disagree_are_not_timed(compare):
    logits = np.array([[1.0, -2.0, 3.0]], np.float32)
    compare._check_agree(logits, logits + 1e-6)  # float32 rounding apart: the same model
    with pytest.raises(RuntimeError, match="not the same model"):
        compare._check_agree(logits, logits[:, ::-1])


def test_without_pytorch_the_script_says_how_to_install_it(compare, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert compare.main(["--batch-size", "64"]) == 2
    assert "pip install torch==2.13.0" in capsys.readouterr().err


def test_pytorch_gets_the_predictors_weights_and_computes_its_logits(compare):
    """Optional: runs only where PyTorch is installed (not in CI); the weight layout the inference mode relies on."""
    pytest.importorskip("torch")
    timers = compare.inference_timers(batch_size=8, calls=1, device="cpu")  # checks the logits agree, or raises
    assert set(timers) == {"jax", "torch"} and all(timed() > 0 for timed in timers.values())


def test_tuomasos_network_has_the_notebooks_shape_and_parameter_count(compare):
    """Optional, with PyTorch: Conv 24 5x5 (624), Conv 32 3x3 (6,944), Dense 800->256 (205,056), Dense 256->10."""
    torch = pytest.importorskip("torch")
    net = compare.tuomaso_net("cpu")
    assert sum(parameter.numel() for parameter in net.parameters()) == 624 + 6_944 + 205_056 + 2_570
    log_probabilities = net(torch.zeros(3, 1, 28, 28))
    assert log_probabilities.shape == (3, 10)
    np.testing.assert_allclose(log_probabilities.exp().sum(1).detach().numpy(), 1, rtol=1e-6)
