"""The persistent compile cache: a second run loads its programs, a changed program is compiled afresh, and the
cache being off, unwritable or damaged never changes a result nor breaks a run.

Commands run in subprocesses with a cache folder of their own: JAX's cache settings are global to a process. Hits
are counted from JAX's monitoring events, never from time.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax._src import cache_key as jax_cache_key

from mnist_jax import compilation
from mnist_jax.cli import main
from mnist_jax.compilation import (COMPILE_CACHE_ENV, COMPILE_CACHE_MB_ENV, compiler_options, count_compilations,
                                   persistent_cache)

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--hidden", "32", "--epochs", "1", "--no-progress",
         "--no-report"]
# Runs a command and reports, on its last line of stderr, the programs it compiled or loaded and how many it loaded.
COUNTING_MAIN = """
import json, sys
from mnist_jax.cli import main
from mnist_jax.compilation import count_compilations
with count_compilations() as counter:
    code = main(sys.argv[1:])
print(json.dumps({"programs": counter.count, "hits": counter.cache_hits}), file=sys.stderr)
sys.exit(code)
"""


def mnist_jax(*argv: str, cache_dir: Path, **env: str) -> dict:
    """Run `mnist-jax ARGV` with its caches under `cache_dir`; its exit code, output, programs and cache hits."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("JAX_COMPILATION_CACHE")}
    environment |= {"PYTHONPATH": str(REPO), "MNIST_JAX_CACHE_DIR": str(cache_dir), COMPILE_CACHE_ENV: "1", **env}
    done = subprocess.run([sys.executable, "-c", COUNTING_MAIN, *argv], capture_output=True, text=True,
                          env=environment, timeout=300)
    *stderr, counts = done.stderr.strip().splitlines() or [""]
    assert done.returncode == 0, done.stderr
    return {"stdout": done.stdout, "stderr": "\n".join(stderr), **json.loads(counts)}


