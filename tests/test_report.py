"""Tests for mnist_jax.report and `mnist-jax report`: figures, classification JSON, a self-contained HTML page."""

import base64
import html
import json
import re
import shutil

import jax
import numpy as np
import pytest
from sklearn.metrics import classification_report

from mnist_jax import report
from mnist_jax.checkpoints import restore_variables
from mnist_jax.cli import main
from mnist_jax.config import TrainConfig
from mnist_jax.data import load_datasets, load_train_test
from mnist_jax.errors import CheckpointError, UserError
from mnist_jax.models import create_model
from mnist_jax.rundir import CONFIG, HISTORY, METRICS, RunDir
from mnist_jax.summary import format_summary, summarize
from mnist_jax.steps import predict_logits
from mnist_jax.train import train_and_evaluate
from tests.test_plots import assert_valid_png
from tests.tolerances import CROSS_ENTROPY, MLP_LOGITS, assert_close

DATA_URI = '<img src="data:image/png;base64,'
FIGURES = {"curves", "samples", "confusion_matrix", "confusion_matrix_normalized", "predictions", "mistakes"}
CONFIG_VALUES = TrainConfig(dataset="digits", model="mlp", epochs=2, batch_size=32, hidden=48)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> RunDir:
    """A tiny MLP trained for 2 epochs on digits, with its run directory."""
    return train_and_evaluate(CONFIG_VALUES, RunDir.create(tmp_path_factory.mktemp("runs") / "run")).run_dir


@pytest.fixture(scope="module")
def page(run_dir) -> str:
    return report.write_report(run_dir.path).read_text(encoding="utf-8")


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_writes_every_figure_and_embeds_each(run_dir, page):
    written = {path.stem for path in (run_dir.path / report.FIGURES_DIR).glob("*.png")}
    assert written == FIGURES | {"model"}
    assert page.count(DATA_URI) == len(written)
    pngs = embedded_pngs(page)
    assert len(pngs) == len(written)
    for data in pngs:
        assert_valid_png(data)
    assert sorted(pngs) == sorted(path.read_bytes() for path in (run_dir.path / report.FIGURES_DIR).glob("*.png"))


def test_report_shows_test_accuracy_and_configuration(run_dir, page):
    metrics = run_dir.read_json(METRICS)
    assert f'<td>test_accuracy</td><td class="number">{metrics["test_accuracy"]:.4f}</td>' in page
    for key, value in (("model", "mlp"), ("dataset", "digits")):
        assert f"<td>{key}</td><td>{value}</td>" in page
    for key, value in (("batch_size", 32), ("hidden", 48), ("epochs", 2)):
        assert f'<td>{key}</td><td class="number">{value}</td>' in page


def test_report_has_one_history_row_per_epoch(run_dir, page):
    section = page.split('<section id="training">')[1].split("</section>")[0]
    header = re.findall(r"<th>([^<]*)</th>", section)
    assert header == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"]
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in section.split("</tr>")[1:-1]]
    assert rows == [[f"{record[key]:.4f}" if key != "epoch" else str(record[key]) for key in header]
                    for record in run_dir.read_history()]


def test_report_is_self_contained(page):
    lowered = page.lower()
    for reference in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert reference not in lowered
    assert re.findall(r'src="([^"]{0,22})', page) == ["data:image/png;base64,"] * page.count("src=")


def test_classification_json_equals_scikit_learn_on_the_best_checkpoint(run_dir, page):
    epoch, _, variables, meta = restore_variables(run_dir.path, "best")
    _, test = load_train_test("digits", "idx", None)
    logits = predict_logits(create_model(meta["model"], **meta["hparams"]).apply, variables,
                            jax.device_put(test.images), CONFIG_VALUES.eval_batch_size)
    expected = classification_report(test.labels, np.asarray(logits).argmax(-1), output_dict=True)
    assert json.loads((run_dir.path / report.CLASSIFICATION_REPORT).read_text()) == expected
    assert f"best checkpoint (epoch {epoch})" in page


def test_report_shows_the_model_summary_and_diagram(run_dir, page):
    summary = format_summary(summarize(create_model("mlp", hidden=CONFIG_VALUES.hidden)))
    assert f"<pre>{html.escape(summary)}</pre>" in page
    assert (run_dir.path / report.FIGURES_DIR / "model.png").read_bytes() in embedded_pngs(page)


def test_one_epoch_run_without_validation_and_odd_name(run_dir, tmp_path):
    """A 1-epoch history without val_* keys; a directory name that needs HTML escaping."""
    copy = tmp_path / "run <b>&"
    shutil.copytree(run_dir.path, copy)
    first = json.loads((copy / HISTORY).read_text().splitlines()[0])
    (copy / HISTORY).write_text(json.dumps({k: v for k, v in first.items() if not k.startswith("val_")}) + "\n")
    page = report.write_report(copy, which="latest").read_text()
    assert "run &lt;b&gt;&amp;" in page and "<b>" not in page
    assert "<th>val_accuracy</th>" not in page
    assert_valid_png((copy / report.FIGURES_DIR / "curves.png").read_bytes())


