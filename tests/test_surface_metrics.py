"""HD95 and normalised surface Dice against their published definitions, on hand-made masks.

The definitions (MONAI ``compute_hausdorff_distance(percentile=95)`` and ``compute_surface_dice``;
DeepMind ``surface-distance``): the surface of a mask is its voxels with a background
face-neighbour; HD95 is the larger of the two directions' 95th percentiles of surface-to-surface
distances; NSD is the share of both surfaces within the tolerance of the other. Every expected
value below is worked out by hand in the comments, and the pooled-percentile definition (medpy)
gives a different answer on the first case, so these tests fail under it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from lunglib.evaluation.segmentation import (
    DEFAULT_NSD_TOLERANCE_MM,
    hausdorff95,
    score_cases,
    score_nodules,
    summarize,
    surface_dice,
    surface_distances,
)


def square_with_stray_line() -> tuple[np.ndarray, np.ndarray]:
    """``b``: a 10 x 10 square; ``a``: the same square plus a 4-pixel vertical line 11 columns
    to its right (a small false component).

    Surface of the square: its 36 border pixels; of the line: all 4 pixels. So ``a -> b``: 36
    zeros (the square's border is in both surfaces) and 4 distances of 11 (pixel (r, 20) to
    (r, 9)); ``b -> a``: 36 zeros.
    """
    b = np.zeros((12, 24), bool)
    b[0:10, 0:10] = True
    a = b.copy()
    a[3:7, 20] = True
    return a, b


def test_surface_distances_of_the_square_with_a_stray_line() -> None:
    a, b = square_with_stray_line()
    a_to_b, b_to_a = surface_distances(a, b)
    np.testing.assert_array_equal(np.sort(a_to_b), [0.0] * 36 + [11.0] * 4)
    np.testing.assert_array_equal(b_to_a, np.zeros(36))


def test_hd95_takes_each_direction_apart_not_pooled() -> None:
    a, b = square_with_stray_line()
    # a -> b: 40 values, 4 of them 11 (10 %): the 95th percentile (rank 0.95 * 39 = 37.05 of the
    # sorted values, both neighbours 11) is 11; b -> a is 0; the larger: 11.
    assert hausdorff95(a, b) == 11.0
    assert hausdorff95(b, a) == 11.0  # symmetric
    # Pooled (medpy): 76 values, 72 zeros then 4 x 11; rank 0.95 * 75 = 71.25 -> 0.25 * 11 = 2.75
    pooled = np.percentile(np.concatenate(surface_distances(a, b)), 95)
    assert pooled == pytest.approx(2.75)


def test_one_far_voxel_moves_the_maximum_but_not_hd95() -> None:
    # the 10 x 10 square plus one stray pixel 15 columns to its right: a -> b has 36 zeros and one
    # 15; the 95th percentile (rank 0.95 * 36 = 34.2, both neighbours 0) is 0 -- unlike the
    # maximum (Hausdorff, 15) and the mean surface distance (15 / 37) -- and b -> a is all 0
    b = np.zeros((12, 30), bool)
    b[0:10, 0:10] = True
    a = b.copy()
    a[5, 24] = True
    a_to_b, b_to_a = surface_distances(a, b)
    assert a_to_b.max() == 15.0 and a_to_b.mean() == pytest.approx(15 / 37)
    assert hausdorff95(a, b) == 0.0
    # three far pixels of 39 (8 %): the 95th percentile (rank 36.1) reaches them: 15
    a[4:7, 24] = True
    assert hausdorff95(a, b) == 15.0


def test_hd95_at_anisotropic_spacing() -> None:
    a, b = square_with_stray_line()
    # rows 2 mm, columns 0.5 mm: the line is 11 columns = 5.5 mm from the square; any other
    # square pixel is at least one row (2 mm) off as well, so farther.
    assert hausdorff95(a, b, spacing=(2.0, 0.5)) == pytest.approx(5.5)
    # and swapping the spacing: 11 columns x 2 mm
    assert hausdorff95(a, b, spacing=(0.5, 2.0)) == pytest.approx(22.0)


def test_hd95_of_a_cube_shifted_by_one_thin_slice_is_the_slice() -> None:
    # A 6^3 cube and the same cube one slice further along axis 0, slices 0.5 mm, pixels 1 mm.
    # Surface of each cube: 6^3 - 4^3 = 152 voxels. From a to b: the 36 voxels of a's first
    # slice are one slice (0.5 mm) from b's; the 16 inner voxels of a's last slice are 0.5 mm
    # from b's last slice (b's side faces are >= 1 mm away); the 100 side voxels of slices 1-5
    # lie on b's sides (0 mm). 52 of 152 at 0.5 mm (34 %) -> 95th percentile 0.5; by symmetry
    # the same from b to a.
    a = np.zeros((10, 8, 8), bool)
    a[1:7, 1:7, 1:7] = True
    b = np.roll(a, 1, axis=0)
    a_to_b, b_to_a = surface_distances(a, b, spacing=(0.5, 1.0, 1.0))
    assert a_to_b.size == b_to_a.size == 152
    assert np.count_nonzero(a_to_b == 0.5) == 52 and np.count_nonzero(a_to_b == 0.0) == 100
    assert hausdorff95(a, b, spacing=(0.5, 1.0, 1.0)) == 0.5
    # within 0.5 mm everything agrees, within 0.4 mm only the 100 side voxels of each
    assert surface_dice(a, b, 0.5, spacing=(0.5, 1.0, 1.0)) == 1.0
    assert surface_dice(a, b, 0.4, spacing=(0.5, 1.0, 1.0)) == pytest.approx(200 / 304)


def shifted_squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 6 x 6 squares, the second 3 columns to the right (18 of 36 pixels shared).

    From the first square's 20 border pixels to the second's border (unit spacing): top row
    (columns 2..7) 3, 2, 1, 0, 0, 0; bottom row the same; left column (rows 3..6) 3 each (the
    second's left side); right column (rows 3..6) 1, 2, 2, 1 (the second's top or bottom row is
    nearer than its left side, 2 columns away, for the rows next to them). By mirror symmetry
    the same from the second to the first.
    """
    a = np.zeros((10, 13), bool)
    a[2:8, 2:8] = True
    b = np.zeros_like(a)
    b[2:8, 5:11] = True
    return a, b


