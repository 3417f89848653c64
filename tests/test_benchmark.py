"""Benchmark and speedrun report what they promise (numbers are checked in BENCHMARKS.md, not here)."""

import json

import pytest

from mnist_jax import data
from mnist_jax.benchmark import benchmark
from mnist_jax.cli import main
from mnist_jax.config import TrainConfig
from mnist_jax.speedrun import RECIPE, run_speedrun


def test_benchmark_reports_speed_compile_time_and_no_recompilation():
    result = benchmark(TrainConfig(model="mlp"), steps=5, repeats=2, eval_images=300)
    assert result["train_images_per_second"] > 0 and result["eval_images_per_second"] > 0
    assert result["compile_seconds"] > 0 and result["compilations_after_warmup"] == 0
    assert result["flops_per_image"] == 2 * (784 * 128 + 128 * 10)
    assert result["peak_memory_bytes"] > 0


@pytest.mark.parametrize("loop", ["scan", "step"])
def test_benchmark_cli_json(loop, capsys):
    assert main(["benchmark", "--model", "mlp", "--steps", "3", "--repeats", "1", "--loop", loop, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"train_images_per_second", "eval_images_per_second", "compile_seconds"} <= result.keys()
    assert result["loop"] == loop and result["fast_compile"] is False


def test_benchmark_cli_times_the_fast_compile_program_on_request(capsys):
    assert main(["benchmark", "--model", "mlp", "--steps", "3", "--repeats", "1", "--fast-compile", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fast_compile"] is True and result["compilations_after_warmup"] == 0


def test_speedrun_reports_every_seed():
    digits = data.load_datasets("digits", val_split=0.2)
    recipe = RECIPE.replace(batch_size=32, epochs=3, learning_rate=3e-3)
    result = run_speedrun(digits, seeds=2, recipe=recipe)
    assert [run["seed"] for run in result["runs"]] == [0, 1]
    accuracies = [run["test_accuracy"] for run in result["runs"]]
    assert result["test_accuracy_min"] == min(accuracies) and result["seconds"] > 0
    assert result["test_accuracy_min"] > 0.8  # the recipe learns the digits too


def test_speedrun_reaches_99_percent_on_mnist(real_mnist_dir, capsys):
    assert main(["speedrun", "--seeds", "1", "--data-dir", str(real_mnist_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"seconds", "test_accuracy_mean", "test_accuracy_min"} <= result.keys()
    assert result["test_accuracy_min"] >= 0.99


def test_speedrun_rejects_zero_seeds(capsys):
    assert main(["speedrun", "--seeds", "0"]) == 2
    assert "--seeds must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--batch-size", "512", "--steps", "200"], ["--batch-size", "50000"]])
def test_benchmark_refuses_more_steps_than_its_data_holds(argv, capsys):
    assert main(["benchmark", "--model", "mlp", "--loop", "step", *argv]) == 2
    assert "does not fit the 48,000 benchmark images" in capsys.readouterr().err
