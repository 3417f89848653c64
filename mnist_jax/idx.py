"""Read and validate IDX files, the format MNIST ships in (gzip-compressed or raw).

Memory stays bounded by what the header announces: the header is read and checked first, through a streaming
gzip reader, and exactly the announced number of bytes is decompressed after it, never more.
"""

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_jax.errors import DataError

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
HEADER_INT = np.dtype(">u4")  # IDX header integers are big-endian unsigned 32-bit
NUM_CLASSES = 10
GZIP_MAGIC = b"\x1f\x8b"
MAX_DATA_BYTES = 1 << 30  # 1 GiB of pixels (1.3 million 28x28 images; MNIST's largest file holds 47 MB)
CHUNK_BYTES = 1 << 24  # read 16 MiB at a time, so a short file fails before memory for all of it is touched


def read_images(path: Path, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an IDX image file into a uint8 array of shape (N, rows, cols); refuse other image sizes when given."""
    with _Reader(Path(path)) as f:
        count, rows, cols = _read_header(f, path, IMAGE_MAGIC, dims=3)
        if image_shape is not None and (rows, cols) != tuple(image_shape):
            raise DataError(f"{path} holds {rows}x{cols} images, expected {image_shape[0]}x{image_shape[1]}.")
        pixels = _read_data(f, path, (count, rows, cols), f"{count} images of {rows}x{cols}")
    return pixels.reshape(count, rows, cols)


def read_labels(path: Path) -> np.ndarray:
    """Read an IDX label file into an int32 array of shape (N,), checking the label range."""
    with _Reader(Path(path)) as f:
        (count,) = _read_header(f, path, LABEL_MAGIC, dims=1)
        labels = _read_data(f, path, (count,), f"{count} labels")
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


class _Reader:
    """A raw or gzip stream over an IDX file whose every read failure becomes a DataError naming the file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.file = open(path, "rb")
            self.gzipped = self.file.peek(len(GZIP_MAGIC))[:len(GZIP_MAGIC)] == GZIP_MAGIC
        except FileNotFoundError:
            raise DataError(f"MNIST file {path} does not exist.") from None
        except OSError as error:
            raise DataError(f"Cannot read MNIST file {path}: {error.strerror}.") from None
        self.stream: BinaryIO = gzip.GzipFile(fileobj=self.file, mode="rb") if self.gzipped else self.file

    def read(self, size: int) -> bytes:
        try:
            return self.stream.read(size)
        except (OSError, EOFError, zlib.error) as error:  # gzip's BadGzipFile is an OSError
            if self.gzipped:
                raise DataError(f"MNIST file {self.path} is a damaged gzip file ({error}).") from None
            raise DataError(f"Cannot read MNIST file {self.path}: {error.strerror or error}.") from None

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def _read_header(f: _Reader, path: Path, magic: int, dims: int) -> tuple[int, ...]:
    """Check the magic number and return the dimension sizes, reading nothing past the header."""
    header = f.read(4 * (1 + dims))
    if len(header) >= 4:
        found = int(np.frombuffer(header, HEADER_INT, count=1)[0])
        if found != magic:
            raise DataError(f"MNIST file {path} has magic number {found}, expected {magic}; "
                            f"it is not the right IDX file.")
    if len(header) < 4 * (1 + dims):
        raise DataError(f"MNIST file {path} is truncated: {len(header)} bytes is shorter than its header.")
    return tuple(np.frombuffer(header, HEADER_INT, count=dims, offset=4).tolist())


def _read_data(f: _Reader, path: Path, dims: tuple[int, ...], what: str) -> np.ndarray:
    """Read exactly the bytes `dims` announce, refusing a size over the limit, a short file or trailing data."""
    # Zero images of 3e9x3e9 pixels is no data, but no array can take that shape either: zeros count as ones here.
    if math.prod(max(size, 1) for size in dims) > MAX_DATA_BYTES:
        raise DataError(f"MNIST file {path} announces {what}, more than the {MAX_DATA_BYTES:,}-byte limit; "
                        f"it is not an MNIST file.")
    size = math.prod(dims)
    data = np.empty(size, np.uint8)
    view, filled = memoryview(data), 0
    while filled < size:
        chunk = f.read(min(CHUNK_BYTES, size - filled))
        if not chunk:
            raise DataError(f"MNIST file {path} is truncated: its header promises {what} but it holds "
                            f"{filled} bytes of data.")
        view[filled:filled + len(chunk)] = chunk
        filled += len(chunk)
    if f.read(1):
        raise DataError(f"MNIST file {path} is too long: it holds more data than its header promises ({what}).")
    return data
