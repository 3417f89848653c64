"""Tests for mnist_jax.plots: every figure draws what it claims and saves as a real PNG."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.colors import same_color
from PIL import Image
from sklearn.metrics import classification_report, confusion_matrix

from mnist_jax import plots
from mnist_jax.cli import main
from mnist_jax.config import TrainConfig
from mnist_jax.data import load_datasets
from mnist_jax.errors import InputError, UserError
from mnist_jax.report import Predictions, predict_test_set
from mnist_jax.train import train_and_evaluate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 5_000  # a figure with axes, text and images is far larger than an empty canvas
MIN_PNG_SIDE = 200
CLASS_NAMES = tuple(str(k) for k in range(10))


def assert_valid_png(data: bytes) -> Image.Image:
    """A PNG that Pillow decodes, of a sensible size, and not one flat colour."""
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > MIN_PNG_BYTES
    Image.open(io.BytesIO(data)).verify()
    image = Image.open(io.BytesIO(data)).convert("L")
    assert min(image.size) >= MIN_PNG_SIDE
    low, high = image.getextrema()
    assert high - low > 100, "the picture is blank"
    return image


def save_and_check(fig, path: Path) -> Image.Image:
    assert plots.save_figure(fig, path) == path
    return assert_valid_png(path.read_bytes())


@pytest.fixture(scope="module")
def run():
    """A tiny MLP trained for 2 epochs on digits, its history, and its test-set predictions."""
    config = TrainConfig(dataset="digits", model="mlp", epochs=2, batch_size=32)
    datasets = load_datasets("digits", val_split=config.val_split, seed=config.seed)
    result = train_and_evaluate(config, datasets=datasets)
    predicted = predict_test_set(result.state.apply_fn, result.state.eval_variables(), datasets.test,
                                 config.eval_batch_size)
    return datasets, result.history, predicted


@pytest.fixture
def with_mistakes(run) -> Predictions:
    """The test predictions with every third one forced wrong, so galleries surely show mistakes."""
    _, _, p = run
    predictions = p.predictions.copy()
    predictions[::3] = (p.labels[::3] + 1) % 10
    return Predictions(p.images, p.labels, predictions, p.probabilities)


def titles(fig) -> list[str]:
    return [caption for _, caption, _ in plots.gallery_tiles(fig)]


def test_history_curves_save_as_png(run, tmp_path):
    _, history, _ = run
    fig = plots.plot_history(history)
    loss_ax, accuracy_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["training", "validation"]
    np.testing.assert_array_equal(accuracy_ax.lines[1].get_ydata(), [r["val_accuracy"] for r in history])
    save_and_check(fig, tmp_path / "curves.png")


def test_history_of_one_epoch_without_validation_shows_markers(tmp_path):
    fig = plots.plot_history([{"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.8, "seconds": 1.0}])
    for ax in fig.axes:
        (line,) = ax.lines
        assert line.get_label() == "training" and line.get_marker() == "o"
        assert all(float(tick).is_integer() for tick in ax.get_xticks())
    save_and_check(fig, tmp_path / "one.png")


def test_empty_history_still_draws():
    fig = plots.plot_history([])
    assert all(not ax.lines for ax in fig.axes)


def test_samples_grid_is_4x5_with_labels(run, tmp_path):
    datasets, _, _ = run
    train = datasets.train
    fig = plots.plot_samples(train.images, train.labels, seed=None)
    tiles = plots.gallery_tiles(fig)
    assert titles(fig) == [f"label: {label}" for label in train.labels[:20]]
    np.testing.assert_array_equal(tiles[3][0], train.images[3])
    corners = [(image.get_extent()[0], image.get_extent()[3]) for image in fig.axes[0].images]  # left, top
    assert len({left for left, _ in corners}) == 5 and len({top for _, top in corners}) == 4  # 4 rows of 5
    assert corners[1][0] > corners[0][0] and corners[5][1] > corners[0][1]  # left to right, then top to bottom
    save_and_check(fig, tmp_path / "samples.png")


def test_samples_are_a_seeded_choice(run):
    datasets, _, _ = run
    train = datasets.train
    draw = lambda seed: titles(plots.plot_samples(train.images, train.labels, 20, seed=seed))
    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


@pytest.mark.parametrize("count", [0, 10_000])
def test_samples_count_out_of_range_is_an_input_error(run, count):
    datasets, _, _ = run
    with pytest.raises(InputError, match="choose a count from 1 to"):
        plots.plot_samples(datasets.train.images, datasets.train.labels, count)


def cell_texts(fig) -> np.ndarray:
    ax = fig.axes[0]
    return np.array([text.get_text() for text in ax.texts]).reshape(10, 10)


def test_confusion_matrix_shows_scikit_learn_counts(run, tmp_path):
    _, _, p = run
    fig = plots.plot_confusion_matrix(p.labels, p.predictions, CLASS_NAMES)
    expected = confusion_matrix(p.labels, p.predictions)
    np.testing.assert_array_equal(cell_texts(fig).astype(int), expected)
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), expected)
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("Predicted label", "True label")
    save_and_check(fig, tmp_path / "confusion.png")


def test_normalized_confusion_matrix_shows_row_fractions(run, tmp_path):
    _, _, p = run
    fig = plots.plot_confusion_matrix(p.labels, p.predictions, CLASS_NAMES, normalize=True)
    expected = confusion_matrix(p.labels, p.predictions, normalize="true")
    np.testing.assert_allclose(cell_texts(fig).astype(float), expected, rtol=0, atol=0.005)  # two decimals shown
    save_and_check(fig, tmp_path / "confusion_normalized.png")


def test_cell_text_is_white_on_dark_and_black_on_light_cells():
    labels = np.repeat(np.arange(10), 10)
    fig = plots.plot_confusion_matrix(labels, labels, CLASS_NAMES)  # a full diagonal, zeros elsewhere
    texts = np.array(fig.axes[0].texts).reshape(10, 10)
    assert same_color(texts[0, 0].get_color(), "white")
    assert same_color(texts[0, 1].get_color(), "black")


def test_a_class_without_images_gets_a_zero_row():
    fractions = plots.row_normalize(np.array([[2, 2], [0, 0]]))
    np.testing.assert_array_equal(fractions, [[0.5, 0.5], [0.0, 0.0]])


def test_classification_metrics_equal_scikit_learn_and_survive_json(run):
    _, _, p = run
    metrics = plots.classification_metrics(p.labels, p.predictions, CLASS_NAMES)
    expected = classification_report(p.labels, p.predictions, output_dict=True)
    assert_reports_equal(metrics, expected)
    assert json.loads(json.dumps(metrics)) == metrics
    assert {"macro avg", "weighted avg", "accuracy"} <= metrics.keys()


@pytest.mark.filterwarnings("ignore:A single label was found")  # scikit-learn, on a one-class case
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=40))))
def test_classification_metrics_equal_scikit_learn_on_any_labels(case):
    """Any predictions, classes with no images or never predicted included (scikit-learn's zero_division=0)."""
    num_classes, pairs = case
    labels, predictions = (np.array(column) for column in zip(*pairs))
    names = [f"class {k}" for k in range(num_classes)]
    expected = classification_report(labels, predictions, labels=np.arange(num_classes), target_names=names,
                                     output_dict=True, zero_division=0)
    assert_reports_equal(plots.classification_metrics(labels, predictions, names), expected)
    np.testing.assert_array_equal(plots.confusion_counts(labels, predictions, num_classes),
                                  confusion_matrix(labels, predictions, labels=np.arange(num_classes)))


def assert_reports_equal(ours: dict, expected: dict) -> None:
    """The same keys and numbers; float64 sums in another order may differ in the last bits."""
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, dict):
            assert ours[key].keys() == value.keys()
            np.testing.assert_allclose([ours[key][k] for k in value], list(value.values()), rtol=1e-12)
        else:
            assert ours[key] == pytest.approx(value, rel=1e-12)


