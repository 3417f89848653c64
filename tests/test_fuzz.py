"""Property-based tests: arbitrary bytes, shapes, dtypes and values give a correct result or one UserError sentence.

Every case must end in a correct array or a UserError whose message is one sentence; any other exception, or a
hang, is a bug. Examples are kept small and few so the whole file runs in seconds.
"""

import gzip
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from mnist_jax import idx
from mnist_jax.errors import DataError, InputError, UserError
from mnist_jax.images import load_mnist_image
from mnist_jax.predictor import as_pixels
from tests.test_images import png_header_only

EXAMPLES = int(os.environ.get("MNIST_JAX_FUZZ_EXAMPLES", "150"))  # raise it for a longer hunt
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCRATCH = Path(tempfile.mkdtemp(prefix="mnist-jax-fuzz-"))  # hypothesis reruns examples: no per-test tmp_path


def assert_one_sentence(error: UserError) -> None:
    message = str(error)
    assert message.endswith(".") and "\n" not in message and ". " not in message, message


def scratch_file(name: str, data: bytes) -> Path:
    path = SCRATCH / name
    path.write_bytes(data)
    return path


# IDX files: random bytes, random bytes after a gzip magic, and well-formed headers with random dims and payloads.

def idx_bytes(magic: int, dims: list[int], payload: bytes) -> bytes:
    return np.array([magic, *dims], idx.HEADER_INT).tobytes() + payload


small_dims = st.lists(st.integers(0, 6), min_size=1, max_size=3)


@st.composite
def nearly_valid_idx(draw) -> bytes:
    """A right-looking header and a payload of exactly, or nearly, the announced size."""
    magic, dims = draw(st.sampled_from([(idx.IMAGE_MAGIC, 3), (idx.LABEL_MAGIC, 1)]))
    shape = draw(st.lists(st.integers(0, 6), min_size=dims, max_size=dims))
    size = max(0, int(np.prod(shape)) + draw(st.sampled_from([0, 0, 0, -1, 1])))
    labels = st.integers(0, 11) if dims == 1 else st.integers(0, 255)  # labels over 9 are refused
    return idx_bytes(magic, shape, bytes(draw(st.lists(labels, min_size=size, max_size=size))))


any_dims = st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=4)
idx_files = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda data: b"\x1f\x8b" + data),
    st.builds(idx_bytes, st.sampled_from([idx.IMAGE_MAGIC, idx.LABEL_MAGIC]), small_dims, st.binary(max_size=300)),
    st.builds(idx_bytes, st.sampled_from([idx.IMAGE_MAGIC, idx.LABEL_MAGIC, 0]), any_dims, st.binary(max_size=50)),
    nearly_valid_idx(),
)


@FUZZ
@given(data=idx_files, compress=st.booleans())
def test_idx_reader_returns_the_announced_array_or_a_data_error(data, compress):
    raw = gzip.compress(data, compresslevel=1) if compress else data
    path = scratch_file("fuzz.idx", raw)
    for read, magic, dims in ((idx.read_images, idx.IMAGE_MAGIC, 3), (idx.read_labels, idx.LABEL_MAGIC, 1)):
        try:
            array = read(path)
        except DataError as error:
            assert_one_sentence(error)
            event("refused")
            continue
        event("accepted")
        # Accepted: the right magic, the header's shape, and exactly the bytes after the header.
        header = 4 * (1 + dims)
        assert int.from_bytes(data[:4], "big") == magic
        assert array.shape == tuple(int.from_bytes(data[4 * i:4 * i + 4], "big") for i in range(1, dims + 1))
        assert array.astype(np.uint8).tobytes() == data[header:]
        assert dims == 3 or array.size == 0 or array.max() < idx.NUM_CLASSES


# Image files: random bytes, random bytes after a PNG or JPEG signature, real images of random size, mode and
# content (some then cut or with one byte changed), and PNG headers announcing any size.

MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"]


