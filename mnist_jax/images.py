"""Turn user images (PNG/JPEG) into MNIST-style 28x28 inputs, the way MNIST was made.

MNIST digits are white ink (high values) on a black background, scaled so the
longer side of the digit's bounding box is 20 px, and pasted into a 28x28
canvas so the centre of mass of the ink sits at the centre.  Centre convention:
array index (row, col) = (14, 14), 0-based, which is where the real MNIST files
put it (t10k mean 13.99, 14.01; std 0.29).  Rounding the shift to whole pixels
leaves the result within half a pixel of that point on each axis.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_jax.errors import InputError

logger = logging.getLogger(__name__)

CANVAS = 28  # side of an MNIST image, in pixels
DIGIT_BOX = 20  # longer side of the digit's bounding box inside the canvas
CENTRE = 14.0  # 0-based index the ink's centre of mass is moved to, on both axes
WHITE = 255.0  # greyscale value of paper / of full-strength MNIST ink
MID_GREY = 127.5  # border brighter than this means dark ink on light paper
INK_FRACTION = 0.2  # pixels above this fraction of the peak define the bounding box
MARGIN = 2  # output pixels of faint rim kept around that box
NOISE_SIGMAS = 3.0  # paper noise this many standard deviations above its median is dropped
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation, for Gaussian noise
MIN_INK_CONTRAST = 32.0  # peak ink above background, in grey levels, below which it is blank
UINT16_MAX = 65535.0  # full scale of 16-bit greyscale PNGs
RESAMPLE = Image.Resampling.LANCZOS  # antialiased, sharp; its ringing is clipped away
ACCEPTED_FORMATS = ("PNG", "JPEG")
ACCEPTED = "a readable PNG or JPEG image"
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Decoding costs about 30 bytes per pixel on the way to 28x28, so this caps it near 0.75 GB; a 24 MP photo passes.
MAX_PIXELS = 25_000_000


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG or JPEG file as a 2-D float32 greyscale array in [0, 255]."""
    path = Path(path)
    return _to_gray(_decode(path))


def to_mnist(gray: np.ndarray, name: str = "The image") -> np.ndarray:
    """Turn a 2-D greyscale array in [0, 255] into a centred 28x28 uint8 MNIST digit; errors call it `name`."""
    canvas = _centred_on_canvas(_scaled_digit(_ink(_validated(gray), name)))
    return np.clip(np.rint(canvas), 0, WHITE).astype(np.uint8)


def load_mnist_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG or JPEG file and return it as a centred 28x28 uint8 MNIST digit."""
    return to_mnist(load_image(path), name=f"Image {str(path)!r}")  # so a blank file among several is named


def _decode(path: Path) -> Image.Image:
    """Open and fully decode an image file, turning every failure into an InputError."""
    try:
        # Our own limit is lower than Pillow's, so its bomb warning (printed raw to stderr) says nothing new.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=ACCEPTED_FORMATS) as image:
                _check_pixels(path, image.size)  # from the header, before any pixel is decoded
                image.load()  # decoding is lazy: force it here so corrupt data fails here
                # Phone photos store their rotation in EXIF instead of in the pixels.
                return ImageOps.exif_transpose(image)
    except InputError:
        raise
    except FileNotFoundError:
        reason = "no such file"
    except IsADirectoryError:
        reason = "it is a directory"
    except PermissionError:
        reason = "permission denied"
    except UnidentifiedImageError:
        reason = "it is empty" if _is_empty(path) else "it is not a PNG or JPEG image"
    except Image.DecompressionBombError:
        reason = f"it has more than {MAX_PIXELS:,} pixels"
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on corrupt data
        logger.debug("Pillow failed on %s", path, exc_info=exc)
        reason = "it is truncated or corrupt"
    raise InputError(f"Cannot read image {str(path)!r}: {reason}; expected {ACCEPTED}.")


def _check_pixels(path: Path, size: tuple[int, int]) -> None:
    """Refuse an image whose header announces more than MAX_PIXELS pixels."""
    width, height = size
    if width * height > MAX_PIXELS:
        raise InputError(f"Cannot read image {str(path)!r}: it is {width}x{height} pixels, more than the "
                         f"{MAX_PIXELS:,}-pixel limit; scale it down first.")


def _is_empty(path: Path) -> bool:
    """Whether the file exists and has zero bytes."""
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _to_gray(image: Image.Image) -> np.ndarray:
    """Convert a decoded image of any mode to float32 greyscale in [0, 255]."""
    if image.mode in SIXTEEN_BIT_MODES:
        # 16-bit PNGs: convert("L") would clip values above 255 instead of scaling them.
        wide = np.asarray(image, dtype=np.float64) * (WHITE / UINT16_MAX)
        return np.clip(wide, 0.0, WHITE).astype(np.float32)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        # Transparent pixels are blank paper, so they must become white, not black.
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return np.asarray(image.convert("L"), dtype=np.float32)


def _validated(gray: np.ndarray) -> np.ndarray:
    """Check that gray is a non-empty 2-D array of finite values in [0, 255]."""
    array = np.asarray(gray, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise InputError(f"Expected a non-empty 2-D greyscale image, got shape {array.shape}.")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > WHITE:
        raise InputError("Expected greyscale values between 0 and 255 with no NaN or infinity.")
    return array


def _border(array: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels, where the paper (background) shows."""
    return np.concatenate([array[0], array[-1], array[1:-1, 0], array[1:-1, -1]])


