"""The per-run report: a checkpoint's test-set predictions, every figure as PNG, and one self-contained HTML page."""

import base64
import dataclasses
import html
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from matplotlib.figure import Figure

from mnist_jax import plots
from mnist_jax.augment import AffineRanges
from mnist_jax.checkpoints import restore_variables
from mnist_jax.config import TrainConfig
from mnist_jax.data import DIGIT_NAMES, Datasets, Split
from mnist_jax.diagram import draw_model
from mnist_jax.errors import UserError
from mnist_jax.predictor import softmax
from mnist_jax.rundir import CONFIG, ENVIRONMENT, METRICS, RunDir, run_splits, write_atomically
from mnist_jax.summary import format_summary, summarize
from mnist_jax.steps import predict_logits

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"  # inside the run directory
CLASSIFICATION_REPORT = "classification_report.json"
REPORT_HTML = "report.html"
FIGURE_CAPTIONS = {  # PNG file stem -> caption, in page order
    "curves": "Loss and accuracy per epoch",
    "samples": "Training images with their labels",
    "augmented": "Training images (first column) and random warps of them, as training draws them (rotation, zoom, "
                 "shift)",
    "confusion_matrix": "Confusion matrix on the test set (counts)",
    "confusion_matrix_normalized": "Confusion matrix on the test set (fraction of each true class)",
    "predictions": "Predictions on random test images (mistakes in red)",
    "mistakes": "The most confident mistakes on the test set",
    "model": "Model diagram",
}
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")
DECIMALS = 4  # digits after the point in tables
TINY = 1e-3  # smaller magnitudes (learning rates, weight decay) in scientific notation
MISSING = "\u2014"  # an em dash in empty table cells


@dataclasses.dataclass(frozen=True)
class Predictions:
    """A checkpoint's predictions on every test image."""

    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # int (N,)
    predictions: np.ndarray  # int (N,)
    probabilities: np.ndarray  # float (N, K), softmax of the logits


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """What a report is drawn from: a checkpoint's network and test-set predictions, and the training images."""

    run_dir: RunDir
    which: str | int  # the checkpoint: "best", "latest" or an epoch
    epoch: int
    model: nn.Module
    config: TrainConfig
    train: Split
    predicted: Predictions
    class_names: tuple[str, ...]

    @classmethod
    def from_checkpoint(cls, run_dir_path: str | Path, which: str | int = "best",
                        data_dir: str | None = None) -> "ReportInputs":
        """Restore a checkpoint, load the data its run trained on and predict every test image."""
        run_dir = RunDir.open(run_dir_path)
        epoch, model, variables, meta = restore_variables(run_dir.path, which)
        config, train, test = run_splits(run_dir.path, meta, data_dir)
        predicted = predict_test_set(model.apply, variables, test, config.eval_batch_size)
        return cls(run_dir, which, epoch, model, config, train, predicted,
                   tuple(meta.get("class_names") or DIGIT_NAMES))

    @classmethod
    def from_training(cls, result: Any, config: TrainConfig, datasets: Datasets) -> "ReportInputs":
        """A run just trained (a train.TrainResult), from memory: the final state's test predictions, the very ones
        its metrics.json scores, with no checkpoint to restore, no data to reload and nothing to predict again."""
        probabilities_NxK = softmax(result.test_logits)  # NumPy: no small programs to compile
        test = datasets.test
        predicted = Predictions(test.images, test.labels, probabilities_NxK.argmax(axis=-1), probabilities_NxK)
        return cls(result.run_dir, "latest", len(result.history), result.model, config, datasets.train, predicted,
                   datasets.class_names)


@dataclasses.dataclass(frozen=True)
class RunFigures:
    """What write_figures produced, and what the HTML page shows beside the run's own files."""

    run_dir: RunDir
    which: str | int
    epoch: int
    figures: dict[str, Path]  # file stem -> PNG path, in page order
    classification: dict[str, Any]
    summary: str  # the model summary table as text


Run = str | Path | ReportInputs  # a run directory, or what to draw already in memory


def write_report(run: Run, which: str | int = "best", data_dir: str | None = None) -> Path:
    """Write every figure, classification_report.json and a self-contained report.html; return the HTML path."""
    contents = write_figures(run, which, data_dir)
    page = render_html(contents)
    path = write_atomically(contents.run_dir.path / REPORT_HTML, lambda temporary: temporary.write_text(
        page, encoding="utf-8"))
    log.info("Wrote %s.", path)
    return path


