"""Augmentation: image and mask move together, ranges and seeds are honoured, tf.data works."""

from __future__ import annotations

import numpy as np
import pytest

from lunglib.augment.transforms import (
    Compose,
    RandomFlip,
    RandomRotate,
    RandomScale,
    RandomTranslate,
    default_augmentation,
    random_flip,
    random_rotate,
    random_scale,
    random_translate,
)


def _cube(shape, lo, hi):
    image = np.full(shape, 0.1, np.float32)
    mask = np.zeros(shape, np.uint8)
    region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    image[region] = 0.9
    mask[region] = 1
    return image, mask


CASES_3D = _cube((16, 40, 40), (4, 8, 22), (12, 18, 32))
CASES_2D = _cube((40, 40), (8, 22), (18, 32))

TRANSFORMS = {
    "rotate": lambda im, m, rng: random_rotate(im, m, max_degrees=40, rng=rng),
    "flip": lambda im, m, rng: random_flip(im, m, axes=(-1, -2), p=0.5, rng=rng),
    "scale": lambda im, m, rng: random_scale(im, m, scale_range=(0.7, 1.3), rng=rng),
    "translate": lambda im, m, rng: random_translate(im, m, max_shift=6, rng=rng),
    "all": lambda im, m, rng: default_augmentation(30, (0.8, 1.2), 5)(im, m, rng),
}


def _dice(a, b):
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("case", [CASES_3D, CASES_2D], ids=["3d", "2d"])
def test_mask_stays_on_the_bright_voxels(name, case):
    image, mask = case
    moved = 0
    for seed in range(8):
        out, out_mask = TRANSFORMS[name](image, mask, np.random.default_rng(seed))
        assert out.shape == image.shape and out_mask.shape == mask.shape
        assert out_mask.dtype == mask.dtype and set(np.unique(out_mask)) <= {0, 1}
        inside = out_mask > 0
        assert inside.sum() > 0.3 * mask.sum()  # scale 0.7 keeps ~0.49 of the area
        assert out[inside].mean() > 0.75
        assert _dice(out > 0.5, inside) > 0.9
        moved += not np.array_equal(out_mask, mask)
    assert moved >= 4, f"{name} left the mask unchanged for most seeds"


def test_flip_and_translate_are_exact_where_they_should_be():
    image, mask = CASES_3D
    out, out_mask = random_flip(image, mask, axes=(-1,), p=1.0)
    np.testing.assert_allclose(out, image[..., ::-1], atol=1e-6)
    np.testing.assert_array_equal(out_mask, mask[..., ::-1])
    # a whole-voxel shift moves the cube by exactly that many voxels
    shifted, shifted_mask = RandomTranslate((0, 3, 3))(image, mask, rng=0)
    delta = np.argwhere(shifted_mask).min(axis=0) - np.argwhere(mask).min(axis=0)
    assert np.all(np.abs(delta) <= 3) and np.array_equal(np.round(delta), delta)


def test_ranges_are_respected():
    image, mask = CASES_2D
    for seed in range(10):
        m = RandomRotate(5.0).matrix(image.shape, np.random.default_rng(seed))
        angle = np.degrees(np.arctan2(m[1, 0], m[0, 0]))
        assert abs(angle) <= 5.0
        s = RandomScale((0.9, 1.1)).matrix(image.shape, np.random.default_rng(seed))
        assert 0.9 <= 1.0 / s[0, 0] <= 1.1
    _, scaled = random_scale(image, mask, scale_range=(1.3, 1.3))
    assert scaled.sum() == pytest.approx(mask.sum() * 1.3**2, rel=0.15)


def test_seeded_runs_repeat():
    image, mask = CASES_3D
    aug = default_augmentation()
    a = aug(image, mask, rng=np.random.default_rng(3))
    b = aug(image, mask, rng=np.random.default_rng(3))
    c = aug(image, mask, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="mask shape"):
        Compose([RandomFlip()])(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="channel"):
        random_rotate(np.zeros((2, 4, 4, 4, 1)))
    with pytest.raises(ValueError, match="scale_range"):
        random_scale(np.zeros((4, 4)), scale_range=(1.2, 0.8))


@pytest.mark.slow
def test_tf_augment_in_a_parallel_tf_data_map_keeps_alignment_and_repeats():
    import tensorflow as tf

    from lunglib.augment.transforms import tf_augment

    image, mask = CASES_3D
    images = np.stack([image] * 6)[..., None]
    masks = np.stack([mask] * 6)[..., None]
    aug = default_augmentation(30, (0.85, 1.15), (0, 4, 4))

    def run():
        ds = tf.data.Dataset.from_tensor_slices((images, masks))
        seeds = tf.data.Dataset.random(seed=11)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda pair, s: tf_augment(pair[0], pair[1], aug, s),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return [(a.numpy(), b.numpy()) for a, b in ds]

    first, second = run(), run()
    assert len(first) == 6
    for (out, out_mask), (again, again_mask) in zip(first, second, strict=True):
        assert out.shape == image.shape + (1,)
        inside = out_mask[..., 0] > 0
        assert _dice(out[..., 0] > 0.5, inside) > 0.9
        np.testing.assert_array_equal(out, again)
        np.testing.assert_array_equal(out_mask, again_mask)
    assert len({out_mask.tobytes() for _, out_mask in first}) > 1


def test_every_view_is_undone_exactly_and_the_eight_are_distinct():
    from lunglib.augment import VIEWS, apply_view, undo_view

    x = np.arange(2 * 5 * 5 * 3, dtype=float).reshape(2, 5, 5, 3)
    seen = set()
    for view in VIEWS["dihedral"]:
        turned = apply_view(x, view)
        np.testing.assert_array_equal(undo_view(turned, view), x)
        seen.add(turned.tobytes())
    assert len(seen) == 8


def test_predict_tta_maps_dense_outputs_back_and_averages_scores():
    from lunglib.augment import predict_tta

    rng = np.random.default_rng(0)
    x = rng.random((3, 6, 6, 1))
    # an equivariant "segmenter" (identity) must come back unchanged after all eight views
    np.testing.assert_allclose(predict_tta(lambda b: b, x, "dihedral", dense=True), x)
    # a position-dependent "segmenter" (adds a ramp) averages the ramp over the 8 orientations
    ramp = np.arange(6.0)[None, :, None, None] * np.ones((1, 6, 6, 1))
    out = predict_tta(lambda b: b + ramp, x, "dihedral", dense=True)
    np.testing.assert_allclose(out - x, np.full_like(x, 2.5))  # mean of 0..5 over the orientations
    # a classifier scoring the top-left pixel sees each corner twice over the 8 views
    corner = predict_tta(lambda b: b[:, 0, 0, 0], x, "dihedral")
    corners = x[:, [0, 0, -1, -1], [0, -1, 0, -1], 0].mean(axis=1)
    np.testing.assert_allclose(corner, corners)
    np.testing.assert_allclose(predict_tta(lambda b: b[:, 0, 0, 0], x, "none"), x[:, 0, 0, 0])
    with pytest.raises(ValueError, match="square"):
        predict_tta(lambda b: b, np.zeros((1, 4, 6, 1)), "dihedral")
    with pytest.raises(ValueError, match="views must be one of"):
        predict_tta(lambda b: b, x, "sideways")
