"""IDX reading: round trips, and one clear DataError for every kind of bad file."""

import gzip

import numpy as np
import pytest

from mnist_jax import idx
from mnist_jax.errors import DataError


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_images_round_trip_raw_and_gzip(tmp_path, name):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), np.uint8)
    idx.write_idx(tmp_path / name, images)
    np.testing.assert_array_equal(idx.read_images(tmp_path / name), images)


def test_labels_round_trip_as_int32(tmp_path):
    labels = np.array([0, 9, 3, 3], np.uint8)
    idx.write_idx(tmp_path / "labels.gz", labels)
    read = idx.read_labels(tmp_path / "labels.gz")
    assert read.dtype == np.int32
    np.testing.assert_array_equal(read, labels)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        idx.read_images(tmp_path / "nope.gz")


def test_wrong_magic_labels_read_as_images(tmp_path):
    idx.write_idx(tmp_path / "labels.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        idx.read_images(tmp_path / "labels.gz")


def test_truncated_images(tmp_path):
    idx.write_idx(tmp_path / "images", np.zeros((4, 28, 28), np.uint8))
    raw = (tmp_path / "images").read_bytes()
    (tmp_path / "images").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="truncated: its header promises 4 images of 28x28"):
        idx.read_images(tmp_path / "images")


def test_shorter_than_header(tmp_path):
    (tmp_path / "images").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="shorter than its header"):
        idx.read_images(tmp_path / "images")


def test_garbled_gzip(tmp_path):
    good = gzip.compress(b"\x00" * 1000)
    (tmp_path / "images.gz").write_bytes(good[:20] + b"garbage" * 10)
    with pytest.raises(DataError, match="damaged gzip"):
        idx.read_images(tmp_path / "images.gz")


def test_label_out_of_range(tmp_path):
    idx.write_idx(tmp_path / "labels", np.array([1, 2, 10], np.uint8))
    with pytest.raises(DataError, match="label 10"):
        idx.read_labels(tmp_path / "labels")