def train(run_dir: Path, cache_dir: Path, *flags: str, **env: str) -> dict:
    """A short training run; its counts and its test metrics."""
    result = mnist_jax(*TRAIN, *flags, "--run-dir", str(run_dir), cache_dir=cache_dir, **env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return result | {"test": (metrics["test_accuracy"], metrics["test_loss"])}


def entries(folder: Path) -> set[str]:
    """The programs saved in a compile cache folder."""
    return {path.name for path in folder.glob("*-cache")} if folder.is_dir() else set()


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> dict:
    """One training run with the cache on (a copy of its cache kept aside), and its test metrics with the cache off."""
    root = tmp_path_factory.mktemp("compile_cache")
    first = train(root / "first", root / "cache")
    reference = train(root / "reference", root / "unused", "--no-compile-cache")
    shutil.copytree(root / "cache", root / "saved")
    return {"cache": root / "cache", "saved": root / "saved" / "compile", "first": first, "reference": reference["test"]}


@pytest.fixture
def cache(filled) -> Path:
    """The filled cache folder as the first run left it, for a test to change.

    Back in its own place: JAX's keys include the folder's path (it names an XLA autotuning cache inside it), so a
    copy elsewhere would be a cache of misses.
    """
    shutil.rmtree(filled["cache"])
    shutil.copytree(filled["saved"].parent, filled["cache"])
    return filled["cache"]


def test_the_first_run_saves_every_program_including_the_ones_compiled_ahead(filled):
    saved = entries(filled["saved"])
    assert filled["first"]["hits"] == 0 and filled["first"]["programs"] == len(saved) >= 4
    # Training and the evaluations are compiled ahead of time, on compilation.speedups' second thread.
    assert {name.split("-")[0] for name in saved} >= {"jit_init_state", "jit_train_steps", "jit_eval_step"}
    assert filled["first"]["test"] == filled["reference"]


def test_a_second_identical_run_loads_every_program_and_computes_the_same(filled, cache, tmp_path):
    second = train(tmp_path / "second", cache)
    assert second["hits"] == second["programs"] == filled["first"]["programs"]
    assert entries(cache / "compile") == entries(filled["saved"])  # nothing new saved
    assert second["test"] == filled["reference"]


@pytest.mark.parametrize("change", [["--hidden", "48"], ["--fast-compile"]], ids=["network", "compiler-options"])
def test_a_changed_program_is_compiled_afresh_and_computes_what_it_would_without_the_cache(change, filled, cache,
                                                                                        tmp_path):
    if change == ["--fast-compile"] and not options_differ():
        pytest.skip("--fast-compile changes the training program's options on the CPU only")
    changed = train(tmp_path / "changed", cache, *change)
    uncached = train(tmp_path / "uncached", tmp_path / "unused", *change, "--no-compile-cache")
    new = entries(cache / "compile") - entries(filled["saved"])
    # Training (and, for a new network, every program that holds it) is a new program: a miss, saved anew.
    assert changed["hits"] < changed["programs"] and len(new) == changed["programs"] - changed["hits"]
    assert any(name.startswith("jit_train_steps-") for name in new)
    assert changed["test"] == uncached["test"]


@pytest.mark.parametrize("off", [{"flags": ["--no-compile-cache"]}, {"env": {COMPILE_CACHE_ENV: "0"}}],
                         ids=["flag", "environment"])
def test_turned_off_it_neither_reads_nor_writes_not_even_jax_own(off, filled, cache, tmp_path):
    jax_own = tmp_path / "jax_own"
    result = train(tmp_path / "run", cache, *off.get("flags", []), JAX_COMPILATION_CACHE_DIR=str(jax_own),
                   **off.get("env", {}))
    assert result["hits"] == 0 and result["programs"] == filled["first"]["programs"]
    assert entries(cache / "compile") == entries(filled["saved"]) and not jax_own.exists()
    assert result["test"] == filled["reference"]


def test_jax_own_folder_is_used_when_set_and_summary_counts_flops_from_a_loaded_program(tmp_path):
    jax_own = tmp_path / "jax_own"
    runs = [mnist_jax("summary", "--model", "mlp", "--json", cache_dir=tmp_path / "ours",
                      JAX_COMPILATION_CACHE_DIR=str(jax_own)) for _ in range(2)]
    assert entries(jax_own) and not (tmp_path / "ours").exists()
    assert runs[1]["hits"] == runs[1]["programs"] >= 1
    assert json.loads(runs[1]["stdout"]) == json.loads(runs[0]["stdout"])  # XLA's FLOP count included


def test_an_unwritable_cache_folder_is_one_warning(filled, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("the cache folder's parent is a file")
    result = train(tmp_path / "run", not_a_folder)
    assert result["test"] == filled["reference"] and result["hits"] == 0
    assert_one_warning(result["stderr"], "is not a writable folder (Not a directory)")


def test_a_damaged_cache_is_one_warning_and_compiled_around(filled, cache, tmp_path):
    for entry in (cache / "compile").glob("*-cache"):
        entry.write_bytes(b"not a compiled program")
    result = train(tmp_path / "run", cache)
    assert result["test"] == filled["reference"] and result["hits"] == 0
    assert_one_warning(result["stderr"], "Deleting the folder starts the cache afresh")


def assert_one_warning(stderr: str, text: str) -> None:
    warnings = [line for line in stderr.splitlines() if "Warning" in line or line.startswith("WARNING")]
    assert len(warnings) == 1 and text in warnings[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("name, value, message", [
    (COMPILE_CACHE_ENV, "maybe", "MNIST_JAX_COMPILE_CACHE must be 1 or 0 (on or off), got 'maybe'."),
    (COMPILE_CACHE_MB_ENV, "-5", "MNIST_JAX_COMPILE_CACHE_MB must be a positive whole number of megabytes, got '-5'."),
])
def test_a_bad_setting_is_one_sentence(name, value, message, monkeypatch, capsys):
    monkeypatch.setenv(COMPILE_CACHE_ENV, "1")
    monkeypatch.setenv(name, value)
    assert main(["summary", "--model", "mlp"]) == 2
    assert capsys.readouterr().err.strip() == f"mnist-jax: error: {message}"


def test_our_folder_has_the_size_limit_and_a_folder_set_for_jax_keeps_jax_settings(monkeypatch, tmp_path):
    monkeypatch.setenv(COMPILE_CACHE_ENV, "1")
    monkeypatch.setenv(COMPILE_CACHE_MB_ENV, "3")
    monkeypatch.setenv("MNIST_JAX_CACHE_DIR", str(tmp_path / "ours"))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    with persistent_cache(tmp_path / "unused"):  # puts every setting back afterwards
        assert compilation.enable_compile_cache() == tmp_path / "ours" / "compile"
        assert jax.config.jax_compilation_cache_max_size == 3 * 2**20
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0  # every program, however quick
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_own"))
        assert compilation.enable_compile_cache() == tmp_path / "jax_own"
        assert jax.config.jax_compilation_cache_max_size == -1
        assert compilation.enable_compile_cache(False) is None and not jax.config.jax_enable_compilation_cache


def test_the_default_folder_is_beside_the_mnist_files(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_JAX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation.default_compile_cache_dir() == tmp_path / "mnist_jax" / "compile"
    monkeypatch.setenv("MNIST_JAX_CACHE_DIR", str(tmp_path / "mine"))
    assert compilation.default_compile_cache_dir() == tmp_path / "mine" / "compile"


def options_differ() -> bool:
    """Whether fast_compile gives the training programs other compiler options on this backend."""
    backend = jax.default_backend()
    return compiler_options(backend, fastest_compile=True) != compiler_options(backend, fastest_compile=False)


def counted_call(program, x) -> compilation.CompilationCounter:
    """Call `program` with every in-memory compiled program forgotten, as a new process would."""
    jax.clear_caches()
    with count_compilations() as counter:
        program(x).block_until_ready()
    return counter


def test_the_key_covers_compiler_options_and_the_jax_version(tmp_path, monkeypatch):
    program = compilation.jit(lambda x: jnp.tanh(x) * 3 + 1, fastest_compile=None)  # follows speedups()
    x = jnp.arange(4.0)
    with persistent_cache(tmp_path):
        assert counted_call(program, x).cache_hits == 0
        assert counted_call(program, x).cache_hits == 1
        with compilation.speedups(fast_compile=True):  # other XLA options: another program, never the first one
            assert counted_call(program, x).cache_hits == (0 if options_differ() else 1)
        monkeypatch.setattr(jax_cache_key, "jaxlib_version_str", "0.0.0")  # as after an upgrade
        assert counted_call(program, x).cache_hits == 0
    assert len(entries(tmp_path)) == (3 if options_differ() else 2)


def test_programs_compiled_ahead_on_the_second_thread_are_saved_and_loaded(tmp_path):
    program = compilation.jit(lambda x: jnp.sin(x) - 2)
    x = jnp.arange(3.0)
    counts = []
    with persistent_cache(tmp_path):
        for _ in range(2):
            jax.clear_caches()
            with count_compilations() as counter, compilation.speedups(precompile=[lambda: program.lower(x).compile()]):
                pass  # the block waits for the compile on the second thread
            counts.append(counter)
    assert (counts[0].count, counts[0].cache_hits) == (1, 0) and (counts[1].count, counts[1].cache_hits) == (1, 1)
    assert len(entries(tmp_path)) == 1


def test_the_settings_before_the_block_come_back(tmp_path):
    names = ("jax_compilation_cache_dir", "jax_enable_compilation_cache", "jax_compilation_cache_max_size",
             "jax_persistent_cache_min_compile_time_secs")
    before = {name: getattr(jax.config, name) for name in names}
    with persistent_cache(tmp_path):
        assert jax.config.jax_compilation_cache_dir == str(tmp_path)
        with persistent_cache(None):
            assert not jax.config.jax_enable_compilation_cache
        assert jax.config.jax_enable_compilation_cache
    assert {name: getattr(jax.config, name) for name in names} == before
