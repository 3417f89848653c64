"""A plot_model-style diagram: one box per layer, top to bottom, each with its input and output shapes.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no display, no Graphviz). Sizes are in inches and
derived from the longest label, so every model fits and the text keeps the same size however deep the model is.
"""

import dataclasses
from pathlib import Path

import flax.linen as nn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from mnist_jax.errors import InputError
from mnist_jax.summary import BATCH, IMAGE_SHAPE, LayerInfo, format_shape, summarize

FONT_SIZE = 10  # points
FONT_FAMILY = "DejaVu Sans Mono"  # ships with matplotlib; fixed width lets us size boxes before drawing
DPI = 150  # 10 pt text is about 21 pixels tall
POINTS_PER_INCH = 72
CHAR_WIDTH = 0.62 * FONT_SIZE / POINTS_PER_INCH  # DejaVu Sans Mono advances 0.602 em, plus slack for bold
LINE_HEIGHT = 1.45 * FONT_SIZE / POINTS_PER_INCH
LINES_PER_BOX = 3  # title, input shape, output shape
BOX_PADDING = 0.14  # inches between a box's edge and its text
ARROW_LENGTH = 0.32  # inches of gap between boxes
MARGIN = 0.2  # inches around the drawing
EDGE_COLOUR = "#404040"

# Pastel fills by layer type (ColorBrewer), so the parameterised layers stand out from the plumbing.
COLOURS = {
    "Input": "#d9d9d9", "Conv": "#9ecae1", "Dense": "#a1d99b", "Dropout": "#fdd0a2", "BatchNorm": "#fcbba1",
    "ReLU": "#fff7bc", "GELU": "#fff7bc", "SiLU": "#fff7bc", "Sigmoid": "#fff7bc", "Tanh": "#fff7bc",
    "MaxPool": "#dadaeb", "SumPool": "#dadaeb",
}
MODULE_COLOUR = "#c6dbef"  # other Flax modules
OPERATION_COLOUR = "#f0f0f0"  # flatten, reshape, casts and anything else between layers


@dataclasses.dataclass(frozen=True)
class _Box:
    title: str
    shapes: str  # one line per shape
    colour: str


def draw_model(model: nn.Module, rows: list[LayerInfo] | None = None) -> Figure:
    """Draw the model's layers (from `summarize`, or the rows given) as a top-to-bottom chart of boxes."""
    rows = summarize(model) if rows is None else rows
    boxes = [_input_box(rows), *(_layer_box(row) for row in rows)]
    longest = max(len(line) for box in boxes for line in [box.title, *box.shapes.splitlines()])
    box_width = longest * CHAR_WIDTH + 2 * BOX_PADDING
    box_height = LINES_PER_BOX * LINE_HEIGHT + 2 * BOX_PADDING
    width = box_width + 2 * MARGIN
    height = len(boxes) * box_height + (len(boxes) - 1) * ARROW_LENGTH + 2 * MARGIN
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)  # attach a raster canvas so the figure can be drawn and measured without pyplot
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)  # inches from the top, so layers run downwards
    axes.axis("off")
    for index, box in enumerate(boxes):
        top = MARGIN + index * (box_height + ARROW_LENGTH)
        _draw_box(axes, box, MARGIN, top, box_width, box_height)
        if index:
            _draw_arrow(axes, width / 2, top - ARROW_LENGTH, top)
    return figure


def save_diagram(figure: Figure, path: str | Path) -> Path:
    """Write the figure in the format its file extension names (.png, .svg, .pdf, ...)."""
    path = Path(path)
    extension = path.suffix.lower().lstrip(".")
    supported = figure.canvas.get_supported_filetypes()
    if extension not in supported:
        raise InputError(f"--diagram must end in an image format matplotlib writes ({', '.join(sorted(supported))}); "
                         f"got {str(path)!r}.")
    try:
        figure.savefig(path, format=extension)
    except OSError as error:
        raise InputError(f"Cannot write the diagram to {path}: {error.strerror or error}.") from None
    return path


def _input_box(rows: list[LayerInfo]) -> _Box:
    shape = rows[0].input_shape if rows else (BATCH, *IMAGE_SHAPE)
    return _Box("Input", f"output: {format_shape(shape)}", COLOURS["Input"])


def _layer_box(row: LayerInfo) -> _Box:
    shapes = (f"input:  {format_shape(row.input_shape, row.input_batch_axis)}\n"
              f"output: {format_shape(row.output_shape, row.output_batch_axis)}")
    default = MODULE_COLOUR if row.is_module else OPERATION_COLOUR
    return _Box(f"{row.name} ({row.kind})", shapes, COLOURS.get(row.kind, default))


def _draw_box(axes, box: _Box, left: float, top: float, width: float, height: float) -> None:
    axes.add_patch(FancyBboxPatch((left, top), width, height, boxstyle="round,pad=0,rounding_size=0.06",
                                  facecolor=box.colour, edgecolor=EDGE_COLOUR, linewidth=1, gid="layer-box"))
    centre = left + width / 2
    text = {"fontsize": FONT_SIZE, "family": FONT_FAMILY, "ha": "center", "va": "top"}
    axes.text(centre, top + BOX_PADDING, box.title, fontweight="bold", gid="layer-title", **text)
    axes.text(centre, top + BOX_PADDING + LINE_HEIGHT, box.shapes, multialignment="left", linespacing=1.45,
              gid="layer-shapes", **text)


def _draw_arrow(axes, x: float, start_y: float, end_y: float) -> None:
    axes.annotate("", xy=(x, end_y), xytext=(x, start_y),
                  arrowprops={"arrowstyle": "-|>", "color": EDGE_COLOUR, "linewidth": 1.2,
                              "shrinkA": 0, "shrinkB": 0, "mutation_scale": 12})