def write_figures(run: Run, which: str | int = "best", data_dir: str | None = None) -> RunFigures:
    """Write RUN_DIR/figures/*.png and classification_report.json of a checkpoint's predictions on the test set."""
    inputs = run if isinstance(run, ReportInputs) else ReportInputs.from_checkpoint(run, which, data_dir)
    run_dir, config, predicted = inputs.run_dir, inputs.config, inputs.predicted
    figures = draw_figures(run_dir.read_history(), inputs.train, predicted, inputs.class_names, config.seed,
                           AffineRanges.of(config))
    rows = summarize(inputs.model)
    summary = format_summary(rows)  # the page shows it; it also stands for the network in the diagram's fingerprint
    figures["model"] = Drawing((summary,), lambda: draw_model(inputs.model, rows))
    folder = run_dir.path / FIGURES_DIR
    try:
        folder.mkdir(exist_ok=True)
    except OSError as error:
        raise UserError(f"Cannot create {folder}: {error.strerror or error}.") from None
    # A figure drawn from the same inputs before (a report run again, a resumed run's samples) is kept as it is.
    paths = {name: save_if_changed(folder / f"{name}.png", drawing) for name, drawing in figures.items()}
    classification = plots.classification_metrics(predicted.labels, predicted.predictions, inputs.class_names)
    run_dir.write_json(CLASSIFICATION_REPORT, classification)
    log.info("Wrote %d figures into %s.", len(paths), folder)
    return RunFigures(run_dir, inputs.which, inputs.epoch, paths, classification, summary)


def predict_test_set(apply_fn: Any, variables: Any, test: Split, batch_size: int) -> Predictions:
    """Class probabilities and predicted classes for every test image."""
    logits_NxK = predict_logits(apply_fn, variables, jax.device_put(test.images), batch_size)
    probabilities_NxK = softmax(np.asarray(logits_NxK))
    return Predictions(test.images, test.labels, probabilities_NxK.argmax(axis=-1), probabilities_NxK)


@dataclasses.dataclass(frozen=True)
class Drawing:
    """A figure not drawn yet, and what it is drawn from."""

    inputs: tuple  # arrays and JSON-like values: plots.fingerprint's arguments
    draw: Callable[[], Figure]


def draw_figures(history: list[dict[str, Any]], train: Split, predicted: Predictions, class_names: Sequence[str],
                 seed: int, augmented: AffineRanges = AffineRanges()) -> dict[str, Drawing]:
    """Every figure of the report except the model diagram, keyed by file stem; with augmentation, warped samples."""
    p, names = predicted, list(class_names)
    samples = plots.pick_indices(len(train), min(plots.DEFAULT_SAMPLES, len(train)), seed)
    warped = plots.pick_indices(len(train), min(plots.AUGMENTED_ROWS, len(train)), seed)
    shown = plots.pick_indices(len(p.labels), min(plots.DEFAULT_PREDICTIONS, len(p.labels)), seed)
    tested = plots.fingerprint(p.images, p.labels, p.predictions, p.probabilities)  # once, for four figures
    return {
        "curves": Drawing((history,), lambda: plots.plot_history(history)),
        "samples": Drawing((train.images[samples], train.labels[samples], names), lambda: plots.plot_samples(
            train.images, train.labels, len(samples), class_names, seed)),
        **({"augmented": Drawing((train.images[warped], list(augmented), seed),
                                 lambda: plots.plot_augmented(train.images, augmented, seed))} if augmented else {}),
        "confusion_matrix": Drawing((tested, names), lambda: plots.plot_confusion_matrix(
            p.labels, p.predictions, class_names)),
        "confusion_matrix_normalized": Drawing((tested, names), lambda: plots.plot_confusion_matrix(
            p.labels, p.predictions, class_names, normalize=True)),
        "predictions": Drawing((tested, names, shown), lambda: plots.plot_predictions(
            p.images, p.labels, p.predictions, p.probabilities, len(shown), class_names, seed)),
        "mistakes": Drawing((tested, names), lambda: plots.plot_mistakes(
            p.images, p.labels, p.predictions, p.probabilities, class_names=class_names)),
    }


def save_if_changed(path: Path, drawing: Drawing) -> Path:
    """Draw and save the figure, unless the PNG at `path` was drawn from the same inputs (its fingerprint says)."""
    fingerprint = plots.fingerprint(path.stem, *drawing.inputs)
    if plots.saved_fingerprint(path) == fingerprint:
        return path
    return plots.save_figure(drawing.draw(), path, fingerprint)