def test_a_report_drawn_again_redraws_only_the_figures_whose_inputs_changed(run_dir, page, tmp_path, monkeypatch):
    """Each PNG keeps a fingerprint of what it was drawn from: the same report again draws nothing, a shorter
    history redraws the curves alone, and a PNG without a fingerprint (an older one, someone's own) is redrawn."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir.path, copy)  # with the figures the page fixture drew
    drawn = []
    save_figure = report.plots.save_figure
    monkeypatch.setattr(report.plots, "save_figure", lambda fig, path, *rest: drawn.append(path.stem) or save_figure(
        fig, path, *rest))

    def redrawn() -> set[str]:
        drawn.clear()
        again = report.write_report(copy).read_text(encoding="utf-8")
        assert len(embedded_pngs(again)) == len(embedded_pngs(page))  # every figure is on the page either way
        return set(drawn)

    assert redrawn() == set()
    first_epoch = (copy / HISTORY).read_text().splitlines()[0]
    (copy / HISTORY).write_text(first_epoch + "\n")
    assert redrawn() == {"curves"}
    save_figure(report.plots.plot_history([]), copy / report.FIGURES_DIR / "samples.png")  # no fingerprint
    (copy / report.FIGURES_DIR / "mistakes.png").write_bytes(b"not a PNG")
    assert redrawn() == {"samples", "mistakes"}
    assert_valid_png((copy / report.FIGURES_DIR / "mistakes.png").read_bytes())


def test_missing_run_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        report.write_report(tmp_path / "nowhere")


def test_run_dir_without_checkpoints_is_a_checkpoint_error(run_dir, tmp_path):
    (tmp_path / CONFIG).write_text((run_dir.path / CONFIG).read_text())
    with pytest.raises(CheckpointError):
        report.write_report(tmp_path)


def test_cli_report_prints_the_html_path(run_dir, capsys):
    html_path = run_dir.path / report.REPORT_HTML
    html_path.unlink()
    assert main(["report", str(run_dir.path), "--which", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(html_path)
    assert "best" not in html_path.read_text().split("</h1>")[1][:300]  # the subtitle names checkpoint 1


def test_cli_report_on_a_missing_run_dir_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("mnist-jax: error: ")


def test_cli_rejects_a_nonsense_checkpoint_choice(run_dir, capsys):
    assert main(["report", str(run_dir.path), "--which", "newest"]) == 2
    assert capsys.readouterr().err.strip() == (
        "mnist-jax: error: Checkpoint choice 'newest' is not best, latest or an epoch number.")


def test_a_report_from_training_shows_what_the_latest_checkpoint_predicts(tmp_path):
    """In memory, after training: the final state's test predictions, the same as restoring the latest checkpoint."""
    config = CONFIG_VALUES.replace(val_split=0.2)
    datasets = load_datasets(config.dataset, config.source, None, config.val_split, config.seed)
    result = train_and_evaluate(config, RunDir.create(tmp_path / "run"), datasets=datasets)
    in_memory = report.ReportInputs.from_training(result, config, datasets)
    restored = report.ReportInputs.from_checkpoint(result.run_dir.path, "latest")
    assert (in_memory.which, in_memory.epoch) == ("latest", restored.epoch) == ("latest", 2)
    assert_close(in_memory.predicted.probabilities, restored.predicted.probabilities, MLP_LOGITS + CROSS_ENTROPY)
    np.testing.assert_array_equal(in_memory.predicted.labels, restored.predicted.labels)
    accuracy = (in_memory.predicted.predictions == in_memory.predicted.labels).mean()
    assert accuracy == pytest.approx(result.metrics["test_accuracy"], abs=1e-6)  # the very predictions scored
    assert set(result.timings) == {"setup", "train", "test"} and all(v >= 0 for v in result.timings.values())


def test_train_reports_from_memory_and_prints_its_wall_time_split(tmp_path, monkeypatch, capsys):
    """`mnist-jax -v train` restores no checkpoint and predicts nothing again for its report."""
    def refuse(*args, **kwargs):
        raise AssertionError("the report after training restored or predicted again")

    monkeypatch.setattr(report, "restore_variables", refuse)
    monkeypatch.setattr(report, "predict_test_set", refuse)
    run = tmp_path / "run"
    assert main(["-v", "train", "--dataset", "digits", "--model", "mlp", "--hidden", "32", "--epochs", "2",
                 "--batch-size", "32", "--run-dir", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / METRICS).read_text())
    classification = json.loads((run / report.CLASSIFICATION_REPORT).read_text())
    assert classification["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert "latest checkpoint (epoch 2)" in (run / report.REPORT_HTML).read_text()
    (split,) = [line for line in out.splitlines() if line.startswith("Wall time ")]
    phases = re.findall(r"(\w+) (\d+\.\d) s", split)
    assert [name for name, _ in phases] == ["time", "start", "load", "setup", "train", "test", "report", "other", "in"]
    assert "programs compiled in" in split
