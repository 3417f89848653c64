"""scripts/walkthrough.py, the article as a percent-cell script, runs headless end to end on the digits."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "walkthrough.py"
FIGURES = ("samples", "cnn_diagram", "cnn_curves", "predictions", "confusion_matrix")
MIN_ACCURACY = 0.5  # chance is 0.1; one epoch on the digits reaches about 0.83


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory):
    out = tmp_path_factory.mktemp("walkthrough")
    done = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "digits", "--epochs", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


def test_the_script_is_a_percent_cell_notebook():
    lines = SCRIPT.read_text().splitlines()
    assert sum(line.startswith("# %% [markdown]") for line in lines) >= 10
    assert sum(line.rstrip() == "# %%" for line in lines) >= 10


def test_every_figure_is_a_valid_png(walkthrough):
    out, _ = walkthrough
    for name in FIGURES:
        path = out / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 0, name
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 50, name
            image.verify()


def test_the_cnn_run_is_saved_with_checkpoints(walkthrough):
    out, stdout = walkthrough
    run = out / "cnn_run"
    assert (run / "config.json").is_file() and (run / "metrics.json").is_file()
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()] == ["1"]
    assert f"Run directory: {run}" in stdout


def test_the_printed_results(walkthrough):
    _, stdout = walkthrough
    assert re.search(r"Dense, sparse loss: validation accuracy 0\.\d{4}", stdout)
    assert re.search(r"Dense, categorical loss: validation accuracy 0\.\d{4}", stdout)
    assert 'Model: "cnn"' in stdout and "Total params:" in stdout
    assert re.search(r"10 random test images: predicted \[(\d, ){9}\d\]", stdout)
    accuracy = float(re.search(r"CNN test accuracy: ([\d.]+)", stdout)[1])
    assert accuracy > MIN_ACCURACY, stdout
