"""IDX reading: round trips, and one clear DataError for every kind of bad file."""

import gzip
import tracemalloc

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


def _header(magic: int, *dims: int) -> bytes:
    return np.array([magic, *dims], idx.HEADER_INT).tobytes()


def _peak_bytes(read, path) -> tuple[int, Exception | None]:
    """Peak traced memory of one read, and the error it raised."""
    tracemalloc.start()
    try:
        read(path)
        error = None
    except DataError as caught:
        error = caught
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, error


def test_gzip_bomb_with_wrong_magic_is_refused_before_decompressing(tmp_path):
    bomb = tmp_path / "images.gz"
    bomb.write_bytes(gzip.compress(b"\x00" * (64 << 20), compresslevel=1))  # 64 MiB of zeros, 64 KiB on disk
    peak, error = _peak_bytes(idx.read_images, bomb)
    assert "magic number 0, expected 2051" in str(error)
    assert peak < (4 << 20)


def test_trailing_data_stops_at_the_announced_size(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(_header(idx.LABEL_MAGIC, 3) + b"\x01" * (64 << 20), compresslevel=1))
    peak, error = _peak_bytes(idx.read_labels, path)
    assert str(error) == f"MNIST file {path} is too long: it holds more data than its header promises (3 labels)."
    assert peak < (4 << 20)


def test_announced_size_over_the_limit_is_refused_without_reading(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(_header(idx.IMAGE_MAGIC, 2_000_000, 28, 28))  # 1.6 GB promised, nothing there
    peak, error = _peak_bytes(idx.read_images, path)
    assert str(error) == (f"MNIST file {path} announces 2000000 images of 28x28, more than the 1,073,741,824-byte "
                          f"limit; it is not an MNIST file.")
    assert peak < (1 << 20)


def test_zero_images_of_an_impossible_size_are_refused(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(_header(idx.IMAGE_MAGIC, 0, 2**31, 2**31))  # found by tests/test_fuzz.py
    with pytest.raises(DataError, match="0 images of 2147483648x2147483648, more than"):
        idx.read_images(path)


def test_other_image_size_is_refused_from_the_header(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(_header(idx.IMAGE_MAGIC, 10, 32, 32))  # no pixels: only the header is read
    with pytest.raises(DataError, match=r"holds 32x32 images, expected 28x28\.$"):
        idx.read_images(path, image_shape=(28, 28))


def test_raw_file_with_trailing_bytes_is_too_long(tmp_path):
    idx.write_idx(tmp_path / "labels", np.array([1, 2], np.uint8))
    with open(tmp_path / "labels", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(DataError, match=r"too long: .*\(2 labels\)\.$"):
        idx.read_labels(tmp_path / "labels")


def test_truncated_gzip_stream(tmp_path):
    idx.write_idx(tmp_path / "images.gz", np.random.default_rng(0).integers(0, 256, (4, 28, 28), np.uint8))
    raw = (tmp_path / "images.gz").read_bytes()
    (tmp_path / "images.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="damaged gzip file"):
        idx.read_images(tmp_path / "images.gz")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(DataError, match=r"Cannot read MNIST file .*: Is a directory\.$"):
        idx.read_images(tmp_path)


def test_images_are_writable(tmp_path):
    idx.write_idx(tmp_path / "images.gz", np.ones((2, 28, 28), np.uint8))
    idx.read_images(tmp_path / "images.gz")[0, 0, 0] = 5  # a fresh array, not a view of an immutable buffer
