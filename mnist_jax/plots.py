"""Figures of a run: training curves, sample digits, confusion matrices, prediction galleries; PNG files."""

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from mnist_jax.errors import InputError, UserError
from mnist_jax.rundir import write_atomically

DPI = 100  # pixels per inch of the saved PNGs
FINGERPRINT_KEY = "mnist_jax inputs"  # a PNG text chunk: what the figure was drawn from, so it is drawn only anew
COLUMNS = 5  # images per row in every gallery
TILE_WIDTH_INCHES = 1.5  # one gallery image
TILE_HEIGHT_INCHES = 1.9  # one gallery image with its two-line caption
TILE_GAP = 0.1  # blank margin around each gallery image, as a fraction of its side
DEFAULT_SAMPLES = 20  # 4 rows of 5, as in the article's sample grid
DEFAULT_PREDICTIONS = 10
DEFAULT_MISTAKES = 20
AUGMENTED_ROWS = 4  # training images shown with their random warps
IMAGE_CMAP = "gray_r"  # dark digits on white, readable on a white page
MATRIX_CMAP = "Blues"
DARK_CELL_LUMINANCE = 0.5  # cells darker than this get white text
MISTAKE_COLOUR = "tab:red"
CORRECT_COLOUR = "black"
EPOCH_MARGIN = 0.5  # x-axis room beside the first and last epoch
TRAIN_STYLE = {"color": "tab:blue", "marker": "o", "label": "training"}
VAL_STYLE = {"color": "tab:orange", "marker": "s", "linestyle": "--", "label": "validation"}


def save_figure(fig: Figure, path: str | Path, fingerprint: str | None = None) -> Path:
    """Write a figure as a PNG file, atomically, with `fingerprint` (of what it was drawn from) in its text chunks;
    a missing folder, full disk or unwritable path is a UserError."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"Cannot write {path}: the folder {path.parent} does not exist.")
    metadata = {FINGERPRINT_KEY: fingerprint} if fingerprint else None
    # format="png": the temporary's name does not say it; dpi="figure" keeps each figure's own resolution.
    return write_atomically(path, lambda temporary: fig.savefig(temporary, format="png", dpi="figure",
                                                                metadata=metadata))


def fingerprint(*inputs: Any) -> str:
    """A digest of what a figure is drawn from (arrays, JSON-like values), this package's version and Matplotlib's."""
    import matplotlib

    from mnist_jax import __version__

    digest = hashlib.blake2b(json.dumps([__version__, matplotlib.__version__]).encode(), digest_size=16)
    for value in inputs:
        if isinstance(value, np.ndarray):
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).data)
        else:
            digest.update(json.dumps(value, sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def saved_fingerprint(path: str | Path) -> str | None:
    """The fingerprint save_figure wrote into a PNG; None for a missing, foreign or unreadable file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.text.get(FINGERPRINT_KEY) if image.format == "PNG" else None
    except (OSError, ValueError, SyntaxError):  # missing, not an image, truncated: Pillow's errors for these
        return None


def plot_history(history: Sequence[dict[str, Any]]) -> Figure:
    """Loss and accuracy per epoch, training against validation where the history has it."""
    fig = Figure(figsize=(10, 4), dpi=DPI)  # fixed margins: a constrained layout would cost a second drawing
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    loss_ax, accuracy_ax = fig.subplots(1, 2)
    for ax, metric in ((loss_ax, "loss"), (accuracy_ax, "accuracy")):
        _plot_metric(ax, history, metric)
    if not history:
        fig.suptitle("No finished epochs recorded yet")
    return fig