# The HTML page: every value escaped, CSS inline, PNGs as data URIs, no scripts and no links.

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.subtitle { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f5f8; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.columns { display: flex; flex-wrap: wrap; gap: 0 3em; align-items: flex-start; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; margin-top: 0.3em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def render_html(contents: RunFigures) -> str:
    """The whole report page as one self-contained HTML document."""
    run_dir = contents.run_dir
    name = html.escape(run_dir.path.resolve().name)
    sections = [
        '<div class="columns">'
        + _section("Final test metrics", _key_value_table(_read_optional_json(run_dir, METRICS)))
        + _section("Configuration", _key_value_table(_read_optional_json(run_dir, CONFIG))) + "</div>",
        _section("Training history", _history_table(run_dir.read_history())),
        _section("Figures", "".join(_figure(path, FIGURE_CAPTIONS.get(stem, stem))
                                    for stem, path in contents.figures.items() if stem != "model")),
        _section("Per-class metrics on the test set", _classification_table(contents.classification)),
        _model_section(contents),
        _section("Environment", _key_value_table(_flatten(_read_optional_json(run_dir, ENVIRONMENT)))),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>mnist-jax report: {name}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f"<h1>mnist-jax run report: {name}</h1>\n"
            f'<p class="subtitle">Run directory {html.escape(str(run_dir.path.resolve()))}; test-set figures from '
            f"the {html.escape(str(contents.which))} checkpoint (epoch {contents.epoch}).</p>\n"
            + "\n".join(section for section in sections if section) + "\n</body>\n</html>\n")


def _section(title: str, body: str) -> str:
    anchor = title.split()[0].lower()  # for RUN_DIR/report.html#figures
    return f'<section id="{html.escape(anchor)}">\n<h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _model_section(contents: RunFigures) -> str:
    """The summary table beside the diagram."""
    parts = [f"<pre>{html.escape(contents.summary)}</pre>", _figure(contents.figures["model"], FIGURE_CAPTIONS["model"])]
    return _section("Model", '<div class="columns">' + "\n".join(parts) + "</div>")


def _figure(path: Path, caption: str) -> str:
    """A PNG embedded as a base64 data URI, so the page needs no other file."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    caption = html.escape(caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>\n")


def _key_value_table(values: dict[str, Any] | None) -> str:
    if not values:
        return "<p>Not recorded.</p>"
    return _table(None, ([key, value] for key, value in sorted(values.items())))


def _history_table(history: list[dict[str, Any]]) -> str:
    if not history:
        return "<p>No finished epochs recorded.</p>"
    columns = [c for c in HISTORY_COLUMNS if any(c in record for record in history)]
    columns += sorted({key for record in history for key in record} - set(columns))
    return _table(columns, ([record.get(c) for c in columns] for record in history))


def _classification_table(report: dict[str, Any]) -> str:
    """scikit-learn's classification report: one row per class, then the averages, then the accuracy."""
    columns = ["class", "precision", "recall", "f1-score", "support"]
    rows = [[name, scores["precision"], scores["recall"], scores["f1-score"], int(scores["support"])]
            for name, scores in report.items() if isinstance(scores, dict)]  # scikit-learn gives supports as floats
    if "accuracy" in report:
        rows.append(["accuracy", None, None, report["accuracy"], None])
    return _table(columns, rows)


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[Any]]) -> str:
    head = "" if header is None else "<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>\n"
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>\n" for row in rows)
    return f"<table>\n{head}{body}</table>"


def _cell(value: Any) -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    css = ' class="number"' if numeric else ""
    return f"<td{css}>{html.escape(_format_value(value))}</td>"


def _format_value(value: Any) -> str:
    """Floats to four decimals (tiny ones in e-notation), lists joined, None as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


def _format_float(value: float) -> str:
    if 0 < abs(value) < TINY:
        return f"{value:.{DECIMALS}g}"
    return f"{value:.{DECIMALS}f}"


def _flatten(values: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (environment.json's packages) as dotted keys."""
    flat = {}
    for key, value in (values or {}).items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_optional_json(run_dir: RunDir, name: str) -> dict[str, Any] | None:
    """A JSON file of the run, or None with a warning when it is missing or damaged."""
    try:
        return run_dir.read_json(name)
    except UserError as error:
        log.warning("Leaving %s out of the report: %s", name, error)
        return None