def test_prediction_gallery_marks_mistakes_in_red(with_mistakes, tmp_path):
    p = with_mistakes
    fig = plots.plot_predictions(p.images, p.labels, p.predictions, p.probabilities, seed=None)
    tiles = plots.gallery_tiles(fig)
    assert len(tiles) == 10
    for i, (image, caption, colour) in enumerate(tiles):
        confidence = p.probabilities[i, p.predictions[i]]
        assert caption == f"pred {p.predictions[i]} ({confidence:.0%})\ntrue {p.labels[i]}"
        np.testing.assert_array_equal(image, p.images[i])
        wrong = p.predictions[i] != p.labels[i]
        assert same_color(colour, plots.MISTAKE_COLOUR if wrong else plots.CORRECT_COLOUR)
    save_and_check(fig, tmp_path / "predictions.png")


def test_mistakes_are_wrong_and_sorted_by_confidence(with_mistakes, tmp_path):
    p = with_mistakes
    chosen = plots.most_confident_mistakes(p.labels, p.predictions, p.probabilities, 12)
    wrong = np.flatnonzero(p.predictions != p.labels)
    confidence = p.probabilities[wrong, p.predictions[wrong]]
    np.testing.assert_array_equal(p.probabilities[chosen, p.predictions[chosen]], np.sort(confidence)[::-1][:12])
    fig = plots.plot_mistakes(p.images, p.labels, p.predictions, p.probabilities, count=12)
    assert titles(fig)[0].startswith(f"pred {p.predictions[chosen[0]]} ")
    assert len(titles(fig)) == 12
    save_and_check(fig, tmp_path / "mistakes.png")