def _plot_metric(ax, history: Sequence[dict[str, Any]], metric: str) -> None:
    """One panel: the training and (when recorded) validation curve of a metric."""
    for prefix, style in (("train", TRAIN_STYLE), ("val", VAL_STYLE)):
        points = [(r["epoch"], r[f"{prefix}_{metric}"]) for r in history if r.get(f"{prefix}_{metric}") is not None]
        if points:
            ax.plot(*zip(*points), **style)
    ax.set(title=metric.capitalize(), xlabel="Epoch", ylabel=metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs are whole numbers
    epochs = [r["epoch"] for r in history]
    if epochs:
        ax.set_xlim(min(epochs) - EPOCH_MARGIN, max(epochs) + EPOCH_MARGIN)  # a 1-epoch run gets a real axis
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend()


def plot_samples(images: np.ndarray, labels: np.ndarray, count: int = DEFAULT_SAMPLES,
                 class_names: Sequence[str] | None = None, seed: int | None = 0) -> Figure:
    """A grid of `count` images (seeded random choice; the first ones when seed is None) with their labels."""
    chosen = pick_indices(len(labels), count, seed)
    titles = [f"label: {_name(labels[i], class_names)}" for i in chosen]
    return _gallery(images[chosen], titles, [CORRECT_COLOUR] * len(chosen))


def plot_augmented(images: np.ndarray, ranges: Any, seed: int = 0, count: int = AUGMENTED_ROWS) -> Figure:
    """Rows of one training image and COLUMNS - 1 random warps of it, as training draws them (augment.py)."""
    import jax

    from mnist_jax.augment import random_affine

    chosen = pick_indices(len(images), min(count, len(images)), seed)
    originals = np.repeat(images[chosen].astype(np.float32), COLUMNS, axis=0)
    warped = np.array(random_affine(jax.random.key(seed), originals, ranges))
    warped[::COLUMNS] = originals[::COLUMNS]  # the first of each row as it is
    titles = [("original" if column == 0 else f"warp {column}") for _ in chosen for column in range(COLUMNS)]
    return _gallery(warped, titles, [CORRECT_COLOUR] * len(titles))


def pick_indices(total: int, count: int, seed: int | None) -> np.ndarray:
    """`count` distinct indices below `total`: a seeded random choice, or the first `count` when seed is None."""
    if not 1 <= count <= total:
        raise InputError(f"Cannot show {count} images: choose a count from 1 to {total}.")
    if seed is None:
        return np.arange(count)
    return np.random.default_rng(seed).choice(total, size=count, replace=False)


def plot_confusion_matrix(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str],
                          normalize: bool = False) -> Figure:
    """A heatmap of true against predicted classes, each cell labelled (row fractions when normalize)."""
    counts_KxK = confusion_counts(labels, predictions, len(class_names))
    cells_KxK = row_normalize(counts_KxK) if normalize else counts_KxK
    fig = Figure(figsize=(7, 6), dpi=DPI)  # fixed margins: a constrained layout would cost a second drawing
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.1, top=0.94)
    ax = fig.subplots()
    image = ax.imshow(cells_KxK, cmap=MATRIX_CMAP, vmin=0, vmax=1 if normalize else max(cells_KxK.max(), 1))
    fig.colorbar(image, ax=ax, label="fraction of the true class" if normalize else "images")
    _label_cells(ax, image, cells_KxK, "{:.2f}" if normalize else "{:d}")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, labels=class_names)
    ax.set_yticks(ticks, labels=class_names)
    ax.set(xlabel="Predicted label", ylabel="True label",
           title="Confusion matrix, normalised by true label" if normalize else "Confusion matrix")
    return fig


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts of true class (row) against predicted class (column)."""
    pairs = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def row_normalize(counts_KxK: np.ndarray) -> np.ndarray:
    """Each row divided by its total; a class with no images keeps a row of zeros."""
    totals_Kx1 = counts_KxK.sum(axis=1, keepdims=True)
    return np.divide(counts_KxK, totals_Kx1, out=np.zeros(counts_KxK.shape), where=totals_Kx1 > 0)


def _label_cells(ax, image, cells_KxK: np.ndarray, template: str) -> None:
    """Write every cell's value in a colour that stays readable on its background."""
    for (row, column), value in np.ndenumerate(cells_KxK):
        red, green, blue, _ = image.cmap(image.norm(value))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < DARK_CELL_LUMINANCE  # perceived brightness
        ax.text(column, row, template.format(value.item()), ha="center", va="center", fontsize=9,
                color="white" if dark else "black")


