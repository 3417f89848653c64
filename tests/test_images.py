"""Tests for mnist_jax.images: loading user images and turning them into MNIST digits.

Centre convention under test: the ink's centre of mass lands at 0-based array
index (14, 14), where the real MNIST files put it.
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_jax.errors import InputError
from tests.tolerances import assert_close
from mnist_jax.images import (
    CANVAS,
    CENTRE,
    DIGIT_BOX,
    INK_FRACTION,
    MAX_PIXELS,
    load_image,
    load_mnist_image,
    to_mnist,
)

BLACK, WHITE = 0, 255
MNIST_ENV = "MNIST_JAX_DATA_DIR"
MNIST_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
IDX_HEADER_BYTES = 16
ROUND_TRIP_DIGITS = 50
PNG_TAIL_BYTES = 24  # last IDAT checksums plus the 12-byte IEND chunk


def draw_seven(size: tuple[int, int], box: tuple[int, int, int, int], ink: int, paper: int) -> Image.Image:
    """An 'L' image of a thick '7' drawn inside box = (left, top, right, bottom)."""
    image = Image.new("L", size, paper)
    left, top, right, bottom = box
    stroke = max(1, (bottom - top) // 8)
    draw = ImageDraw.Draw(image)
    draw.rectangle((left, top, right, top + stroke), fill=ink)
    draw.line((right - stroke // 2, top, left + (right - left) // 3, bottom), fill=ink, width=stroke)
    return image


def centre_of_mass(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted mean (row, col) index."""
    weights = image.astype(np.float64)
    rows, cols = np.indices(image.shape)
    return np.array([(rows * weights).sum(), (cols * weights).sum()]) / weights.sum()


def ink_box(image: np.ndarray) -> tuple[int, int]:
    """Height and width of the box around pixels above INK_FRACTION of the peak."""
    rows, cols = np.nonzero(image > INK_FRACTION * image.max())
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' pixels."""
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def save(image: Image.Image, path: Path, **options: object) -> Path:
    """Save image to path and return path."""
    image.save(path, **options)
    return path


SEVEN_ON_PAPER = draw_seven((200, 200), (40, 30, 150, 170), ink=BLACK, paper=WHITE)


def test_output_is_uint8_28x28(tmp_path: Path) -> None:
    digit = load_mnist_image(save(SEVEN_ON_PAPER, tmp_path / "seven.png"))
    assert digit.dtype == np.uint8
    assert digit.shape == (CANVAS, CANVAS)
    assert digit.max() == WHITE


def test_dark_on_light_is_inverted() -> None:
    light_on_dark = draw_seven((200, 200), (40, 30, 150, 170), ink=WHITE, paper=BLACK)
    inverted = to_mnist(np.asarray(SEVEN_ON_PAPER, dtype=np.float32))
    assert inverted[0, 0] == 0 and inverted.max() == WHITE  # white ink on black, as in MNIST
    np.testing.assert_array_equal(inverted, to_mnist(np.asarray(light_on_dark, dtype=np.float32)))


