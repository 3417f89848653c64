# %% [markdown]
# # The MNIST tutorial, step by step, in JAX
#
# This walkthrough follows the Keras "MNIST tutorial" article through the `mnist_jax` Python API: look at the data,
# train a dense network with two losses, train a CNN, plot its curves, save it, load it back, predict and judge it.
# It is a percent-cell script: open it as a notebook in Jupyter or VS Code, or run it headless:
#
#     python scripts/walkthrough.py --dataset digits --epochs 1   # offline, under a minute on a laptop
#     python scripts/walkthrough.py --epochs 5                      # the real MNIST
#
# Every figure is saved as a PNG in `--out` (and shown inline in a notebook).

# %%
import argparse
import shutil
import sys
from pathlib import Path

import matplotlib
import numpy as np

from mnist_jax import Predictor, TrainConfig, train_and_evaluate
from mnist_jax.data import load_datasets
from mnist_jax.diagram import draw_model
from mnist_jax.models import model_from_config
from mnist_jax.plots import plot_confusion_matrix, plot_history, plot_predictions, plot_samples, save_figure
from mnist_jax.predictor import random_test_images
from mnist_jax.summary import format_summary, summarize

IN_NOTEBOOK = "ipykernel" in sys.modules
if not IN_NOTEBOOK:
    matplotlib.use("Agg")  # headless: figures go to files only (nothing above has imported pyplot)

parser = argparse.ArgumentParser(description="The MNIST tutorial as a script.")
parser.add_argument("--dataset", default="mnist", help="mnist, or digits: scikit-learn's, offline and small")
parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (default $MNIST_JAX_DATA_DIR)")
parser.add_argument("--epochs", type=int, default=3, help="epochs of every training run")
parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
parser.add_argument("--out", default="walkthrough_out", help="folder for the figures and the saved run")
args, _ = parser.parse_known_args()  # "known": Jupyter passes arguments of its own

OUT = Path(args.out)
OUT.mkdir(parents=True, exist_ok=True)


def show(figure, name):
    """Save a figure as OUT/name.png, and show it when running as a notebook."""
    path = save_figure(figure, OUT / f"{name}.png")
    print(f"Saved {path}")
    if IN_NOTEBOOK:
        from IPython.display import Image, display
        display(Image(filename=str(path)))  # the PNG itself: works without pyplot's inline backend


# %% [markdown]
# ## 1. Load the data and look at it
#
# 28x28 grey images of handwritten digits with their labels. 20% of the training images are held out, stratified by
# class, for validation; the test set stays untouched until the very end.

# %%
datasets = load_datasets(args.dataset, data_dir=args.data_dir, val_split=0.2, seed=0)
print(f"{args.dataset}: {len(datasets.train)} train, {len(datasets.val)} validation, {len(datasets.test)} test images")
show(plot_samples(datasets.train.images, datasets.train.labels, count=20, class_names=datasets.class_names), "samples")

# %% [markdown]
# ## 2. A dense network with sparse categorical cross-entropy
#
# Flatten -> Dense(128) -> ReLU -> Dense(10). The "sparse" loss takes integer labels (0-9) as they are.

# %%
base = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, batch_size=args.batch_size)
dense_sparse = train_and_evaluate(base.replace(model="mlp", loss="sparse"), datasets=datasets)
print(f"Dense, sparse loss: validation accuracy {dense_sparse.history[-1]['val_accuracy']:.4f}")

# %% [markdown]
# ## 3. The same network with (one-hot) categorical cross-entropy
#
# The article's first version one-hot encodes the labels; the loss is the same number, so the results match closely.

# %%
dense_onehot = train_and_evaluate(base.replace(model="mlp", loss="categorical"), datasets=datasets)
print(f"Dense, categorical loss: validation accuracy {dense_onehot.history[-1]['val_accuracy']:.4f}")

# %% [markdown]
# ## 4. A convolutional network: its summary and diagram
#
# Conv(32, 3x3) -> ReLU -> MaxPool(2x2) -> Flatten -> Dense(128) -> ReLU -> Dense(10), summarized like Keras'
# `model.summary()` and drawn like `plot_model`.

# %%
cnn_config = base.replace(model="cnn")
cnn = model_from_config(cnn_config)
rows = summarize(cnn)
print(format_summary(rows, title="cnn"))
show(draw_model(cnn, rows), "cnn_diagram")

# %% [markdown]
# ## 5. Train the CNN, validating on the held-out 20% after every epoch
#
# Pass a run directory and the run is recorded there: configuration, per-epoch history, test metrics and an Orbax
# checkpoint per epoch. The test set is evaluated once, after the last epoch.

# %%
run_path = OUT / "cnn_run"
shutil.rmtree(run_path, ignore_errors=True)  # start afresh each time the walkthrough runs
result = train_and_evaluate(cnn_config, run_path, datasets=datasets, progress=IN_NOTEBOOK)
for record in result.history:
    print(f"Epoch {record['epoch']}: loss {record['train_loss']:.4f}, val_loss {record['val_loss']:.4f}, "
          f"val_accuracy {record['val_accuracy']:.4f}")

# %% [markdown]
# ## 6. Training and validation curves
#
# Validation loss rising while training loss keeps falling would mean overfitting.

# %%
show(plot_history(result.history), "cnn_curves")

# %% [markdown]
# ## 7. The saved model
#
# `model.save(...)` in Keras; here every epoch's parameters are already on disk as Orbax checkpoints.

# %%
print(f"Run directory: {run_path}")
for path in sorted(run_path.iterdir()):
    print(f"  {path.name}{'/' if path.is_dir() else ''}")

# %% [markdown]
# ## 8. Load the model back and predict 10 random test images
#
# `Predictor.load` restores a checkpoint ("latest": the model as training left it, as in the article; "best": the
# epoch with the highest validation accuracy). Its input is raw 0-255 pixels, like the dataset's files.

# %%
predictor = Predictor.load(run_path, which="latest")
_, sample = random_test_images(run_path, predictor.meta, count=10, seed=0, data_dir=args.data_dir)
probabilities = predictor.predict_proba(sample.images)
predictions = probabilities.argmax(axis=1)
print(f"10 random test images: predicted {predictions.tolist()}, true {sample.labels.tolist()}")
show(plot_predictions(sample.images, sample.labels, predictions, probabilities, count=10,
                      class_names=predictor.class_names, seed=None), "predictions")

# %% [markdown]
# ## 9. The confusion matrix, and the final test accuracy
#
# Which digits does the model confuse? Rows are the true digit, columns the prediction.

# %%
test_predictions = predictor.predict(datasets.test.images)
show(plot_confusion_matrix(datasets.test.labels, test_predictions, datasets.class_names), "confusion_matrix")
accuracy = float(np.mean(test_predictions == datasets.test.labels))
print(f"CNN test accuracy: {accuracy:.4f} on {len(datasets.test)} images "
      f"(train_and_evaluate reported {result.metrics['test_accuracy']:.4f})")
