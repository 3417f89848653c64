"""Augmentation: seeded and reproducible, the identity at zero ranges, rotations that turn the right way, no flips."""

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import augment
from mnist_jax.augment import AffineRanges

RANGES = AffineRanges(rotation=15, zoom=0.15, shift=0.1)


def images(count=8, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(0, 255, (count, 28, 28)), jnp.float32)


def warp(images_BxHxW, degrees=0.0, scale=1.0, down=0.0, right=0.0):
    b = images_BxHxW.shape[0]
    return augment.affine(images_BxHxW, jnp.full((b,), np.deg2rad(degrees)), jnp.full((b,), scale),
                          jnp.tile(jnp.array([[down, right]], jnp.float32), (b, 1)))


def test_the_same_key_gives_the_same_warps_and_another_key_others():
    x = images()
    first = augment.random_affine(jax.random.key(1), x, RANGES)
    np.testing.assert_array_equal(first, augment.random_affine(jax.random.key(1), x, RANGES))
    assert not np.allclose(first, augment.random_affine(jax.random.key(2), x, RANGES))
    # Each image draws its own warp: two copies of one image come out different.
    twins = augment.random_affine(jax.random.key(1), jnp.stack([x[0], x[0]]), RANGES)
    assert not np.allclose(twins[0], twins[1])


def test_zero_ranges_and_the_identity_warp_change_nothing():
    x = images()
    assert augment.random_affine(jax.random.key(0), x, AffineRanges()) is x  # not even traced
    np.testing.assert_array_equal(warp(x), x)


def test_a_90_degree_rotation_turns_a_pixel_above_the_centre_to_its_left():
    x = jnp.zeros((1, 28, 28)).at[0, 5, 13].set(1.0).at[0, 5, 14].set(1.0)  # centre is (13.5, 13.5)
    turned = np.asarray(warp(x, degrees=90))[0]
    assert sorted(map(tuple, np.argwhere(turned > 0.99))) == [(13, 5), (14, 5)]
    assert turned.sum() == np.float32(2.0)


def test_shift_moves_by_whole_pixels_and_zoom_enlarges_about_the_centre():
    x = jnp.zeros((1, 28, 28)).at[0, 10, 20].set(1.0)
    np.testing.assert_array_equal(np.argwhere(np.asarray(warp(x, down=2, right=-3))[0]), [[12, 17]])
    # Scale 2 about (13.5, 13.5): the pixel at (9.5, 13.5) +- 0.5 lands about (5.5, 13.5), four times as large.
    x = jnp.zeros((1, 28, 28)).at[0, 9:11, 13:15].set(1.0)
    zoomed = np.asarray(warp(x, scale=2.0))[0]
    rows, cols = np.nonzero(zoomed > 0.5)
    assert 5 <= rows.mean() <= 6 and 13 <= cols.mean() <= 14 and zoomed.sum() > 10


def test_warps_never_mirror_an_image():
    """Three dots keep their clockwise order under every random warp (a mirror image would reverse it)."""
    count = 256
    corners = [(9, 9), (9, 17), (17, 9)]  # row, col; clockwise on screen
    centroids = []
    for row, col in corners:
        dot = jnp.zeros((count, 28, 28)).at[:, row:row + 2, col:col + 2].set(255.0)
        # Same key, same batch size: image i of each batch gets the same warp.
        warped = np.asarray(augment.random_affine(jax.random.key(3), dot, AffineRanges(45, 0.2, 0.1)))
        rows, cols = np.mgrid[:28, :28]
        mass = warped.sum(axis=(1, 2))
        centroids.append(np.stack([(warped * rows).sum((1, 2)) / mass, (warped * cols).sum((1, 2)) / mass], -1))
    (r0, c0), (r1, c1), (r2, c2) = (centroid.T for centroid in centroids)
    signed_area = (c1 - c0) * (r2 - r0) - (r1 - r0) * (c2 - c0)
    assert (signed_area > 0).all()


def test_tta_views_start_with_the_image_itself():
    x = images(2)
    views = augment.views(x)
    assert views.shape == (len(augment.TTA_VIEWS), 2, 28, 28)
    np.testing.assert_array_equal(views[0], x)


def test_the_report_figure_shows_each_image_then_its_warps():
    from mnist_jax import plots

    originals = np.asarray(images(6), np.uint8)
    figure = plots.plot_augmented(originals, RANGES, seed=0)
    shown = [image for image, _, _ in plots.gallery_tiles(figure)]
    assert len(shown) == plots.AUGMENTED_ROWS * plots.COLUMNS
    first_row = [np.asarray(image) for image in shown[:plots.COLUMNS]]
    assert any(np.array_equal(first_row[0], original) for original in originals)
    assert not np.allclose(first_row[1], first_row[0])