def test_surface_distances_of_shifted_squares() -> None:
    a, b = shifted_squares()
    expected = sorted([3, 2, 1, 0, 0, 0] * 2 + [3] * 4 + [1, 2, 2, 1])
    a_to_b, b_to_a = surface_distances(a, b)
    np.testing.assert_array_equal(np.sort(a_to_b), expected)
    np.testing.assert_array_equal(np.sort(b_to_a), expected)
    assert hausdorff95(a, b) == 3.0  # 6 of the 20 values are 3: the shift


def test_surface_dice_of_shifted_squares_beyond_the_tolerance() -> None:
    a, b = shifted_squares()
    # within 1 pixel: top and bottom rows 4 each, right column 2 -> 10 of 20, both ways
    assert surface_dice(a, b, tolerance_mm=1.0) == pytest.approx(20 / 40)
    # within 2: the 6 values of 3 are out -> 14 of 20
    assert surface_dice(a, b, tolerance_mm=2.0) == pytest.approx(28 / 40)
    assert surface_dice(a, b, tolerance_mm=3.0) == 1.0  # a distance equal to the tolerance counts
    assert surface_dice(a, b, tolerance_mm=0.0) == pytest.approx(12 / 40)  # the shared pixels


def test_surface_dice_at_anisotropic_spacing() -> None:
    a, b = shifted_squares()
    # rows 1 mm, columns 0.4 mm (the shift is 1.2 mm): top row 1.2, 0.8, 0.4, 0, 0, 0; left
    # column 1.2 (the second's left side); right column 0.8 (its left side, 2 columns, nearer
    # than its top or bottom row for every row). Within 1 mm: 5 + 5 + 0 + 4 = 14 of 20.
    assert surface_dice(a, b, tolerance_mm=1.0, spacing=(1.0, 0.4)) == pytest.approx(28 / 40)
    assert hausdorff95(a, b, spacing=(1.0, 0.4)) == pytest.approx(1.2)


def test_surface_dice_of_the_square_with_a_stray_line() -> None:
    a, b = square_with_stray_line()
    # 36 + 36 of the 40 + 36 surface pixels agree; the line (11 px away) does not
    assert surface_dice(a, b, tolerance_mm=1.0) == pytest.approx(72 / 76)
    assert surface_dice(a, b, tolerance_mm=11.0) == 1.0


