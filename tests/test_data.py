"""Dataset loading: MNIST folders, digits, TFDS, and the stratified validation split."""

import numpy as np
import pytest

from mnist_jax import data
from mnist_jax.errors import DataError
from tests.conftest import write_mnist_dir


def test_load_mnist_dir_gzip(tiny_mnist_dir):
    train, test = data.load_mnist_dir(tiny_mnist_dir)
    assert train.images.shape == (40, 28, 28) and train.images.dtype == np.uint8
    assert test.labels.tolist() == list(range(10))


def test_load_mnist_dir_raw_files(tmp_path):
    split = data.Split(np.zeros((10, 28, 28), np.uint8), np.arange(10, dtype=np.int32))
    folder = write_mnist_dir(tmp_path / "raw", split, split, gzip=False)
    train, _ = data.load_mnist_dir(folder)
    assert len(train) == 10


def test_missing_directory_names_the_options(tmp_path):
    with pytest.raises(DataError, match="--data-dir or set MNIST_JAX_DATA_DIR"):
        data.load_mnist_dir(tmp_path / "absent")


def test_data_dir_that_is_a_file_says_so(tmp_path):
    (tmp_path / "mnist").write_text("not a folder")
    with pytest.raises(DataError, match=r"mnist is a file, not a folder; pass --data-dir"):
        data.load_mnist_dir(tmp_path / "mnist")


def test_missing_file(tiny_mnist_dir):
    (tiny_mnist_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="has no t10k-labels-idx1-ubyte.gz"):
        data.load_mnist_dir(tiny_mnist_dir)


def test_image_label_count_mismatch(tmp_path):
    images = data.Split(np.zeros((10, 28, 28), np.uint8), np.arange(10, dtype=np.int32))
    labels_short = data.Split(images.images, np.arange(9, dtype=np.int32))
    folder = write_mnist_dir(tmp_path / "m", labels_short, images)
    with pytest.raises(DataError, match="holds 10 images but .* holds 9 labels"):
        data.load_mnist_dir(folder)


def test_wrong_image_size(tmp_path):
    split = data.Split(np.zeros((10, 32, 32), np.uint8), np.arange(10, dtype=np.int32))
    folder = write_mnist_dir(tmp_path / "m", split, split)
    with pytest.raises(DataError, match="32x32 images, expected 28x28"):
        data.load_mnist_dir(folder)


def test_data_dir_from_environment(monkeypatch, tiny_mnist_dir):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tiny_mnist_dir))
    datasets = data.load_datasets("mnist", val_split=0.2)
    # 4 images a class: 20% rounds to one image of each class held out.
    assert (len(datasets.train), len(datasets.val), len(datasets.test)) == (30, 10, 10)


def test_validation_split_is_stratified_seeded_and_disjoint():
    labels = np.repeat(np.arange(10), 50).astype(np.int32)
    images = np.zeros((500, 28, 28), np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.divmod(np.arange(500), 256)  # each image carries its index
    split = data.Split(images, labels)
    index = lambda s: (s.images[:, 0, 0].astype(int) * 256 + s.images[:, 0, 1]).tolist()
    train, val = data.split_validation(split, 0.2, seed=1)
    assert np.bincount(val.labels).tolist() == [10] * 10
    assert len(train) + len(val) == 500
    train_again, val_again = data.split_validation(split, 0.2, seed=1)
    np.testing.assert_array_equal(val.images, val_again.images)
    _, val_other = data.split_validation(split, 0.2, seed=2)
    assert not np.array_equal(val.images, val_other.images)
    assert sorted(index(train) + index(val)) == list(range(500))  # disjoint, and nothing lost


def test_no_validation_split():
    split = data.Split(np.zeros((20, 28, 28), np.uint8), np.arange(20, dtype=np.int32) % 10)
    train, val = data.split_validation(split, 0.0, seed=0)
    assert val is None and len(train) == 20


def test_digits_dataset_is_mnist_shaped():
    datasets = data.load_datasets("digits", val_split=0.2)
    total = len(datasets.train) + len(datasets.val) + len(datasets.test)
    assert total == 1797
    assert datasets.train.images.shape[1:] == (28, 28) and datasets.train.images.dtype == np.uint8
    # The digit sits in the central 20x20 box, like MNIST; the 4-pixel border is empty.
    assert datasets.train.images[:, :4].max() == 0 and datasets.train.images[:, -4:].max() == 0
    assert datasets.train.images.max() == 255


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=30):
        train, test = data.load_train_test("mnist", "tfds", None)
    assert train.images.shape == (30, 28, 28) and train.images.dtype == np.uint8
    assert len(test) == 30 and test.labels.dtype == np.int32
    assert 0 <= train.labels.min() and train.labels.max() <= 9


def test_tfds_unknown_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="Cannot open TFDS dataset"):
        data.load_train_test("no_such_dataset_xyz", "tfds", str(tmp_path))


def test_tfds_never_downloads_an_unprepared_dataset(tmp_path):
    with pytest.raises(DataError, match="Cannot open TFDS dataset 'mnist'"):
        data.load_train_test("mnist", "tfds", str(tmp_path))  # nothing prepared here, and no network is tried


def test_tfds_class_names_come_from_the_dataset():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        datasets = data.load_datasets("fashion_mnist", source="tfds", val_split=0.0)
    assert datasets.class_names[0] == "T-shirt/top" and len(datasets.class_names) == 10
    assert data.load_datasets("digits").class_names == tuple("0123456789")


@pytest.mark.parametrize("empty", ["train", "test"])
def test_an_empty_split_is_one_sentence(tmp_path, empty):
    rng = np.random.default_rng(0)
    full = data.Split(rng.integers(0, 256, (20, 28, 28), np.uint8), np.arange(20, dtype=np.int32) % 10)
    none = data.Split(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int32))
    folder = write_mnist_dir(tmp_path / "mnist", none if empty == "train" else full, none if empty == "test" else full)
    name = "training" if empty == "train" else "test"
    with pytest.raises(DataError, match=f"The mnist {name} split has no images"):
        data.load_train_test("mnist", "idx", str(folder))