@st.composite
def encoded_images(draw) -> bytes:
    mode, image_format = draw(st.sampled_from(MODES)), draw(st.sampled_from(["PNG", "JPEG"]))
    if image_format == "JPEG" and mode not in ("L", "RGB"):
        mode = "RGB"
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    pixels = draw(hnp.arrays(np.uint8, (height, width, 3)))
    image = Image.fromarray(pixels, "RGB")
    # Pillow converts RGB to every mode here except 16-bit greyscale, which is made from the red channel.
    image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257) if mode == "I;16" else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "cut", "flip"]))
    position = draw(st.integers(0, len(data) - 1))
    if damage == "cut":
        return data[:position]
    if damage == "flip":
        return data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1:]
    return data


image_files = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda data: b"\x89PNG\r\n\x1a\n" + data),
    st.binary(max_size=300).map(lambda data: b"\xff\xd8\xff\xe0" + data),
    encoded_images(),
)


@FUZZ
@given(data=image_files)
def test_image_loader_returns_an_mnist_digit_or_an_input_error(data):
    path = scratch_file("fuzz.png", data)
    try:
        digit = load_mnist_image(path)
    except InputError as error:
        assert_one_sentence(error)
        event("refused")
        return
    event("accepted")
    assert digit.shape == (28, 28) and digit.dtype == np.uint8 and digit.max() >= 254  # the ink peaks at white


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1))
def test_image_header_of_any_size_is_an_input_error_without_decoding(width, height):
    path = png_header_only(SCRATCH / "header.png", width, height)  # no pixel data: large sizes must not decode
    with pytest.raises(InputError) as caught:
        load_mnist_image(path)
    assert_one_sentence(caught.value)


# The predictor's array validation: any dtype, shape and values; Python lists, scalars, strings and None.

dtypes = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes(),
                   hnp.complex_number_dtypes(), hnp.datetime64_dtypes(), hnp.byte_string_dtypes(max_len=3),
                   hnp.unicode_string_dtypes(max_len=3))
shapes = st.one_of(st.sampled_from([(28, 28), (1, 28, 28), (3, 28, 28), (2, 28, 28, 1), (0, 28, 28), (28, 28, 1),
                                    (1, 28, 28, 3), (28,), ()]),
                   hnp.array_shapes(min_dims=0, max_dims=4, max_side=5))
arrays = st.builds(lambda dtype, shape, data: data.draw(hnp.arrays(dtype, shape)), dtypes, shapes, st.data())
pixel_arrays = hnp.arrays(st.sampled_from([np.uint8, np.int64, np.float32, np.float64]),
                          st.sampled_from([(28, 28), (2, 28, 28), (1, 28, 28, 1)]),
                          elements=st.integers(0, 255))
python_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
                             lambda children: st.lists(children, max_size=3), max_leaves=8)


def satisfies_contract(images) -> bool:
    """Numeric (not bool) pixels, finite and in 0-255, shaped (28, 28), (N, 28, 28) or (N, 28, 28, 1) with N > 0."""
    try:
        array = np.asarray(images)
    except (TypeError, ValueError):  # ragged lists
        return False
    if array.dtype == bool or array.dtype.kind not in "iuf":
        return False
    shape_ok = array.shape == (28, 28) or (array.ndim in (3, 4) and array.shape[1:3] == (28, 28) and len(array) > 0
                                           and (array.ndim == 3 or array.shape[3] == 1))
    values = array.astype(np.float64)
    return shape_ok and bool(np.isfinite(values).all() and values.min() >= 0 and values.max() <= 255)


@FUZZ
@given(images=st.one_of(arrays, pixel_arrays, python_values))
def test_as_pixels_returns_the_images_or_an_input_error(images):
    try:
        pixels = as_pixels(images)
    except InputError as error:
        assert_one_sentence(error)
        if not isinstance(images, str):  # a string is a path, valid whenever its file is
            assert not satisfies_contract(images)
        event("refused")
        return
    event("accepted")
    assert pixels.dtype == np.float32 and pixels.ndim == 3 and pixels.shape[1:] == (28, 28) and len(pixels) > 0
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 255
    np.testing.assert_array_equal(pixels, np.asarray(images, np.float32).reshape(pixels.shape))
