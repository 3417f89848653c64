"""The Predictor: parity with model.apply, checkpoint round trip, batch buckets, input checks, benchmark."""

import contextlib
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from mnist_jax import data
from mnist_jax.config import TrainConfig
from mnist_jax.errors import CheckpointError, InputError
from mnist_jax.images import load_mnist_image
from mnist_jax.models import create_model, model_hparams, prepare_images
from mnist_jax.predictor import BUCKETS, DIGIT_NAMES, Predictor
from mnist_jax import predictor_bench
from mnist_jax.predictor_bench import benchmark_predictor
from mnist_jax.rundir import RunDir
from mnist_jax.train import train_and_evaluate
from tests.conftest import SteadyClock
from tests.tolerances import CNN_LOGITS, CROSS_ENTROPY, assert_close, assert_differ

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # one event per XLA compilation
TINY = TrainConfig(dataset="digits", model="mlp", hidden=32, epochs=2, batch_size=32)
LOGITS = 28 * 28 + TINY.hidden  # reduction length of the tiny MLP's logits (tests/tolerances.py)
FLOAT64_EPS = float(np.finfo(np.float64).eps)
# The BatchNorm CNNs' convolutions and Dense, plus a few for each BatchNorm (bncnn: 5 convolutions, stridecnn: 7).
BNCNN_LOGITS = 3 * 3 * (1 + 32 + 32 + 64) + 4 * 4 * 64 + 128 + 5 * 4
STRIDECNN_LOGITS = 3 * 3 * (1 + 32 + 32 + 64) + 5 * 5 * (32 + 64) + 4 * 4 * 64 + 128 + 7 * 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MLP trained for two epochs on digits, with its run directory."""
    return train_and_evaluate(TINY, RunDir.create(tmp_path_factory.mktemp("predictor") / "run"))


@pytest.fixture(scope="module")
def test_images():
    return data.load_train_test("digits", "idx", None)[1].images


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor(tiny_model(), trained.state.params)


def tiny_model():
    return create_model(TINY.model, **model_hparams(TINY.model, TINY.to_dict()))


def direct_logits(predictor, images_uint8):
    return np.asarray(predictor.model.apply({"params": predictor.params}, prepare_images(images_uint8)))


@contextlib.contextmanager
def count_compilations():
    """Count XLA compilations in the block (the jitted function's cache misses)."""
    compiled = []

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            compiled.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def write_png(path, image_28x28, size=112):
    """Save a digit as a larger PNG, the way a user's file would differ from MNIST's 28x28."""
    Image.fromarray(image_28x28).resize((size, size), Image.Resampling.BILINEAR).save(path)
    return path


def test_logits_match_model_apply_on_trained_params(predictor, test_images):
    images = test_images[:70]  # 64 + a remainder of 6 padded to 8
    assert_close(predictor.predict_logits(images), direct_logits(predictor, images), LOGITS)


def test_loaded_predictor_matches_the_in_memory_trained_params(trained, predictor, test_images):
    loaded = Predictor.load(trained.run_dir.path, "latest")  # the last epoch holds the final parameters
    assert loaded.epoch == TINY.epochs
    assert loaded.meta["model"] == "mlp" and loaded.meta["hparams"]["hidden"] == TINY.hidden
    assert loaded.class_names == DIGIT_NAMES
    jax.tree.map(np.testing.assert_array_equal, loaded.params, trained.state.params)
    # The same program on the same parameters: bit for bit (within one machine and one XLA build).
    np.testing.assert_array_equal(loaded.predict_logits(test_images), predictor.predict_logits(test_images))


def test_load_takes_the_checkpoints_folder_and_an_epoch_number(trained, test_images):
    first = Predictor.load(trained.run_dir.checkpoints, 1)
    assert first.epoch == 1
    assert Predictor.load(trained.run_dir.path, "1").epoch == 1
    latest = Predictor.load(trained.run_dir.path, "latest")
    assert_differ(first.predict_logits(test_images[:8]), latest.predict_logits(test_images[:8]), LOGITS)


def test_best_is_the_epoch_with_the_highest_validation_accuracy(trained):
    best_epoch = max(trained.history, key=lambda record: record["val_accuracy"])["epoch"]
    assert Predictor.load(trained.run_dir.path).epoch == best_epoch


def test_predict_and_predict_proba_agree_with_the_logits(predictor, test_images):
    images = test_images[:20]
    logits = predictor.predict_logits(images)
    probabilities = predictor.predict_proba(images)
    labels = predictor.predict(images)
    assert probabilities.shape == (20, 10) and probabilities.dtype == np.float32
    assert_close(probabilities.sum(axis=1), np.ones(20), CROSS_ENTROPY + 10)  # and the sum of the ten
    assert_close(probabilities, jax.nn.softmax(logits), CROSS_ENTROPY)
    assert labels.shape == (20,) and np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(labels, logits.argmax(axis=1))


def test_trained_predictor_beats_chance(trained, test_images):
    labels = data.load_train_test("digits", "idx", None)[1].labels
    accuracy = (Predictor.load(trained.run_dir.path).predict(test_images) == labels).mean()
    assert accuracy > 0.5  # chance is 0.1


@pytest.mark.parametrize("layout", ["single", "channel", "float", "float64", "jax", "list"])
def test_every_accepted_array_layout_gives_the_same_logits(predictor, test_images, layout):
    images = test_images[:3]
    expected = predictor.predict_logits(images)
    given = {"single": images[0], "channel": images[..., None], "float": images.astype(np.float32),
             "float64": images.astype(np.float64), "jax": jax.numpy.asarray(images),
             "list": [image for image in images]}[layout]
    logits = predictor.predict_logits(given)
    assert_close(logits, expected[:1] if layout == "single" else expected, LOGITS)  # maybe another batch shape


def test_any_batch_size_compiles_at_most_one_program_per_bucket(trained):
    fresh = Predictor(tiny_model(), trained.state.params)
    images = np.random.default_rng(0).integers(0, 256, (1000, 28, 28), dtype=np.uint8)
    with count_compilations() as compiled:
        for count in [*range(1, 71), 1000]:
            assert fresh.predict_logits(images[:count]).shape == (count, 10)
    assert 0 < len(compiled) <= len(BUCKETS)  # 0 would mean the listener saw nothing
    assert fresh._logits_fn._cache_size() == len(BUCKETS)  # 1..70 and 1000 use every bucket once


@pytest.mark.parametrize("name, reduction_length", [("cnn", CNN_LOGITS), ("bncnn", BNCNN_LOGITS),
                                                     ("stridecnn", STRIDECNN_LOGITS)])
def test_convolutional_predictor_runs_xla_convolutions_with_model_apply_results(name, reduction_length):
    """Without a loop in its program, the Predictor traces layers.native_ops(): XLA's own convolution, faster there
    than the im2col form that model.apply (and training) runs, and the same function."""
    model = create_model(name)
    variables = model.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
    variables = jax.tree.map(lambda v: v + 0.01, variables)  # non-zero biases and BatchNorm statistics
    params, model_state = variables.pop("params"), variables
    fresh = Predictor(model, params, model_state=model_state)
    images = np.random.default_rng(2).integers(0, 256, (70, 28, 28), dtype=np.uint8)  # buckets of 64 and 8
    assert "convolution" in fresh._logits_fn.lower(fresh.variables, images[:8].astype(np.float32)).as_text()
    expected = model.apply({"params": params, **model_state}, prepare_images(images))
    assert_close(fresh.predict_logits(images), expected, reduction_length)


def test_large_batches_are_chunked_and_padded_without_changing_results(predictor):
    images = np.random.default_rng(1).integers(0, 256, (1000, 28, 28), dtype=np.uint8)  # 512 + 488 padded to 512
    assert_close(predictor.predict_logits(images), direct_logits(predictor, images), LOGITS)


def test_bucket_for_picks_the_smallest_bucket_that_fits(predictor):
    assert [predictor.bucket_for(n) for n in (1, 2, 8, 9, 64, 65, 512, 513)] == [1, 8, 8, 64, 64, 512, 512, 512]


def test_image_files_are_loaded_like_load_mnist_image(predictor, test_images, tmp_path):
    paths = [write_png(tmp_path / f"digit{i}.png", image) for i, image in enumerate(test_images[:3])]
    expected = predictor.predict_logits(np.stack([load_mnist_image(path) for path in paths]))
    np.testing.assert_array_equal(predictor.predict_logits(paths), expected)  # the same pixels, the same program
    assert_close(predictor.predict_logits(str(paths[0])), expected[:1], LOGITS)  # one image: another batch shape


def test_floats_on_a_zero_to_one_scale_are_flagged(predictor, test_images, caplog):
    predictor.predict(test_images[:2] / 255.0)
    assert "0-255" in caplog.text


def pixels(value, dtype=np.float32):
    return np.full((2, 28, 28), value, dtype)


BAD_ARRAYS = {
    "flat": (np.zeros(784, np.uint8), "shaped"),
    "wrong size": (np.zeros((2, 28, 27), np.uint8), "shaped"),
    "rgb": (np.zeros((2, 28, 28, 3), np.uint8), "shaped"),
    "empty": (np.zeros((0, 28, 28), np.uint8), "empty batch"),
    "empty channel": (np.zeros((0, 28, 28, 1), np.uint8), "empty batch"),
    "empty list": ([], "empty list"),
    "nan": (pixels(np.nan), "NaN or infinite"),
    "inf": (pixels(np.inf), "NaN or infinite"),
    "negative": (pixels(-1.0), "range from -1"),
    "too bright": (pixels(255.5), "to 255.5"),
    "int above 255": (pixels(300, np.int16), "to 300"),
    "strings": (np.full((28, 28), "7"), "dtype <U1"),
    "objects": (np.full((28, 28), None, dtype=object), "dtype object"),
    "complex": (pixels(1 + 1j, np.complex64), "dtype complex64"),
    "bool": (pixels(True, bool), "dtype bool"),
    "ragged": ([np.zeros((28, 28)), np.zeros((27, 28))], "Cannot read the images as an array"),
    "mixed": (["digit.png", np.zeros((28, 28))], "mixing paths and arrays"),
}


@pytest.mark.parametrize("name", BAD_ARRAYS)
def test_bad_arrays_raise_input_error_saying_what_is_accepted(predictor, name):
    images, problem = BAD_ARRAYS[name]
    with pytest.raises(InputError, match=problem) as raised:
        predictor.predict(images)
    assert isinstance(raised.value, ValueError)
    assert "pixels in 0-255" in str(raised.value)


@pytest.mark.parametrize("name, content, problem", [
    ("missing.png", None, "no such file"),
    ("notes.png", b"not an image at all", "not a PNG or JPEG"),
    ("empty.png", b"", "it is empty"),
    ("truncated.png", "truncate", "truncated or corrupt"),
])
def test_bad_files_raise_input_error(predictor, test_images, tmp_path, name, content, problem):
    path = tmp_path / name
    if content == "truncate":
        whole = write_png(tmp_path / "whole.png", test_images[0]).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=problem):
        predictor.predict([path])


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run that a test may damage."""
    return shutil.copytree(trained.run_dir.path, tmp_path / "run")


def test_missing_path_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor.load(tmp_path / "nowhere")


def test_run_without_checkpoints_raises_checkpoint_error(run_copy):
    shutil.rmtree(run_copy / "checkpoints")
    with pytest.raises(CheckpointError, match="No checkpoints found"):
        Predictor.load(run_copy)


@pytest.mark.parametrize("damage", ["truncated", "removed"])
def test_damaged_parameter_files_raise_checkpoint_error(run_copy, damage):
    arrays = [path for path in (run_copy / "checkpoints" / "2" / "params").rglob("*")
              if path.is_file() and path.parent.name == "d"]  # the data files, not the metadata
    assert arrays
    for path in arrays:
        if damage == "truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            path.unlink()
    with pytest.raises(CheckpointError, match="damaged"):
        Predictor.load(run_copy, 2)


@pytest.mark.parametrize("which, problem", [(7, "no checkpoint for epoch 7"), ("newest", "best, latest or an epoch")])
def test_unknown_checkpoint_choice_raises_checkpoint_error(trained, which, problem):
    with pytest.raises(CheckpointError, match=problem):
        Predictor.load(trained.run_dir.path, which)


def assert_consistent_benchmark(report, batch_sizes):
    """What holds whatever the timings: the p90 is not below the median, and each row's images/s is its batch over
    its median seconds (four float64 roundings apart)."""
    assert report["latency_median_ms"] <= report["latency_p90_ms"]
    assert [row["batch_size"] for row in report["throughput"]] == list(batch_sizes)
    for row in report["throughput"]:
        images = row["images_per_second"] * row["median_ms"] / 1000
        assert images == pytest.approx(row["batch_size"], rel=4 * FLOAT64_EPS)


def test_benchmark_reports_latency_and_throughput(predictor):
    report = benchmark_predictor(predictor, batch_sizes=(1, 3), repeats=2, latency_calls=3)
    assert report["model"] == "mlp" and report["backend"] == jax.default_backend()
    assert_consistent_benchmark(report, (1, 3))


def test_benchmark_times_each_call_and_reports_milliseconds_and_images_per_second(predictor, monkeypatch):
    monkeypatch.setattr(predictor_bench, "time", SteadyClock(0.25))
    report = benchmark_predictor(predictor, batch_sizes=(1, 8), repeats=2, latency_calls=3)
    assert report["latency_median_ms"] == report["latency_p90_ms"] == 250.0
    assert report["throughput"] == [{"batch_size": 1, "median_ms": 250.0, "images_per_second": 4.0},
                                    {"batch_size": 8, "median_ms": 250.0, "images_per_second": 32.0}]
