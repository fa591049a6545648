"""patch_inputs: windows, millimetre resampling, outline channel and the size-normalised view."""

from __future__ import annotations

import numpy as np
import pytest

from lunglib.training import patch_inputs


def _disc(radius_px: float, size: int = 71, inside: float = 40.0, outside: float = -850.0):
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    mask = ((yy - c) ** 2 + (xx - c) ** 2) <= radius_px**2
    return np.where(mask, inside, outside).astype(np.int16), mask.astype(np.uint8)


def test_default_is_one_window_plus_outline_in_unit_range():
    image, mask = _disc(10)
    x = patch_inputs(image[None], mask[None], size=40)
    assert x.shape == (1, 40, 40, 2) and x.dtype == np.float32
    assert x[0, 20, 20, 0] == pytest.approx((40 + 1000) / 2000)
    assert x[0, 0, 0, 0] == pytest.approx((-850 + 1000) / 2000)
    assert set(np.unique(x[..., 1])) == {0.0, 1.0}


def test_resampling_makes_a_pixel_the_same_millimetres():
    small_px, mask_small = _disc(10)  # 10 px radius at 1.0 mm = 10 mm
    large_px, mask_large = _disc(20)  # 20 px radius at 0.5 mm = 10 mm
    x = patch_inputs(
        np.stack([small_px, large_px]), np.stack([mask_small, mask_large]), [1.0, 0.5],
        target_spacing_mm=1.0, size=40,
    )
    areas = x[..., 1].sum(axis=(1, 2))
    assert areas[0] == pytest.approx(np.pi * 100, rel=0.1)
    assert areas[1] == pytest.approx(areas[0], rel=0.05)


def test_extra_windows_add_channels_before_the_outline():
    image, mask = _disc(8, inside=-600.0, outside=-900.0)
    x = patch_inputs(image[None], mask[None], size=32,
                     extra_windows=[(-1000.0, -400.0), (-160.0, 240.0)])
    assert x.shape == (1, 32, 32, 4)
    centre = x[0, 16, 16]
    assert centre[0] == pytest.approx(0.2)  # -600 in (-1000, 1000)
    assert centre[1] == pytest.approx(400 / 600)  # -600 in the lung window
    assert centre[2] == 0.0  # below the mediastinal window
    assert centre[3] == 1.0  # the outline


def test_nodule_view_makes_small_and_large_nodules_the_same_size():
    small, mask_small = _disc(4)
    large, mask_large = _disc(16)
    x = patch_inputs(np.stack([small, large]), np.stack([mask_small, mask_large]), size=40,
                     nodule_view=0.5)
    assert x.shape == (2, 40, 40, 3)
    # in the context channel the large disc covers ~16x the pixels; in the view both span ~half
    inside = x[..., 2] > 0.3  # halfway between the disc (0.52) and the background (0.075)
    fraction = inside.sum(axis=(1, 2)) / 40**2
    assert fraction[0] == pytest.approx(fraction[1], rel=0.25)  # 16x apart in the context
    assert np.all((fraction > 0.12) & (fraction < 0.25))  # a disc spanning half: pi/16 = 0.2
    context = (x[..., 1] > 0.5).sum(axis=(1, 2))
    assert context[1] > 10 * context[0]


def test_bad_options_are_refused_with_the_reason():
    image, mask = _disc(5)
    with pytest.raises(ValueError, match="nodule_view needs masks"):
        patch_inputs(image[None], nodule_view=0.5)
    with pytest.raises(ValueError, match="nodule_view must be in"):
        patch_inputs(image[None], mask[None], nodule_view=1.5)
    with pytest.raises(ValueError, match="low < high"):
        patch_inputs(image[None], mask[None], extra_windows=[(100.0, -100.0)])