def _ink(gray: np.ndarray, name: str) -> np.ndarray:
    """Make the ink bright on a zero background, inverting dark-on-light images."""
    # The median ignores a stroke that happens to touch the border.
    background = float(np.median(_border(gray)))
    if background > MID_GREY:
        logger.debug("light background (%.0f): inverting", background)
        gray, background = WHITE - gray, WHITE - background
    # Grey, grainy paper in a photo is background too, not faint ink.
    ink = np.clip(gray - background - NOISE_SIGMAS * _noise(gray), 0.0, None)
    if ink.max() < MIN_INK_CONTRAST:
        raise InputError(f"{name} contains no digit: it is blank.")
    return ink


def _noise(gray: np.ndarray) -> float:
    """Robust standard deviation of the border pixels: the paper's grain and sensor noise."""
    border = _border(gray)
    return MAD_TO_SIGMA * float(np.median(np.abs(border - np.median(border))))


def _ink_extent(ink: np.ndarray) -> tuple[slice, slice]:
    """Row and column extent of the pixels that clearly carry ink (not noise or rim)."""
    rows, cols = np.nonzero(ink > INK_FRACTION * ink.max())
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def _scaled_digit(ink: np.ndarray) -> np.ndarray:
    """Resize the ink so its bounding box is DIGIT_BOX px on the longer side, peak WHITE."""
    rows, cols = _ink_extent(ink)
    scale = DIGIT_BOX / max(rows.stop - rows.start, cols.stop - cols.start)
    # Zero padding lets the margin and rounding reach past the image's edges.
    pad = math.ceil((MARGIN + 1) / scale) + 1
    top, bottom, height = _span(rows, scale, pad)
    left, right, width = _span(cols, scale, pad)
    image = Image.fromarray(np.pad(ink, pad).astype(np.float32))
    resized = image.resize((width, height), RESAMPLE, box=(left, top, right, bottom))
    # LANCZOS rings slightly below zero next to strokes.
    digit = np.clip(np.asarray(resized, dtype=np.float64), 0.0, None)
    # Every MNIST digit peaks at 254-255; downscaling thin strokes greys them out.
    return digit * (WHITE / digit.max())


def _span(extent: slice, scale: float, pad: int) -> tuple[float, float, int]:
    """Source start, stop and output length of one axis: the ink plus MARGIN output px."""
    # Whole output pixels of margin keep the ink box on exact pixel boundaries.
    length = max(1, round((extent.stop - extent.start) * scale)) + 2 * MARGIN
    centre = pad + (extent.start + extent.stop) / 2
    half = length / scale / 2
    return centre - half, centre + half, length


def _centred_on_canvas(digit: np.ndarray) -> np.ndarray:
    """Paste digit into a CANVAS x CANVAS field with its centre of mass at (CENTRE, CENTRE)."""
    height, width = digit.shape
    com_row, com_col = _centre_of_mass(digit)
    # The canvas is widened by MARGIN so only the faint rim, never the ink box, can be cut.
    wide = CANVAS + 2 * MARGIN
    top = MARGIN + int(np.clip(np.rint(CENTRE - com_row), -MARGIN, wide - MARGIN - height))
    left = MARGIN + int(np.clip(np.rint(CENTRE - com_col), -MARGIN, wide - MARGIN - width))
    canvas = np.zeros((wide, wide), dtype=np.float64)
    canvas[top : top + height, left : left + width] = digit
    return canvas[MARGIN:-MARGIN, MARGIN:-MARGIN]


def _centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted mean (row, col) index of a non-negative image."""
    total = image.sum()
    rows = np.arange(image.shape[0]) @ image.sum(axis=1) / total
    cols = np.arange(image.shape[1]) @ image.sum(axis=0) / total
    return float(rows), float(cols)