def classification_metrics(labels: np.ndarray, predictions: np.ndarray,
                           class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support with macro and weighted averages: scikit-learn's
    `classification_report(..., output_dict=True, zero_division=0)`, without importing scikit-learn (2 s)."""
    num_classes = len(class_names) if class_names is not None else int(max(labels.max(), predictions.max())) + 1
    counts_KxK = confusion_counts(labels, predictions, num_classes).astype(np.float64)
    hits, support, predicted = np.diag(counts_KxK), counts_KxK.sum(axis=1), counts_KxK.sum(axis=0)
    scores = {"precision": _ratio(hits, predicted), "recall": _ratio(hits, support),
              "f1-score": _ratio(2 * hits, support + predicted)}
    names = class_names if class_names is not None else [str(k) for k in range(num_classes)]
    shown = range(num_classes) if class_names is not None else np.flatnonzero(support + predicted)
    report: dict[str, Any] = {names[k]: {**{name: float(values[k]) for name, values in scores.items()},
                                         "support": float(support[k])} for k in shown}
    report["accuracy"] = float(hits.sum() / support.sum())
    kept = np.asarray(list(shown))
    total = float(support[kept].sum())
    report["macro avg"] = {**{name: float(values[kept].mean()) for name, values in scores.items()}, "support": total}
    report["weighted avg"] = {**{name: float(np.average(values[kept], weights=support[kept]))
                                 for name, values in scores.items()}, "support": total}
    return report


def _ratio(numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    """Element-wise division with 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    return np.divide(numerators, denominators, out=np.zeros_like(numerators), where=denominators > 0)


def plot_predictions(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray,
                     count: int = DEFAULT_PREDICTIONS, class_names: Sequence[str] | None = None,
                     seed: int | None = 0) -> Figure:
    """Predicted and true label with confidence for `count` random images; mistakes in red."""
    chosen = pick_indices(len(labels), count, seed)
    return _prediction_gallery(images, labels, predictions, probabilities, chosen, class_names)


def plot_mistakes(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, probabilities: np.ndarray,
                  count: int = DEFAULT_MISTAKES, class_names: Sequence[str] | None = None) -> Figure:
    """The `count` most confident wrong predictions, most confident first."""
    chosen = most_confident_mistakes(labels, predictions, probabilities, count)
    if len(chosen) == 0:
        fig = _new_figure((6, 1.5))
        fig.text(0.5, 0.5, f"No mistakes on {len(labels)} images.", ha="center", va="center", fontsize=14)
        return fig
    return _prediction_gallery(images, labels, predictions, probabilities, chosen, class_names)


def most_confident_mistakes(labels: np.ndarray, predictions: np.ndarray, probabilities_NxK: np.ndarray,
                            count: int) -> np.ndarray:
    """Indices of up to `count` wrong predictions, sorted by the probability given to the wrong class."""
    wrong = np.flatnonzero(predictions != labels)
    confidence = probabilities_NxK[wrong, predictions[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]


def _prediction_gallery(images, labels, predictions, probabilities_NxK, chosen, class_names) -> Figure:
    """Images captioned "pred X (p%) / true Y", red where the prediction is wrong."""
    titles = [f"pred {_name(predictions[i], class_names)} ({probabilities_NxK[i, predictions[i]]:.0%})\n"
              f"true {_name(labels[i], class_names)}" for i in chosen]
    colours = [MISTAKE_COLOUR if predictions[i] != labels[i] else CORRECT_COLOUR for i in chosen]
    return _gallery(images[chosen], titles, colours)


def _gallery(images_NxHxW: np.ndarray, titles: Sequence[str], colours: Sequence[str]) -> Figure:
    """Images in rows of COLUMNS, each with a caption; red captions also get a red frame.

    One Axes holds every tile (an image, its caption above it): it draws about 5x faster than a grid of Axes.
    """
    columns = min(COLUMNS, len(titles))
    rows = math.ceil(len(titles) / columns)
    fig = Figure(figsize=(columns * TILE_WIDTH_INCHES, rows * TILE_HEIGHT_INCHES), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    height, width = images_NxHxW.shape[1:3]
    tile_w = width * (1 + 2 * TILE_GAP)
    tile_h = tile_w * TILE_HEIGHT_INCHES / TILE_WIDTH_INCHES  # square pixels: the caption takes the extra height
    for index, (image, title, colour) in enumerate(zip(images_NxHxW, titles, colours)):
        # y grows downwards; each image sits at the bottom of its tile, its caption in the room above it.
        column, row = index % columns, index // columns
        left, top = column * tile_w + width * TILE_GAP, (row + 1) * tile_h - tile_w + width * TILE_GAP
        ax.imshow(image, cmap=IMAGE_CMAP, vmin=0, vmax=255, extent=(left, left + width, top + height, top),
                  interpolation="nearest")
        ax.text(left + width / 2, top - width * TILE_GAP / 2, title, color=colour, fontsize=10, ha="center",
                va="bottom")
        ax.add_patch(Rectangle((left, top), width, height, fill=False, edgecolor=colour,
                               linewidth=2 if colour == MISTAKE_COLOUR else 0.5))
    ax.set(xlim=(0, columns * tile_w), ylim=(rows * tile_h, 0), aspect="equal")  # rows top to bottom
    ax.set_axis_off()
    return fig


def gallery_tiles(fig: Figure) -> list[tuple[np.ndarray, str, Any]]:
    """(image, caption, caption colour) of each gallery tile, in reading order."""
    ax = fig.axes[0]
    return [(np.asarray(image.get_array()), text.get_text(), text.get_color())
            for image, text in zip(ax.images, ax.texts)]


def _new_figure(size_inches: tuple[float, float]) -> Figure:
    """A figure detached from pyplot (no display, no global state) that lays itself out."""
    return Figure(figsize=size_inches, dpi=DPI, layout="constrained")


def _name(label: Any, class_names: Sequence[str] | None) -> str:
    return str(int(label)) if class_names is None else class_names[int(label)]
