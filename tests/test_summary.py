"""Model summary and diagram: traced rows, pinned parameter counts and FLOPs, boxes with shapes, the CLI."""

import json

import flax.linen as nn
import jax.numpy as jnp
import pytest
from PIL import Image

from mnist_jax import diagram, models, summary
from mnist_jax.cli import main

# Keras reports the same counts for the article's models.
PARAMETER_COUNTS = {"mlp": 101_770, "cnn": 693_962, "speedrun": 108_874, "bncnn": 198_442,
                    "stridecnn": 325_994 + 832}
# BatchNorm's running mean and variance.
NON_TRAINABLE = {"bncnn": 2 * (32 + 32 + 64 + 64 + 128), "stridecnn": 2 * (3 * 32 + 3 * 64 + 128)}
# Per image: 2 x output elements x kernel inputs per output.
CNN_FLOPS = {"Conv_0": 2 * 26 * 26 * 32 * 9, "Dense_0": 2 * 5408 * 128, "Dense_1": 2 * 128 * 10}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def modules(rows):
    return [row for row in rows if row.is_module]


@pytest.fixture(scope="module")
def cnn_rows():
    return summary.summarize(models.create_model("cnn"))


def test_pinned_counts_cover_every_registered_model():
    assert set(PARAMETER_COUNTS) == set(models.MODELS)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_rows_list_every_parameterised_layer_with_its_shapes_and_parameters(name):
    model = models.create_model(name)
    rows = summary.summarize(model)
    params = models.abstract_params(model)
    parameterised = {row.name: row for row in rows if row.params}
    assert set(parameterised) == set(params)
    for layer, row in parameterised.items():
        features = (params[layer].get("kernel") if "kernel" in params[layer] else params[layer]["scale"]).shape[-1]
        feature_axis = -1 if row.output_batch_axis == 0 else 0  # batch-last layers carry the features first
        assert row.output_shape[feature_axis] == features
        assert row.trainable_params == sum(leaf.size for leaf in params[layer].values())
        assert row.params == row.trainable_params + (2 * features if row.kind == "BatchNorm" else 0)
    totals = summary.summary_totals(rows)
    assert totals["total_params"] == PARAMETER_COUNTS[name]
    assert totals["non_trainable_params"] == NON_TRAINABLE.get(name, 0)
    assert rows[-1].output_shape == (summary.BATCH, models.NUM_CLASSES)
    for before, after in zip(rows, rows[1:]):
        assert after.input_shape == before.output_shape  # one chain, nothing skipped


def test_cnn_rows_in_order_with_the_operations_between_layers(cnn_rows):
    kinds = [row.kind for row in cnn_rows]
    assert kinds == ["Conv", "ReLU", "MaxPool", "Flatten", "Dense", "ReLU", "Dropout", "Dense"]
    shapes = [row.output_shape for row in cnn_rows]
    assert shapes == [(1, 26, 26, 32), (1, 26, 26, 32), (1, 13, 13, 32), (1, 5408), (1, 128), (1, 128), (1, 128),
                      (1, 10)]


def test_cnn_flops_match_the_analytic_count(cnn_rows):
    assert {row.name: row.flops for row in cnn_rows if row.flops} == CNN_FLOPS
    assert summary.summary_totals(cnn_rows)["flops_per_image"] == sum(CNN_FLOPS.values()) == 1_776_384


def test_xla_counts_at_least_the_multiply_adds():
    model = models.create_model("mlp", hidden=16)
    analytic = summary.summary_totals(summary.summarize(model))["flops_per_image"]
    assert analytic <= summary.xla_flops(model) < 1.1 * analytic


def test_hyperparameters_change_the_rows():
    deep = summary.summarize(models.create_model("mlp", depth=3))
    assert [row.name for row in deep if row.kind == "Dense"] == ["Dense_0", "Dense_1", "Dense_2", "Dense_3"]
    assert [row.kind for row in deep].count("ReLU") == 3
    narrow = summary.summarize(models.create_model("cnn", filters=8))
    assert narrow[0].output_shape == (1, 26, 26, 8)
    assert next(row for row in narrow if row.kind == "Flatten").output_shape == (1, 13 * 13 * 8)