def test_light_on_dark_is_not_inverted() -> None:
    gray = np.zeros((60, 60), np.float32)
    gray[10:50, 25:33] = 200.0
    digit = to_mnist(gray)
    assert digit[CANVAS // 2, CANVAS // 2] > 128 and digit[0, 0] == 0


@pytest.mark.parametrize(
    "size, box",
    [
        ((200, 200), (40, 30, 150, 170)),  # centred
        ((300, 200), (5, 5, 60, 120)),  # tucked into a corner
        ((120, 400), (10, 200, 110, 390)),  # wider than tall on a tall sheet
        ((1000, 600), (620, 80, 900, 520)),  # large, off-centre
    ],
)
def test_centre_of_mass_lands_at_14_14(size: tuple[int, int], box: tuple[int, int, int, int]) -> None:
    digit = to_mnist(np.asarray(draw_seven(size, box, ink=BLACK, paper=WHITE), np.float32))
    # Rounding the shift leaves at most half a pixel; uint8 rounding adds a hair.
    assert np.abs(centre_of_mass(digit) - CENTRE).max() < 1.0


def test_longer_side_of_large_input_is_20() -> None:
    gray = np.zeros((500, 400), np.float32)
    gray[40:460, 100:260] = 255.0  # 420 x 160 block
    digit = to_mnist(gray)
    height, width = ink_box(digit)
    assert height == DIGIT_BOX
    assert width == pytest.approx(DIGIT_BOX * 160 / 420, abs=1)  # aspect ratio kept


def test_small_input_is_scaled_up_to_20() -> None:
    gray = np.zeros((40, 40), np.float32)
    gray[15:25, 18:22] = 255.0  # 10 x 4 block
    digit = to_mnist(gray)
    assert max(ink_box(digit)) == DIGIT_BOX
    assert np.abs(centre_of_mass(digit) - CENTRE).max() < 1.0


def test_top_heavy_digit_is_not_cut() -> None:
    gray = np.zeros((200, 200), np.float32)
    gray[20:60, 20:180] = 255.0  # heavy bar: centre of mass too high to centre it
    gray[60:180, 98:102] = 255.0  # thin stem
    digit = to_mnist(gray)
    assert ink_box(digit)[0] == DIGIT_BOX  # the whole digit is kept...
    assert digit[-1].max() > INK_FRACTION * WHITE  # ...pushed as far down as it goes


def test_1000x600_image(tmp_path: Path) -> None:
    sheet = draw_seven((1000, 600), (620, 80, 900, 520), ink=BLACK, paper=WHITE)
    digit = load_mnist_image(save(sheet, tmp_path / "wide.jpg", quality=90))
    assert digit.shape == (CANVAS, CANVAS)
    assert max(ink_box(digit)) == DIGIT_BOX
    assert np.abs(centre_of_mass(digit) - CENTRE).max() < 1.0


def test_rgba_transparent_background_is_white_paper(tmp_path: Path) -> None:
    # Transparent pixels hold black RGB: a naive conversion would see all black.
    alpha = np.where(np.asarray(SEVEN_ON_PAPER) == BLACK, WHITE, 0).astype(np.uint8)
    rgba = np.zeros((*alpha.shape, 4), np.uint8)
    rgba[..., 3] = alpha
    path = save(Image.fromarray(rgba), tmp_path / "transparent.png")
    gray = load_image(path)
    assert gray[0, 0] == WHITE
    expected = to_mnist(np.asarray(SEVEN_ON_PAPER, np.float32))
    np.testing.assert_array_equal(load_mnist_image(path), expected)


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "LA", "1", "CMYK"])
def test_any_mode_gives_2d_float32_in_range(tmp_path: Path, mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = save(SEVEN_ON_PAPER.convert(mode), tmp_path / f"seven.{fmt.lower()}", format=fmt)
    gray = load_image(path)
    assert gray.dtype == np.float32 and gray.shape == (200, 200)
    assert 0.0 <= gray.min() and gray.max() <= WHITE
    expected = to_mnist(np.asarray(SEVEN_ON_PAPER, np.float32))
    assert correlation(to_mnist(gray), expected) > 0.95


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    # Both levels are above 255: clipping them would leave a blank white sheet.
    wide = np.full((30, 40), 60000, np.uint16)
    wide[5:25, 18:22] = 3000
    gray = load_image(save(Image.fromarray(wide), tmp_path / "deep.png"))
    # Scaled in float64, then one rounding to float32.
    assert_close(gray[[0, 10], [0, 20]], [60000 * 255 / 65535, 3000 * 255 / 65535], reduction_length=1)
    assert to_mnist(gray)[0, 0] == 0  # inverted like any dark-on-light image


def test_noisy_grey_paper_photo() -> None:
    seven = np.asarray(draw_seven((300, 300), (60, 50, 230, 250), ink=BLACK, paper=WHITE), np.float64)
    rng = np.random.default_rng(0)
    photo = np.clip(80 + 0.5 * seven + rng.normal(0, 8, seven.shape), 0, 255)  # ink 80, paper 207
    digit = to_mnist(photo)
    clean = to_mnist(seven)
    assert max(ink_box(digit)) == DIGIT_BOX
    assert correlation(digit, clean) > 0.9


def test_stroke_touching_the_border_does_not_flip_polarity() -> None:
    gray = np.full((100, 100), 255.0, np.float32)
    gray[:, 45:55] = 0.0  # a '1' running off the top and bottom edges
    digit = to_mnist(gray)
    assert digit[CANVAS // 2, CANVAS // 2] > 200 and digit[0, 0] == 0


def test_mnist_like_input_is_unchanged() -> None:
    digit = np.zeros((CANVAS, CANVAS), np.uint8)
    digit[5:25, 12:18] = WHITE  # 20 x 6 bar
    digit[5:7, 10:12] = 128  # a grey serif
    assert np.abs(centre_of_mass(digit) - CENTRE).max() < 0.5  # already centred, like MNIST
    np.testing.assert_array_equal(to_mnist(digit.astype(np.float32)), digit)


@pytest.mark.parametrize("value", [0.0, 255.0, 128.0])
def test_blank_image_is_rejected(value: float) -> None:
    with pytest.raises(InputError, match="contains no digit: it is blank"):
        to_mnist(np.full((64, 64), value, np.float32))


def test_blank_png_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="blank"):
        load_mnist_image(save(Image.new("RGB", (80, 60), "white"), tmp_path / "blank.png"))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3)), np.zeros((0, 5)), np.full((5, 5), np.nan), np.full((5, 5), 300.0)],
    ids=["3d", "empty", "nan", "out-of-range"],
)
def test_to_mnist_rejects_bad_arrays(bad: np.ndarray) -> None:
    with pytest.raises(InputError):
        to_mnist(bad)


