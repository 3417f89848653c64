"""A full disk or an unwritable file while writing run files and figures: one sentence, no temporary left over.

Tests run as root here, where chmod does not stop writes, so the faults are injected by monkeypatching.
"""

import errno
import os
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from mnist_jax import plots, report
from mnist_jax.cli import main
from mnist_jax.errors import UserError
from mnist_jax.rundir import CONFIG, HISTORY, RunDir

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
EACCES = PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def half_then_disk_full(original):
    """A writer that writes the first half of what it is given, then fails as a full disk does."""
    def write(self, text, *args, **kwargs):
        original(self, text[: len(text) // 2], *args, **kwargs)
        raise ENOSPC

    return write


@pytest.fixture
def run_dir(tmp_path):
    run = RunDir.create(tmp_path / "run")
    yield run
    run.unlock()


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*.tmp"))


def test_write_json_on_a_full_disk_keeps_the_old_file(run_dir, monkeypatch):
    run_dir.write_json("metrics.json", {"old": 1})
    monkeypatch.setattr(Path, "write_text", half_then_disk_full(Path.write_text))
    with pytest.raises(UserError) as caught:
        run_dir.write_json("metrics.json", {"new": 2})
    assert str(caught.value) == f"Cannot write {run_dir.path / 'metrics.json'}: No space left on device."
    assert leftovers(run_dir.path) == [] and run_dir.read_json("metrics.json") == {"old": 1}


def test_write_json_that_cannot_be_renamed_leaves_no_temporary(run_dir, monkeypatch):
    def refuse(*args):
        raise EACCES

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(UserError, match=r"Cannot write .*config\.json: Permission denied\.$"):
        run_dir.write_json(CONFIG, {})
    assert leftovers(run_dir.path) == [] and not (run_dir.path / CONFIG).exists()


def test_truncate_history_on_a_full_disk_keeps_the_history(run_dir, monkeypatch):
    for epoch in (1, 2):
        run_dir.append_history({"epoch": epoch})
    monkeypatch.setattr(Path, "write_text", half_then_disk_full(Path.write_text))
    with pytest.raises(UserError, match=f"Cannot write {run_dir.path / HISTORY}: No space left on device."):
        run_dir.truncate_history(1)
    assert leftovers(run_dir.path) == [] and [r["epoch"] for r in run_dir.read_history()] == [1, 2]


def test_append_history_on_a_full_disk_is_one_sentence(run_dir, monkeypatch):
    def full(*args, **kwargs):
        raise ENOSPC

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match=f"^Cannot write {run_dir.path / HISTORY}: No space left on device.$"):
        run_dir.append_history({"epoch": 1})


def test_save_figure_on_a_full_disk_leaves_no_partial_png(tmp_path, monkeypatch):
    original = Figure.savefig

    def half_png(self, target, **kwargs):
        original(self, target, **kwargs)
        Path(target).write_bytes(Path(target).read_bytes()[:100])
        raise ENOSPC

    monkeypatch.setattr(Figure, "savefig", half_png)
    with pytest.raises(UserError) as caught:
        plots.save_figure(plots.plot_history([]), tmp_path / "curves.png")
    assert str(caught.value) == f"Cannot write {tmp_path / 'curves.png'}: No space left on device."
    assert list(tmp_path.iterdir()) == []


def test_cli_report_on_a_full_disk_is_one_sentence_naming_the_page(run_dir, monkeypatch, capsys):
    (run_dir.path / CONFIG).write_text("{}")
    figures = run_dir.path / report.FIGURES_DIR
    figures.mkdir()
    contents = report.RunFigures(run_dir, "best", 1, {"model": plots.save_figure(Figure(), figures / "model.png")},
                                 {}, "")
    monkeypatch.setattr(report, "write_figures", lambda *args, **kwargs: contents)  # no trained model needed
    monkeypatch.setattr(Path, "write_text", half_then_disk_full(Path.write_text))
    assert main(["report", str(run_dir.path)]) == 2
    captured = capsys.readouterr()
    page = run_dir.path / report.REPORT_HTML
    assert captured.out == ""
    assert captured.err == f"mnist-jax: error: Cannot write {page}: No space left on device.\n"
    assert leftovers(run_dir.path) == [] and not page.exists()