def test_bfloat16_shows_the_cast_back_to_float32():
    rows = summary.summarize(models.create_model("mlp", dtype="bfloat16"))
    assert rows[-1].kind == "Cast"


def test_format_summary_is_a_keras_like_table(cnn_rows):
    text = summary.format_summary(cnn_rows, title="CNN", xla_flops=1.5e6)
    lines = text.splitlines()
    assert lines[0] == 'Model: "CNN"'
    assert lines[1].split() == ["Layer", "(type)", "Output", "shape", "Params", "FLOPs"]
    assert "Conv_0 (Conv)" in lines[3] and "(None, 26, 26, 32)" in lines[3] and lines[3].endswith("389,376")
    assert "Total params: 693,962 (2.65 MB as float32)" in lines
    assert "Trainable params: 693,962 (2.65 MB)" in lines
    assert any(line.endswith(": 1,776,384") for line in lines)
    assert lines[-1].endswith("1,500,000")


def test_format_shape_shows_the_batch_as_none():
    assert summary.format_shape((1, 26, 26, 32)) == "(None, 26, 26, 32)"
    assert summary.format_shape((1,)) == "(None,)"
    assert summary.format_shape((8, 1, 12, 12), batch_axis=1) == "(8, None, 12, 12)"
    assert summary.format_shape((8, 4), batch_axis=None) == "(8, 4)"


def test_batch_last_layers_show_their_batch_axis():
    rows = {row.name: row for row in summary.summarize(models.create_model("speedrun", filters=8))}
    assert rows["transpose_0"].input_batch_axis == 0 and rows["transpose_0"].output_batch_axis == 3
    assert rows["Conv_0"].input_batch_axis == 3 and rows["Conv_0"].output_batch_axis == 3
    assert rows["Conv_0"].output_shape == (8, 12, 12, summary.BATCH)
    assert rows["Conv_0"].flops == 2 * 8 * 12 * 12 * 25  # stride 2: a quarter of the 24x24 positions
    assert rows["max_pool_0"].kind == "MaxPool" and rows["max_pool_0"].output_shape == (16, 5, 5, summary.BATCH)
    assert rows["transpose_1"].input_batch_axis == 3 and rows["transpose_1"].output_batch_axis == 0
    assert rows["Dense_0"].input_batch_axis == 0


def box_texts(figure):
    texts = figure.axes[0].texts
    return [text.get_text() for text in texts if text.get_gid() == "layer-title"], \
        [text.get_text() for text in texts if text.get_gid() == "layer-shapes"]


@pytest.mark.parametrize("name, hparams", [("cnn", {}), ("mlp", {}), ("mlp", {"depth": 4})])
def test_diagram_has_one_box_per_layer_with_its_shapes(name, hparams):
    model = models.create_model(name, **hparams)
    rows = summary.summarize(model)
    figure = diagram.draw_model(model, rows)
    titles, shapes = box_texts(figure)
    assert titles == ["Input"] + [f"{row.name} ({row.kind})" for row in rows]
    assert len([patch for patch in figure.axes[0].patches if patch.get_gid() == "layer-box"]) == len(rows) + 1
    assert summary.format_shape(rows[0].input_shape) in shapes[0]
    for row, text in zip(rows, shapes[1:]):
        assert text == (f"input:  {summary.format_shape(row.input_shape, row.input_batch_axis)}\n"
                        f"output: {summary.format_shape(row.output_shape, row.output_batch_axis)}")


