"""Training-time augmentation on the device: a random affine warp (rotation, zoom, shift) of every image.

Inside the jitted step, per image, from a key folded with the step, so a run (and a resumed run) repeats it exactly.
Never flips: a mirrored 2 is not a 2. Pixels that come from outside the image are black, as MNIST's border is.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


# Test-time augmentation (`mnist-jax evaluate --tta`): the image as it is, shifted one pixel each way, and rotated
# 10 degrees each way; (degrees counterclockwise, scale, pixels down, pixels right). The probabilities are averaged.
TTA_VIEWS = ((0.0, 1.0, 0.0, 0.0), (0.0, 1.0, 1.0, 0.0), (0.0, 1.0, -1.0, 0.0), (0.0, 1.0, 0.0, 1.0),
             (0.0, 1.0, 0.0, -1.0), (10.0, 1.0, 0.0, 0.0), (-10.0, 1.0, 0.0, 0.0))


class AffineRanges(NamedTuple):
    """How far each image may be warped; all zero: no augmentation, and no cost."""

    rotation: float = 0.0  # degrees, either way
    zoom: float = 0.0  # scale drawn from [1 - zoom, 1 + zoom]
    shift: float = 0.0  # fraction of the image's height (width), either way

    def __bool__(self) -> bool:
        return any(value != 0 for value in self)

    @classmethod
    def of(cls, config: Any) -> "AffineRanges":
        """The ranges a TrainConfig sets."""
        return cls(config.rotation, config.zoom, config.shift)


def random_affine(rng: jax.Array, images_BxHxW: jax.Array, ranges: AffineRanges) -> jax.Array:
    """Warp each image by its own random rotation, zoom and shift, drawn uniformly from `ranges`."""
    if not ranges:
        return images_BxHxW
    b, h, w = images_BxHxW.shape
    angle_rng, zoom_rng, shift_rng = jax.random.split(rng, 3)
    angles_B = jnp.deg2rad(jax.random.uniform(angle_rng, (b,), minval=-ranges.rotation, maxval=ranges.rotation))
    scales_B = jax.random.uniform(zoom_rng, (b,), minval=1 - ranges.zoom, maxval=1 + ranges.zoom)
    shifts_Bx2 = jax.random.uniform(shift_rng, (b, 2), minval=-ranges.shift, maxval=ranges.shift) * jnp.array([h, w])
    return affine(images_BxHxW, angles_B, scales_B, shifts_Bx2)


def affine(images_BxHxW: jax.Array, angles_B: jax.Array, scales_B: jax.Array, shifts_Bx2: jax.Array) -> jax.Array:
    """Rotate each image counterclockwise by its angle (radians) about its centre, scale it, then shift it.

    Shifts are (down, right) in pixels. Bilinear sampling: each output pixel reads the input at the inverse-warped
    point, by one gather of the four neighbours.
    """
    b, h, w = images_BxHxW.shape
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    # Output coordinates about the centre, y pointing up, less the shift; then rotated back and unscaled.
    x = cols[None] - (w - 1) / 2 - shifts_Bx2[:, 1, None, None]
    y = (h - 1) / 2 - rows[None] + shifts_Bx2[:, 0, None, None]
    cos, sin = (f(angles_B)[:, None, None] / scales_B[:, None, None] for f in (jnp.cos, jnp.sin))
    source_x = cos * x + sin * y + (w - 1) / 2
    source_row = (h - 1) / 2 - (-sin * x + cos * y)
    return _bilinear(images_BxHxW, source_row, source_x)


def views(images_BxHxW: jax.Array, views: tuple[tuple[float, float, float, float], ...] = TTA_VIEWS) -> jax.Array:
    """Every image under each fixed warp (degrees, scale, down, right): (V, B, H, W)."""
    b = images_BxHxW.shape[0]
    return jnp.stack([affine(images_BxHxW, jnp.full((b,), math.radians(degrees)), jnp.full((b,), scale),
                             jnp.tile(jnp.array([[down, right]], jnp.float32), (b, 1)))
                      for degrees, scale, down, right in views])


def _bilinear(images_BxHxW: jax.Array, rows_BxHxW: jax.Array, cols_BxHxW: jax.Array) -> jax.Array:
    """Sample each image at fractional (row, col) points; points outside read zeros."""
    b, h, w = images_BxHxW.shape
    flat = images_BxHxW.reshape(b, h * w)
    row0, col0 = jnp.floor(rows_BxHxW), jnp.floor(cols_BxHxW)
    out = jnp.zeros(rows_BxHxW.shape, images_BxHxW.dtype)
    for dr in (0, 1):
        for dc in (0, 1):
            r, c = row0 + dr, col0 + dc
            weight = (1 - jnp.abs(rows_BxHxW - r)) * (1 - jnp.abs(cols_BxHxW - c))
            inside = (r >= 0) & (r <= h - 1) & (c >= 0) & (c <= w - 1)
            index = (jnp.clip(r, 0, h - 1) * w + jnp.clip(c, 0, w - 1)).astype(jnp.int32).reshape(b, h * w)
            values = jnp.take_along_axis(flat, index, axis=1).reshape(rows_BxHxW.shape)
            out = out + jnp.where(inside, weight, 0.0) * values
    return out

