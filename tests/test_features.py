"""Outline features: millimetre sizes, shape and HU statistics on known shapes and real patches."""

from __future__ import annotations

import numpy as np
import pytest

from lunglib.models.features import FEATURE_NAMES, outline_features

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _disc_patch(radius_mm: float, spacing: float, inside_hu: float, size: int = 71):
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    mask = ((yy - c) ** 2 + (xx - c) ** 2) * spacing**2 <= radius_mm**2
    image = np.full((size, size), -850.0)
    image[mask] = inside_hu
    return image, mask.astype(np.uint8)


def test_disc_sizes_are_in_millimetres_whatever_the_pixel_spacing():
    rows = []
    for spacing in (0.5, 0.8):
        image, mask = _disc_patch(8.0, spacing, 40.0)
        rows.append(outline_features(image[None], mask[None], [spacing])[0])
    for f in rows:
        assert np.expm1(f[COL["log_area_mm2"]]) == pytest.approx(np.pi * 64, rel=0.06)
        assert f[COL["major_axis_mm"]] == pytest.approx(16.0, rel=0.06)
        assert f[COL["minor_axis_mm"]] == pytest.approx(16.0, rel=0.06)
        assert f[COL["eccentricity"]] < 0.2
        assert f[COL["solidity"]] > 0.95
        assert f[COL["hu_mean"]] == pytest.approx(40.0)
        assert f[COL["ring_hu_mean"]] == pytest.approx(-850.0)
        assert f[COL["calcified_fraction"]] == 0.0
    np.testing.assert_allclose(rows[0], rows[1], rtol=0.08, atol=0.02)


def test_irregular_outline_is_less_compact_and_less_solid_than_a_disc():
    image, disc = _disc_patch(10.0, 0.7, 40.0)
    star = np.zeros_like(disc)
    star[35 - 2 : 35 + 3, 5:66] = 1  # a cross: same extent, far from convex
    star[5:66, 35 - 2 : 35 + 3] = 1
    f = outline_features(np.stack([image, image]), np.stack([disc, star]), [0.7, 0.7])
    assert f[1, COL["compactness"]] < 0.5 * f[0, COL["compactness"]]
    assert f[1, COL["solidity"]] < 0.5 * f[0, COL["solidity"]]


def test_calcified_and_ground_glass_fractions_follow_the_hu_inside():
    calcified, mask = _disc_patch(6.0, 0.7, 600.0)
    glass, _ = _disc_patch(6.0, 0.7, -650.0)
    f = outline_features(np.stack([calcified, glass]), np.stack([mask, mask]), [0.7, 0.7])
    assert f[0, COL["calcified_fraction"]] == 1.0 and f[0, COL["low_density_fraction"]] == 0.0
    assert f[1, COL["calcified_fraction"]] == 0.0 and f[1, COL["low_density_fraction"]] == 1.0


def test_empty_outline_and_mismatched_inputs_are_refused():
    image, mask = _disc_patch(5.0, 0.7, 0.0)
    with pytest.raises(ValueError, match="patch 1 has an empty outline"):
        outline_features(np.stack([image, image]), np.stack([mask, 0 * mask]), [0.7, 0.7])
    with pytest.raises(ValueError, match="2 spacings for 1 patches"):
        outline_features(image[None], mask[None], [0.7, 0.7])
    with pytest.raises(ValueError, match="must both be"):
        outline_features(image[None], mask[None, :10], [0.7])


def test_real_lidc_malignant_outlines_are_larger_and_less_calcified(lidc_patches_npz):
    d = np.load(lidc_patches_npz)
    rating = d["malignancy"]
    keep = rating != 3
    f = outline_features(d["image"][keep], d["mask"][keep], d["pixel_spacing_mm"][keep])
    assert np.isfinite(f).all()
    malignant = rating[keep] >= 4
    area = f[:, COL["log_area_mm2"]]
    assert np.median(area[malignant]) > np.median(area[~malignant]) + 0.5
    calcified = f[:, COL["calcified_fraction"]]
    assert calcified[~malignant].mean() > calcified[malignant].mean()