def test_identical_and_empty_masks_follow_the_documented_conventions() -> None:
    a, _ = shifted_squares()
    empty = np.zeros_like(a)
    assert surface_dice(a, a, 0.0) == 1.0 and hausdorff95(a, a) == 0.0
    assert surface_dice(empty, empty) == 1.0  # chosen (MONAI gives nan), as Dice
    assert surface_dice(a, empty) == 0.0 and surface_dice(empty, a) == 0.0
    assert hausdorff95(empty, empty) == 0.0 and np.isnan(hausdorff95(a, empty))
    a_to_empty, empty_to_a = surface_distances(a, empty)
    assert a_to_empty.size == 20 and np.isinf(a_to_empty).all() and empty_to_a.size == 0
    with pytest.raises(ValueError, match="tolerance"):
        surface_dice(a, a, tolerance_mm=-1.0)
    with pytest.raises(ValueError, match="spacing"):
        surface_distances(a, a, spacing=(1.0,))


def test_surface_distances_match_a_brute_force_reference() -> None:
    # The definition written out with no distance transform: the surface voxels (a foreground
    # voxel with a background face-neighbour or on the border), then the nearest pairwise
    # distance in mm.
    def surface_points(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        inner = padded[1:-1, 1:-1, 1:-1]
        touching_background = np.zeros_like(mask)
        for axis in range(3):
            for step in (-1, 1):
                touching_background |= ~np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(inner & touching_background)

    rng = np.random.default_rng(0)
    spacing = np.array([2.5, 0.7, 0.9])
    for _ in range(5):
        a = rng.random((6, 9, 8)) < 0.4
        b = rng.random((6, 9, 8)) < 0.3
        pa, pb = surface_points(a) * spacing, surface_points(b) * spacing
        pairwise = cdist(pa, pb)
        a_to_b, b_to_a = surface_distances(a, b, spacing)
        np.testing.assert_allclose(a_to_b, pairwise.min(axis=1))  # both in C order
        np.testing.assert_allclose(b_to_a, pairwise.min(axis=0))
        expected = max(np.percentile(pairwise.min(axis=1), 95),
                       np.percentile(pairwise.min(axis=0), 95))
        assert hausdorff95(a, b, spacing) == pytest.approx(expected)
        within = (pairwise.min(axis=1) <= 1.0).sum() + (pairwise.min(axis=0) <= 1.0).sum()
        assert surface_dice(a, b, 1.0, spacing) == pytest.approx(within / sum(pairwise.shape))


def test_score_cases_and_summaries_carry_nsd() -> None:
    a, b = shifted_squares()
    table = score_cases([a, a, b], [b, a, np.zeros_like(b)], ["P1", "P1", "P2"])
    assert list(table.columns) == ["case_id", "dice", "iou", "hd95_mm", "nsd", "true_voxels",
                                   "pred_voxels"]
    np.testing.assert_allclose(table["nsd"], [20 / 40, 1.0, 0.0])  # default tolerance 1
    assert DEFAULT_NSD_TOLERANCE_MM == 1.0
    wider = score_cases([a], [b], ["P1"], nsd_tolerance_mm=2.0)
    assert wider["nsd"].iloc[0] == pytest.approx(28 / 40)
    # spacing scales the distances, the tolerance stays in mm
    finer = score_cases([a], [b], ["P1"], spacings=[(1.0, 0.4)])
    assert finer["nsd"].iloc[0] == pytest.approx(28 / 40)
    assert finer["hd95_mm"].iloc[0] == pytest.approx(1.2)
    summary = summarize(table)
    assert summary.loc["per_case", "nsd"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert summary.loc["per_case_id", "nsd"] == pytest.approx((0.75 + 0.0) / 2)
    # tables without nsd (made before it existed) still summarise
    old = table.drop(columns="nsd")
    assert "nsd" not in summarize(old).columns


def test_score_nodules_has_nsd_per_nodule() -> None:
    labels = np.zeros((5, 20, 30), int)
    labels[1:4, 2:8, 2:8] = 1
    labels[1:4, 10:16, 18:24] = 2
    pred = np.zeros(labels.shape, bool)
    pred[1:4, 2:8, 2:8] = True  # nodule 1 exactly
    pred[1:4, 10:16, 21:27] = True  # nodule 2 shifted by 3 columns
    table = score_nodules(labels, pred, "P1", spacing=(1.0, 1.0, 1.0), margin=(1, 4, 4))
    assert table["nsd"].dtype == float
    assert table.loc[0, "nsd"] == 1.0
    # the box cuts nothing of nodule 2 or its prediction, and leaves nodule 1 out
    expected = surface_dice(labels == 2, pred & (labels != 1), 1.0)
    assert table.loc[1, "nsd"] == pytest.approx(expected) and expected < 0.8
    empty = score_nodules(np.zeros_like(labels), pred, "P2")
    assert list(empty.columns) == list(table.columns) and len(empty) == 0
    assert pd.concat([table, empty])["nsd"].dtype == float