def test_no_mistakes_says_so(run):
    _, _, p = run
    fig = plots.plot_mistakes(p.images, p.labels, p.labels, p.probabilities)
    assert fig.texts[0].get_text() == f"No mistakes on {len(p.labels)} images."


def test_save_into_a_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        plots.save_figure(plots.plot_history([]), tmp_path / "missing" / "curves.png")


def test_cli_samples_writes_the_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["samples", "--dataset", "digits", "--count", "10", "--seed", "3", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert_valid_png(out.read_bytes())


def test_cli_samples_into_a_missing_folder_exits_2_with_one_sentence(tmp_path, capsys):
    out = tmp_path / "missing" / "grid.png"
    assert main(["samples", "--dataset", "digits", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"mnist-jax: error: Cannot write {out}: the folder {out.parent} does not exist."
    assert not out.exists()


def test_a_fingerprint_changes_with_any_value_shape_or_dtype_of_its_inputs():
    images = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    same = plots.fingerprint(images, {"seed": 0}, [1, 2])
    assert plots.fingerprint(images.copy(), {"seed": 0}, [1, 2]) == same
    changed = images.copy()
    changed[1, 2, 3] += 1
    for other in ((changed, {"seed": 0}, [1, 2]), (images.reshape(3, 2, 4), {"seed": 0}, [1, 2]),
                  (images.astype(np.int8), {"seed": 0}, [1, 2]), (images, {"seed": 1}, [1, 2]), (images, [1, 2])):
        assert plots.fingerprint(*other) != same


def test_a_saved_figure_carries_its_fingerprint_and_other_files_have_none(tmp_path):
    path = plots.save_figure(plots.plot_history([]), tmp_path / "curves.png", "abc123")
    assert plots.saved_fingerprint(path) == "abc123"
    assert plots.saved_fingerprint(plots.save_figure(plots.plot_history([]), tmp_path / "plain.png")) is None
    for name, content in (("text.png", b"hello"), ("cut.png", path.read_bytes()[:60])):
        (tmp_path / name).write_bytes(content)
        assert plots.saved_fingerprint(tmp_path / name) is None
    assert plots.saved_fingerprint(tmp_path / "missing.png") is None