@pytest.mark.parametrize("name, hparams", [("cnn", {}), ("mlp", {"depth": 4})])
def test_diagram_text_fits_inside_its_box_and_the_figure(name, hparams):
    figure = diagram.draw_model(models.create_model(name, **hparams))
    renderer = figure.canvas.get_renderer()
    boxes = [patch.get_window_extent(renderer) for patch in figure.axes[0].patches if patch.get_gid() == "layer-box"]
    texts = [text for text in figure.axes[0].texts if text.get_gid()]
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert any(box.x0 < extent.x0 and extent.x1 < box.x1 and box.y0 < extent.y0 and extent.y1 < box.y1
                   for box in boxes), text.get_text()
    for box in boxes:
        assert figure.bbox.x0 <= box.x0 and box.x1 <= figure.bbox.x1
        assert figure.bbox.y0 <= box.y0 and box.y1 <= figure.bbox.y1


def test_diagram_saves_a_png_pillow_opens(tmp_path):
    path = diagram.save_diagram(diagram.draw_model(models.create_model("mlp")), tmp_path / "mlp.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"


@pytest.mark.parametrize("bad_name", ["model.notaformat", "model"])
def test_diagram_rejects_unknown_formats(tmp_path, bad_name):
    with pytest.raises(ValueError, match="--diagram must end in an image format"):
        diagram.save_diagram(diagram.draw_model(models.create_model("mlp")), tmp_path / bad_name)


def test_cli_prints_the_table(capsys):
    assert main(["summary", "--model", "mlp", "--depth", "2", "--hidden", "32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('Model: "MLP(hidden=32, depth=2')
    assert "Dense_2 (Dense)" in out and "Total params: 26,506 (0.10 MB as float32)" in out


def test_cli_json_and_diagram(capsys, tmp_path):
    path = tmp_path / "cnn.svg"
    assert main(["summary", "--model", "cnn", "--filters", "8", "--json", "--diagram", str(path)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layers"][0] == {"name": "Conv_0", "kind": "Conv", "input_shape": [1, 28, 28, 1],
                                   "output_shape": [1, 26, 26, 8], "params": 80, "trainable_params": 80,
                                   "flops": 2 * 26 * 26 * 8 * 9, "is_module": True,
                                   "input_batch_axis": 0, "output_batch_axis": 0}
    assert result["total_params"] == 80 + 13 * 13 * 8 * 128 + 128 + 1290
    assert result["xla_flops_per_image"] >= result["flops_per_image"]
    assert path.read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("bad_path", ["missing-folder/model.png", "model.nope"])
def test_cli_bad_diagram_path_is_one_sentence_and_exit_2(capsys, tmp_path, bad_path):
    assert main(["summary", "--model", "mlp", "--diagram", str(tmp_path / bad_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("mnist-jax: error: ") and captured.err.rstrip().endswith(".")


class _Block(nn.Module):
    """Two Dense layers in one submodule, to check nested layers roll up into one row."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.Dense(8)(x))


class _ChangedModel(nn.Module):
    """A model none of the code was written for: batch norm, a nested block, average pooling, tanh."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = jnp.tanh(x.reshape((x.shape[0], -1)))
        return _Block()(x)


def test_summary_follows_a_model_it_was_not_written_for():
    rows = summary.summarize(_ChangedModel())
    by_name = {row.name: row for row in rows}
    assert [row.kind for row in modules(rows)] == ["BatchNorm", "_Block"]
    assert by_name["BatchNorm_0"].params == 4 and by_name["BatchNorm_0"].trainable_params == 2  # scale, bias
    assert by_name["_Block_0"].params == 196 * 8 + 8 + 8 * 4 + 4
    assert by_name["_Block_0"].flops == 2 * (196 * 8 + 8 * 4)
    assert [row.kind for row in rows if not row.is_module] == ["SumPool", "div", "Flatten", "Tanh"]  # avg_pool = sum / n
    assert rows[0].kind == "SumPool" and rows[-1].name == "_Block_0"
    totals = summary.summary_totals(rows)
    assert (totals["total_params"], totals["trainable_params"]) == (196 * 8 + 8 + 36 + 4, 196 * 8 + 8 + 36 + 2)
