"""Read and validate IDX files, the format MNIST ships in (gzip-compressed or raw)."""

import gzip
import zlib
from pathlib import Path

import numpy as np

from mnist_jax.errors import DataError

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
HEADER_INT = np.dtype(">u4")  # IDX header integers are big-endian unsigned 32-bit
NUM_CLASSES = 10


def read_images(path: Path) -> np.ndarray:
    """Read an IDX image file into a uint8 array of shape (N, rows, cols)."""
    data = _read_bytes(path)
    count, rows, cols = _parse_header(path, data, IMAGE_MAGIC, dims=3)
    pixels = np.frombuffer(data, np.uint8, offset=16)
    _check_size(path, pixels.size, count * rows * cols, f"{count} images of {rows}x{cols}")
    return pixels.reshape(count, rows, cols)


def read_labels(path: Path) -> np.ndarray:
    """Read an IDX label file into an int32 array of shape (N,), checking the label range."""
    data = _read_bytes(path)
    (count,) = _parse_header(path, data, LABEL_MAGIC, dims=1)
    labels = np.frombuffer(data, np.uint8, offset=8)
    _check_size(path, labels.size, count, f"{count} labels")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(f"{path} holds label {labels.max()}, but MNIST labels are 0-{NUM_CLASSES - 1}.")
    return labels.astype(np.int32)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzip-compressed if the name ends in .gz); for tests and tools."""
    array = np.ascontiguousarray(array, np.uint8)
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    header = np.array([magic, *array.shape], HEADER_INT).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _read_bytes(path: Path) -> bytes:
    """Read a file, decompressing gzip transparently; turn every I/O failure into a DataError."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"MNIST file {path} does not exist.") from None
    except OSError as error:
        raise DataError(f"Cannot read MNIST file {path}: {error.strerror}.") from None
    if raw[:2] != b"\x1f\x8b":  # not gzip: a raw IDX file
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"MNIST file {path} is a damaged gzip file ({error}).") from None


def _parse_header(path: Path, data: bytes, magic: int, dims: int) -> tuple[int, ...]:
    """Check the magic number and return the dimension sizes."""
    header_size = 4 * (1 + dims)
    found = int(np.frombuffer(data, HEADER_INT, count=1)[0]) if len(data) >= 4 else None
    if found is not None and found != magic:
        raise DataError(f"MNIST file {path} has magic number {found}, expected {magic}; it is not the right IDX file.")
    if len(data) < header_size:
        raise DataError(f"MNIST file {path} is truncated: {len(data)} bytes is shorter than its header.")
    return tuple(np.frombuffer(data, HEADER_INT, count=dims, offset=4).tolist())


def _check_size(path: Path, found: int, expected: int, what: str) -> None:
    if found != expected:
        state = "truncated" if found < expected else "too long"
        raise DataError(f"MNIST file {path} is {state}: its header promises {what} but it holds {found} bytes of data.")
