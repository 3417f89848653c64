"""Benchmark and speedrun report what they promise (numbers are checked in BENCHMARKS.md, not here)."""

import json
import statistics

import jax
import pytest

from mnist_jax import benchmark as benchmark_module
from mnist_jax import data
from mnist_jax.compilation import COMPILE_CACHE_ENV, count_compilations, persistent_cache
from mnist_jax.benchmark import DATASET_SIZE, benchmark
from mnist_jax.cli import main
from mnist_jax.config import TrainConfig
from mnist_jax.speedrun import RECIPE, run_speedrun
from tests.conftest import SteadyClock


def test_benchmark_reports_speed_compile_time_and_no_recompilation(monkeypatch):
    monkeypatch.setattr(benchmark_module, "time", SteadyClock(0.25))  # every timed call lasts a quarter second
    jax.clear_caches()  # so the warm-up has programs to compile, whatever ran before
    config = TrainConfig(model="mlp")
    result = benchmark(config, steps=5, repeats=2, eval_images=300)
    flops = 2 * (784 * 128 + 128 * 10)
    assert result["flops_per_image"] == flops
    assert result["train_images_per_second"] == 5 * config.batch_size / 0.25
    assert result["eval_images_per_second"] == 300 / 0.25
    assert result["train_gflops_per_second"] == round(3 * flops * result["train_images_per_second"] / 1e9, 2)
    assert result["eval_gflops_per_second"] == round(flops * result["eval_images_per_second"] / 1e9, 2)
    # The warm-up compiled (the counter timed it) and the timed calls did not.
    assert result["train_compile_seconds"] > 0 and result["eval_compile_seconds"] > 0
    assert result["compilations_after_warmup"] == 0
    # Compiled again with every in-memory program forgotten: each one loaded from the cache the warm-up filled.
    assert result["warm_cache_hits"] == result["warm_programs"] >= 2
    assert result["train_compile_seconds_warm"] >= 0 and result["eval_compile_seconds_warm"] >= 0
    # The process held the benchmark's images and labels (uint8 and int32), so its peak is at least their size.
    assert result["peak_memory_bytes"] >= DATASET_SIZE * (28 * 28 + 4)


@pytest.mark.parametrize("loop", ["scan", "step"])
def test_benchmark_cli_json(loop, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(COMPILE_CACHE_ENV, "1")
    monkeypatch.setenv("MNIST_JAX_CACHE_DIR", str(tmp_path))
    assert main(["benchmark", "--model", "mlp", "--steps", "3", "--repeats", "1", "--loop", loop, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"train_images_per_second", "eval_images_per_second", "compile_seconds", "compile_seconds_warm"} <= \
        result.keys()
    assert result["loop"] == loop and result["fast_compile"] is False
    assert result["warm_cache_hits"] == result["warm_programs"] >= 1
    assert not any(tmp_path.iterdir())  # its cache was a temporary one: the user's is left alone


@pytest.mark.parametrize("off", [["--no-compile-cache"], []], ids=["flag", "environment"])
def test_benchmark_without_the_compile_cache_reports_cold_compiles_only(off, capsys):
    assert main(["benchmark", "--model", "mlp", "--steps", "3", "--repeats", "1", *off]) == 0  # the tests set it 0
    out = capsys.readouterr().out
    timings = [line for line in out.splitlines() if "images/s" in line]
    assert len(timings) == 2 and all("compile" in line and "warm" not in line for line in timings)


def test_benchmark_cli_times_the_fast_compile_program_on_request(capsys):
    assert main(["benchmark", "--model", "mlp", "--steps", "3", "--repeats", "1", "--fast-compile", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fast_compile"] is True and result["compilations_after_warmup"] == 0


def test_speedrun_reports_every_seed(tmp_path):
    digits = data.load_datasets("digits", val_split=0.2)
    recipe = RECIPE.replace(batch_size=32, epochs=3, learning_rate=3e-3)
    with persistent_cache(tmp_path), count_compilations() as counter:  # on around it, and still not used
        result = run_speedrun(digits, seeds=2, recipe=recipe)
    assert result["compile_cache"] is False and counter.cache_hits == 0 and not any(tmp_path.iterdir())
    assert [run["seed"] for run in result["runs"]] == [0, 1]
    accuracies = [run["test_accuracy"] for run in result["runs"]]
    assert result["test_accuracy_min"] == min(accuracies)
    seconds = [run["seconds"] for run in result["runs"]]
    assert (result["seconds_min"], result["seconds_max"]) == (min(seconds), max(seconds))
    assert result["seconds"] == round(statistics.mean(seconds), 3)
    assert result["test_accuracy_min"] > 0.8  # the recipe learns the digits too


@pytest.mark.slow
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