def _truncated_png(path: Path) -> Path:
    """A PNG cut off in the middle of its pixel data."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    data = save(Image.fromarray(noise), path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty"),
        (lambda p: (p.write_text("hello, not an image\n"), p)[1], "not a PNG or JPEG"),
        (_truncated_png, "truncated or corrupt"),
        (lambda p: (p.mkdir(), p)[1], "directory"),
        (lambda p: save(Image.new("L", (8, 8)), p, format="GIF"), "not a PNG or JPEG"),
    ],
    ids=["missing", "empty", "text", "truncated", "directory", "gif"],
)
def test_unreadable_files_raise_input_error(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path / "digit.png")
    with pytest.raises(InputError) as caught:
        load_mnist_image(path)
    message = str(caught.value)
    assert str(path) in message and reason in message and "PNG or JPEG" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert caught.value.__context__ is None  # no Pillow traceback attached
    assert isinstance(caught.value, ValueError)


def test_png_truncated_anywhere_raises_input_error(tmp_path: Path) -> None:
    data = save(SEVEN_ON_PAPER, tmp_path / "full.png").read_bytes()
    path = tmp_path / "cut.png"
    # Pillow forgives a missing IEND chunk and checksums, once the pixels are complete.
    for cut in range(len(data) - PNG_TAIL_BYTES):
        path.write_bytes(data[:cut])
        with pytest.raises(InputError, match="cut.png"):
            load_image(path)


def _mnist_digits(count: int) -> np.ndarray:
    """The first count test digits, or skip when the data directory is not configured."""
    data_dir = os.environ.get(MNIST_ENV)
    if not data_dir:
        pytest.skip(f"{MNIST_ENV} is not set: no real MNIST digits to round-trip")
    path = Path(data_dir) / MNIST_TEST_IMAGES
    if not path.is_file():
        pytest.skip(f"{path} does not exist")
    with gzip.open(path, "rb") as stream:
        raw = stream.read(IDX_HEADER_BYTES + count * CANVAS * CANVAS)
    return np.frombuffer(raw, np.uint8, offset=IDX_HEADER_BYTES).reshape(count, CANVAS, CANVAS)


def test_real_mnist_digits_round_trip_through_png(tmp_path: Path) -> None:
    digits = _mnist_digits(ROUND_TRIP_DIGITS)
    for index, original in enumerate(digits):
        path = save(Image.fromarray(original), tmp_path / f"mnist-{index}.png")
        restored = load_mnist_image(path)
        assert correlation(restored, original) > 0.9, f"digit {index}"


def test_real_mnist_digit_on_paper_round_trip(tmp_path: Path) -> None:
    original = _mnist_digits(1)[0]
    # A user's scan: dark ink on white paper, ten times larger, saved as RGB JPEG.
    big = Image.fromarray(WHITE - original).resize((280, 280), Image.Resampling.BICUBIC)
    path = save(big.convert("RGB"), tmp_path / "scan.jpg", quality=95)
    assert correlation(load_mnist_image(path), original) > 0.9


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG announcing width x height greyscale pixels, with no pixel data: cheap to write, costly to decode."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [5001, 13000, 20000], ids=["just-over", "pillow-warns", "pillow-refuses"])
def test_too_many_pixels_refused_before_decoding_without_pillow_warnings(tmp_path: Path, side: int) -> None:
    path = png_header_only(tmp_path / "huge.png", side, 5000 if side == 5001 else side)
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as caught:
            load_mnist_image(path)
    assert caught_warnings == []  # Pillow's DecompressionBombWarning is never shown
    message = str(caught.value)
    assert str(path) in message and f"{MAX_PIXELS:,}" in message
    assert message.count(". ") == 0 and message.endswith(".")
