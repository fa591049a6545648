"""Segmentation metrics, training patches (lunglib.training.sampling), sliding-window inference and
nodule candidates (lunglib.inference)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from lunglib.evaluation.segmentation import dice, hausdorff95, iou, score_cases, summarize
from lunglib.inference import find_candidates, predict_volume
from lunglib.preprocess import extract_patch
from lunglib.training.sampling import sample_patches


def sphere(shape, centre_zyx, radius_mm, spacing) -> np.ndarray:
    """Voxels whose centres lie within ``radius_mm`` of ``centre_zyx`` (voxel index)."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre_zyx, spacing, strict=True))
    return dist2 <= radius_mm**2


# --------------------------------------------------------------------------------------------
# Metrics


def test_dice_and_iou_of_identical_disjoint_and_half_overlapping_masks():
    a = np.zeros((10, 10), bool)
    a[2:6, 2:6] = True
    b = np.zeros_like(a)
    b[6:9, 6:9] = True
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, b) == 0.0 and iou(a, b) == 0.0
    c = np.zeros_like(a)
    c[2:6, 4:8] = True  # 8 of 16 voxels shared
    assert dice(a, c) == pytest.approx(2 * 8 / 32)
    assert iou(a, c) == pytest.approx(8 / 24)


def test_empty_masks_follow_the_documented_convention():
    empty = np.zeros((5, 5))
    full = np.ones((5, 5))
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, full) == 0.0
    assert hausdorff95(empty, empty) == 0.0
    assert np.isnan(hausdorff95(empty, full))
    with pytest.raises(ValueError, match="same shape"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))


def test_hausdorff95_is_the_shift_in_mm_along_the_shifted_axis():
    spacing = (2.5, 0.7, 0.7)
    a = sphere((30, 60, 60), (15, 30, 30), 8.0, spacing)
    b = np.roll(a, 3, axis=0)  # shifted by 3 slices = 7.5 mm
    assert hausdorff95(a, a, spacing) == 0.0
    hd = hausdorff95(a, b, spacing)
    assert 2.5 < hd <= 7.5 + 1e-6
    # the same shift in-plane is 3 x 0.7 mm
    assert hausdorff95(a, np.roll(a, 3, axis=2), spacing) <= 2.1 + 1e-6


def test_summary_averages_patients_before_the_cohort():
    t = np.zeros((3, 4, 4), bool)
    t[:, 1:3, 1:3] = True
    p = t.copy()
    p[2] = False  # patient B's second case missed entirely
    scores = score_cases(t, p, ["A", "B", "B"])
    table = summarize(scores)
    assert table.loc["per_case", "dice"] == pytest.approx(2 / 3)
    assert table.loc["per_case_id", "dice"] == pytest.approx((1.0 + 0.5) / 2)
    assert table.loc["per_case", "hd95_undefined"] == 1


# --------------------------------------------------------------------------------------------
# Candidates


@pytest.mark.parametrize("radius_mm", [5.0, 9.0])
def test_candidate_volume_and_diameter_of_a_sphere_at_anisotropic_spacing(radius_mm):
    spacing = (1.25, 0.6, 0.6)
    shape = (40, 64, 64)
    ball = sphere(shape, (20, 31.5, 30), radius_mm, spacing)
    prob = np.where(ball, 0.9, 0.05).astype(np.float32)
    table = find_candidates(prob, spacing)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["volume_mm3"] == pytest.approx(4 / 3 * np.pi * radius_mm**3, rel=0.04)
    assert abs(row["diameter_mm"] - 2 * radius_mm) < max(spacing)
    assert (row["centroid_z"], row["centroid_y"], row["centroid_x"]) == pytest.approx(
        (20, 31.5, 30), abs=0.05)
    assert row["peak_prob"] == pytest.approx(0.9)


class _Geometry:
    """A scan-like grid: origin and a flipped x axis, as in a feet-first series."""

    spacing = (2.0, 0.5, 0.5)
    origin = np.array([100.0, -50.0, -300.0])
    direction = np.diag([-1.0, 1.0, 1.0])

    def voxel_to_world(self, zyx):
        ijk = np.asarray(zyx, float)[::-1]
        return self.origin + (self.direction * np.asarray(self.spacing[::-1])) @ ijk


def test_candidates_are_sorted_by_probability_with_world_centroids():
    geometry = _Geometry()
    prob = np.zeros((20, 40, 40), np.float32)
    prob[sphere(prob.shape, (5, 10, 10), 3.0, geometry.spacing)] = 0.6
    prob[sphere(prob.shape, (14, 30, 28), 4.0, geometry.spacing)] = 0.95
    prob[10, 20, 20] = 0.7  # a one-voxel speck, dropped by the size filter
    table = find_candidates(prob, scan=geometry, min_volume_mm3=1.0)
    assert list(table["candidate"]) == [1, 2]
    assert list(table["peak_prob"]) == pytest.approx([0.95, 0.6])
    first = table.iloc[0]
    assert (first["x_mm"], first["y_mm"], first["z_mm"]) == pytest.approx(
        (100.0 - 28 * 0.5, -50.0 + 30 * 0.5, -300.0 + 14 * 2.0), abs=1e-6)
    assert len(find_candidates(prob, scan=geometry)) == 3
    assert find_candidates(np.zeros((4, 4, 4)), (1, 1, 1)).empty
    with pytest.raises(ValueError, match="spacing"):
        find_candidates(prob)


# --------------------------------------------------------------------------------------------
# Patches and inference


def test_extract_patch_pads_outside_the_volume():
    volume = np.arange(5 * 6, dtype=float).reshape(5, 6)
    patch = extract_patch(volume, (0, 5), (3, 4), fill=-1)
    assert patch.shape == (3, 4)
    assert np.all(patch[0] == -1)  # row -1 does not exist
    assert np.array_equal(patch[1:, :3], volume[0:2, 3:6])
    assert np.all(patch[:, 3] == -1)


def test_sample_patches_centres_positives_on_nodules_and_negatives_in_lung():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(30, 60, 60)).astype(np.float32)
    nodules = np.zeros(image.shape, np.int16)
    nodules[sphere(image.shape, (10, 15, 15), 3, (1, 1, 1))] = 1
    nodules[sphere(image.shape, (20, 45, 40), 2, (1, 1, 1))] = 2
    lung = np.zeros(image.shape, np.uint8)
    lung[5:25, 5:55, 5:30] = 1
    images, masks = sample_patches(image, nodules, lung, (8, 16, 16), n_pos=20, n_neg=10,
                                   rng=1, jitter=(1, 2, 2))
    assert images.shape == masks.shape == (30, 8, 16, 16)
    assert set(np.unique(masks)) <= {0, 1}
    # the jitter keeps every nodule's centre inside its positive patch
    assert all(m[4 - 1:4 + 2, 8 - 2:8 + 3, 8 - 2:8 + 3].any() for m in masks[:20])
    # negatives lie in the lung box, far from the second nodule
    assert masks[20:].sum() < masks[:20].sum()
    again = sample_patches(image, nodules, lung, (8, 16, 16), 20, 10, rng=1, jitter=(1, 2, 2))
    assert np.array_equal(again[0], images)
    with pytest.raises(ValueError, match="patch_shape"):
        sample_patches(image, nodules, lung, (16,), 1, 1)
    with pytest.raises(ValueError, match="lung_mask is empty"):
        sample_patches(image, nodules, np.zeros_like(lung), (8, 16, 16), 1, 1)


def test_planar_patches_from_a_volume_cover_every_slice_of_a_nodule():
    image = np.zeros((20, 40, 40), np.float32)
    nodules = np.zeros(image.shape, np.uint8)
    nodules[sphere(image.shape, (10, 20, 20), 4, (1, 1, 1))] = 1
    lung = np.ones(image.shape, np.uint8)
    images, masks = sample_patches(image, nodules, lung, (16, 16), n_pos=200, n_neg=0, rng=0)
    assert images.shape == masks.shape == (200, 16, 16)
    # centres are random nodule voxels, so slices off the middle (area 49) appear too: the
    # cross-section 3 slices from the centre has 21 voxels
    areas = masks.reshape(200, -1).sum(axis=1)
    assert areas.max() == 49
    assert areas.min() <= 21
    assert len(set(areas.tolist())) >= 4
    assert np.all(areas > 0)


def test_slice_window_rounds_the_lung_box_up():
    from lunglib.inference import slice_window

    lung = np.zeros((5, 100, 90), np.uint8)
    lung[1:4, 10:61, 20:53] = 1  # 51 x 33, grown by 2 on each side: 55 x 37
    assert slice_window(lung, multiple=8, margin=2) == (56, 40)


class _VoxelwiseModel:
    """A fixed voxelwise function (sigmoid of the input), so every window agrees at a voxel."""

    def __init__(self):
        self.calls = 0

    def predict(self, batch, batch_size=16, verbose=0):
        self.calls += 1
        return 1.0 / (1.0 + np.exp(-batch))


@pytest.mark.parametrize("patch_shape", [(16, 16), (8, 16, 16)])
def test_sliding_window_covers_the_lung_box_and_nothing_else(patch_shape):
    rng = np.random.default_rng(3)
    image = rng.normal(size=(20, 50, 45)).astype(np.float32)
    lung = np.zeros(image.shape, np.uint8)
    lung[3:15, 10:41, 5:30] = 1
    model = _VoxelwiseModel()
    prob = predict_volume(model, image, lung, patch_shape, batch_size=7, margin=2,
                          clip_to_lung=False)
    expected = 1.0 / (1.0 + np.exp(-image))
    box = (slice(1, 17), slice(8, 43), slice(3, 32)) if len(patch_shape) == 3 else (
        slice(3, 15), slice(8, 43), slice(3, 32))
    inside = np.zeros(image.shape, bool)
    inside[box] = True
    np.testing.assert_allclose(prob[inside], expected[inside], rtol=1e-5)
    assert np.all(prob[~inside] == 0)
    assert model.calls > 1


def test_probabilities_outside_the_grown_lung_mask_are_zero():
    image = np.full((10, 40, 40), 3.0, np.float32)
    lung = np.zeros(image.shape, np.uint8)
    lung[2:8, 5:35, 5:12] = 1  # two "lungs" with a gap between them
    lung[2:8, 5:35, 28:35] = 1
    prob = predict_volume(_VoxelwiseModel(), image, lung, (16, 16), margin=1)
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    grown = ndimage.binary_dilation(lung, in_plane, iterations=1)
    assert np.all(prob[grown] > 0.9)
    assert np.all(prob[~grown] == 0)
    assert prob[5, 20, 20] == 0  # the gap (mediastinum) inside the lung box


def test_sliding_window_pads_a_box_smaller_than_the_patch():
    image = np.full((4, 10, 10), 2.0, np.float32)
    prob = predict_volume(_VoxelwiseModel(), image, None, (8, 16, 16))
    np.testing.assert_allclose(prob, 1.0 / (1.0 + np.exp(-2.0)), rtol=1e-6)
    with pytest.raises(ValueError, match="patch_shape"):
        predict_volume(_VoxelwiseModel(), image, None, (16,))


def test_candidates_recover_a_nodule_found_by_the_sliding_window():
    """End to end without a network: a bright ball through predict_volume and find_candidates."""
    spacing = (1.5, 0.8, 0.8)
    ball = sphere((24, 48, 48), (12, 20, 26), 6.0, spacing)
    image = np.where(ball, 6.0, -6.0).astype(np.float32)
    prob = predict_volume(_VoxelwiseModel(), image, ndimage.binary_dilation(ball, iterations=5),
                          (8, 16, 16))
    table = find_candidates(prob, spacing)
    assert len(table) == 1
    assert table.loc[0, "volume_mm3"] == pytest.approx(ball.sum() * np.prod(spacing))


# --------------------------------------------------------------------------------------------
# 2.5D input, hard negatives, component filtering, per-nodule scores


def test_context_patches_carry_the_neighbouring_slices_as_channels():
    # every voxel of slice z holds the value z, so a channel tells which slice it came from
    image = np.broadcast_to(np.arange(12, dtype=np.float32)[:, None, None], (12, 20, 20)).copy()
    nodules = np.zeros(image.shape, np.uint8)
    nodules[0:2, 8:12, 8:12] = 1  # touches the first slice: neighbours below are padding
    lung = np.ones(image.shape, np.uint8)
    images, masks = sample_patches(image, nodules, lung, (8, 8), n_pos=40, n_neg=40, rng=0,
                                   context=2, fill=-1.0)
    assert images.shape == (80, 8, 8, 5) and masks.shape == (80, 8, 8)
    centre = images[:, 4, 4, 2]
    for k, offset in enumerate((-2, -1, 0, 1, 2)):
        expected = np.where((centre + offset >= 0) & (centre + offset < 12), centre + offset, -1)
        np.testing.assert_array_equal(images[:, 4, 4, k], expected)
    # the mask is that of the centre slice: positives (centred on slices 0-1) show the nodule
    assert all(masks[i].any() for i in range(40))
    assert not any(m.any() for m, z in zip(masks, centre, strict=True) if z >= 2)
    assert set(centre[:40].tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="context"):
        sample_patches(image, nodules, lung, (4, 8, 8), 1, 1, context=1)


def test_hard_negatives_sit_on_bright_lung_voxels_away_from_nodules():
    rng = np.random.default_rng(1)
    image = rng.uniform(0.0, 0.2, size=(20, 40, 40)).astype(np.float32)
    image[:, 30, 5:35] = 1.0  # a "vessel" running through every slice
    nodules = np.zeros(image.shape, np.uint8)
    nodules[sphere(image.shape, (10, 10, 10), 3, (1, 1, 1))] = 1
    image[nodules > 0] = 1.0  # as bright as the vessel, but must not be a negative centre
    lung = np.ones(image.shape, np.uint8)
    _, masks = sample_patches(image, nodules, lung, (9, 9), n_pos=0, n_neg=30, rng=2,
                              hard_fraction=1.0, hard_level=0.9)
    images, _ = sample_patches(image, nodules, lung, (9, 9), n_pos=0, n_neg=30, rng=2,
                               hard_fraction=1.0, hard_level=0.9)
    assert np.all(images[:, 4, 4] == 1.0)  # every centre is on the vessel...
    assert masks.sum() == 0  # ...and none on (or next to) the nodule
    random_centres, _ = sample_patches(image, nodules, lung, (9, 9), 0, 30, rng=2)
    assert np.mean(random_centres[:, 4, 4] == 1.0) < 0.2
    half, _ = sample_patches(image, nodules, lung, (9, 9), 0, 30, rng=3, hard_fraction=0.5,
                             hard_level=0.9)
    assert 15 <= np.sum(half[:, 4, 4] == 1.0) < 30
    with pytest.raises(ValueError, match="hard_fraction"):
        sample_patches(image, nodules, lung, (9, 9), 0, 3, hard_fraction=1.5)


class _ChannelMeanModel:
    """Sigmoid of the mean over input channels: a 2.5D model whose output shows its input."""

    def predict(self, batch, batch_size=16, verbose=0):
        return batch.mean(axis=-1, keepdims=True)


def test_sliding_window_with_context_sees_the_neighbouring_slices():
    rng = np.random.default_rng(4)
    image = rng.normal(size=(16, 30, 30)).astype(np.float32)
    lung = np.zeros(image.shape, np.uint8)
    lung[1:10, 5:25, 5:25] = 1  # slice 0 exists below the box, slices 10.. above it
    prob = predict_volume(_ChannelMeanModel(), image, lung, (16, 16), margin=0, context=2,
                          fill=-7.0, clip_to_lung=False)
    fill = np.full((2, 30, 30), -7.0, np.float32)
    padded = np.concatenate([fill, image, fill])
    expected = np.stack([padded[z:z + 5].mean(axis=0) for z in range(16)])
    box = (slice(1, 10), slice(5, 25), slice(5, 25))
    np.testing.assert_allclose(prob[box], expected[box], rtol=1e-5, atol=1e-6)
    assert np.all(prob[10:] == 0) and np.all(prob[0] == 0)
    with pytest.raises(ValueError, match="context"):
        predict_volume(_ChannelMeanModel(), image, lung, (4, 16, 16), context=1)


def test_context_step_spaces_the_channels_a_fixed_number_of_slices_apart():
    from lunglib.inference import context_step_for

    assert [context_step_for(t, 2.5) for t in (1.0, 1.25, 2.0, 2.5, 3.0)] == [2, 2, 1, 1, 1]
    assert context_step_for(1.25, None) == 1 and context_step_for(1.25, 0) == 1
    image = np.broadcast_to(np.arange(20, dtype=np.float32)[:, None, None], (20, 16, 16)).copy()
    nodules = np.zeros(image.shape, np.uint8)
    nodules[9:11, 6:10, 6:10] = 1
    lung = np.ones(image.shape, np.uint8)
    images, masks = sample_patches(image, nodules, lung, (8, 8), n_pos=20, n_neg=20, rng=0,
                                   context=2, context_step=3, fill=-1.0)
    assert images.shape == (40, 8, 8, 5)
    centre = images[:, 4, 4, 2]
    for k, offset in enumerate((-6, -3, 0, 3, 6)):
        expected = np.where((centre + offset >= 0) & (centre + offset < 20), centre + offset, -1)
        np.testing.assert_array_equal(images[:, 4, 4, k], expected)
    assert all(masks[i].any() for i in range(20))  # the mask is still the centre slice's
    # inference gives each slice the same neighbours: a model that returns its first channel
    # returns the slice 2 steps below
    lung[:] = 0
    lung[4:15, 2:14, 2:14] = 1
    prob = predict_volume(_FirstChannelModel(), image, lung, (8, 8), margin=0, context=2,
                          context_step=3, fill=-1.0, clip_to_lung=False)
    z = np.arange(4, 15)
    np.testing.assert_array_equal(prob[4:15, 8, 8], np.where(z - 6 >= 0, z - 6, -1))
    with pytest.raises(ValueError, match="context_step"):
        predict_volume(_FirstChannelModel(), image, lung, (8, 8), context=2, context_step=0)


class _FirstChannelModel:
    def predict(self, batch, batch_size=16, verbose=0):
        return batch[..., :1]


def test_candidate_mask_drops_components_below_the_minimum_volume():
    from lunglib.inference import candidate_mask

    spacing = (2.0, 1.0, 1.0)
    big = sphere((20, 40, 40), (10, 12, 12), 5.0, spacing)
    small = sphere((20, 40, 40), (10, 30, 30), 1.5, spacing)
    prob = np.where(big | small, 0.9, 0.1).astype(np.float32)
    assert np.array_equal(candidate_mask(prob, spacing, 0.5), big | small)
    kept = candidate_mask(prob, spacing, 0.5, min_volume_mm3=small.sum() * 2.0 + 1)
    assert np.array_equal(kept, big)
    table = find_candidates(prob, spacing, threshold=0.5, min_volume_mm3=small.sum() * 2.0 + 1)
    assert table.n_voxels.sum() == kept.sum()
    assert not candidate_mask(prob, spacing, 0.95).any()


def test_per_nodule_scores_ignore_false_positives_far_away():
    from lunglib.evaluation.segmentation import score_nodules

    labels = np.zeros((20, 60, 60), np.int16)
    labels[sphere(labels.shape, (10, 15, 15), 4, (1, 1, 1))] = 1
    labels[sphere(labels.shape, (10, 45, 45), 3, (1, 1, 1))] = 2
    pred = labels == 1  # nodule 1 exact, nodule 2 missed
    pred[2:6, 50:58, 2:10] = True  # a false positive far from both
    table = score_nodules(labels, pred, "A", spacing=(1, 1, 1))
    assert table.nodule.tolist() == [1, 2]
    assert table.dice.tolist() == [1.0, 0.0]
    assert table.true_voxels.tolist() == [int((labels == 1).sum()), int((labels == 2).sum())]
    assert dice(labels > 0, pred) < 0.6  # the whole-scan score sees both errors
    empty = score_nodules(np.zeros_like(labels), pred, "B")
    assert empty.empty
    both = pd.concat([table, empty], ignore_index=True)
    assert both.dice.dtype == float and both.nodule.dtype.kind == "i"


def test_postprocessing_is_chosen_by_whole_scan_dice():
    from lunglib.evaluation.segmentation import choose_postprocessing

    spacing = (1.0, 1.0, 1.0)
    shape = (20, 40, 40)
    truth = sphere(shape, (10, 12, 12), 5.0, spacing)
    prob = np.where(truth, 0.8, 0.0).astype(np.float32)
    prob[2:16, 25:38, 25:38] = 0.4  # a large faint false region: a low threshold takes it
    prob[sphere(shape, (10, 30, 8), 1.5, spacing)] = 0.95  # a small confident false blob
    table = choose_postprocessing([prob], [truth], [spacing], thresholds=(0.3, 0.5, 0.9),
                                  min_volumes_mm3=(0.0, 50.0))
    assert len(table) == 6
    best = table.iloc[0]
    assert (best.threshold, best.min_volume_mm3) == (0.5, 50.0)
    assert best.dice == pytest.approx(1.0)
    assert table.dice.is_monotonic_decreasing
    # at 0.9 only the blob survives (Dice 0), and the volume filter leaves nothing (Dice 0)
    assert table[table.threshold == 0.9].dice.max() == 0.0
    with pytest.raises(ValueError, match="same, non-zero length"):
        choose_postprocessing([prob], [], [spacing])


def test_postprocessing_search_scores_the_masks_candidate_mask_makes():
    # The search scores each grid point from per-component counts; the Dice must be the one of
    # candidate_mask's own mask, patient by patient, for every threshold, volume and peak.
    from scipy import ndimage

    from lunglib.evaluation.segmentation import choose_postprocessing, dice
    from lunglib.inference import candidate_mask

    rng = np.random.default_rng(3)
    probs, truths, spacings = [], [], []
    for k in range(3):
        noise = ndimage.gaussian_filter(rng.random((12, 30, 30)), 1.5)
        prob = ((noise - noise.min()) / np.ptp(noise)).astype(np.float32)
        probs.append(prob)
        truths.append(prob > 0.7 + 0.05 * k if k < 2 else np.zeros(prob.shape, bool))
        spacings.append((2.0, 0.8 + 0.1 * k, 0.8 + 0.1 * k))
    grid = {"thresholds": (0.4, 0.6, 0.9), "min_volumes_mm3": (0.0, 5.0, 40.0),
            "min_peaks": (0.0, 0.85, 0.95)}
    table = choose_postprocessing(probs, truths, spacings, **grid)
    assert len(table) == 3 * 3 * 3 - 3  # peak 0.85 <= threshold 0.9 is no filter: skipped
    for row in table.itertuples():
        expected = np.mean([dice(t, candidate_mask(p, s, row.threshold, row.min_volume_mm3,
                                                   min_peak=row.min_peak))
                            for p, t, s in zip(probs, truths, spacings, strict=True)])
        assert row.dice == pytest.approx(expected, abs=1e-12), row
    assert table.dice.nunique() > 3  # the grid points really differ


class _LeftHalfModel:
    """Fires on the left half of every window, whatever it shows: not mirror-symmetric."""

    def predict(self, batch, batch_size=16, verbose=0):
        out = np.zeros((*batch.shape[:-1], 1), np.float32)
        out[..., : batch.shape[-2] // 2, :] = 1.0
        return out


@pytest.mark.parametrize("patch_shape", [(8, 8), (3, 8, 8)])
def test_flip_averages_each_window_with_its_left_right_mirror(patch_shape):
    image = np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32)
    plain = predict_volume(_LeftHalfModel(), image, None, patch_shape, clip_to_lung=False)
    assert plain[..., :4].min() == 1.0 and plain[..., 4:].max() == 0.0
    flipped = predict_volume(_LeftHalfModel(), image, None, patch_shape, clip_to_lung=False,
                             flip=True)
    np.testing.assert_allclose(flipped, 0.5)
    # a model that commutes with the mirror (voxel-wise) gives the same map either way
    kw = {"clip_to_lung": False, "context": 0}
    np.testing.assert_allclose(
        predict_volume(_FirstChannelModel(), image, None, patch_shape, flip=True, **kw),
        predict_volume(_FirstChannelModel(), image, None, patch_shape, **kw), atol=1e-6)


def test_min_peak_drops_faint_candidates_grown_from_the_same_threshold():
    from lunglib.inference import candidate_mask

    spacing = (2.0, 1.0, 1.0)
    confident = sphere((20, 40, 40), (10, 12, 12), 5.0, spacing)
    faint = sphere((20, 40, 40), (10, 28, 28), 6.0, spacing)
    prob = np.where(confident | faint, 0.7, 0.1).astype(np.float32)
    prob[10, 12, 12] = 0.97  # one confident voxel: the peak of the first component only
    np.testing.assert_array_equal(candidate_mask(prob, spacing, 0.5, min_peak=0.9), confident)
    np.testing.assert_array_equal(candidate_mask(prob, spacing, 0.5), confident | faint)
    table = find_candidates(prob, spacing, threshold=0.5, min_peak=0.9)
    assert table.n_voxels.tolist() == [int(confident.sum())]
    assert table.peak_prob.tolist() == [pytest.approx(0.97)]
    # both filters together: the confident component is too small for this minimum volume
    big = confident.sum() * 2.0 + 1
    assert not candidate_mask(prob, spacing, 0.5, min_volume_mm3=big, min_peak=0.9).any()


def test_postprocessing_grid_with_a_minimum_peak_keeps_a_faint_rim():
    from lunglib.evaluation.segmentation import choose_postprocessing

    spacing = (1.0, 1.0, 1.0)
    shape = (20, 40, 40)
    truth = sphere(shape, (10, 12, 12), 5.0, spacing)
    prob = np.where(truth, 0.6, 0.0).astype(np.float32)  # a faint rim ...
    prob[sphere(shape, (10, 12, 12), 2.5, spacing)] = 0.99  # ... around a confident core
    prob[sphere(shape, (10, 30, 28), 5.0, spacing)] = 0.8  # a false blob as big, never sure
    table = choose_postprocessing([prob], [truth], [spacing], thresholds=(0.5, 0.9),
                                  min_volumes_mm3=(0.0,), min_peaks=(0.0, 0.95))
    assert len(table) == 4
    best = table.iloc[0]
    assert (best.threshold, best.min_peak) == (0.5, 0.95)
    assert best.dice == pytest.approx(1.0)
    # no minimum peak: 0.5 keeps the blob, 0.9 loses the rim
    assert table[table.min_peak == 0.0].dice.max() < 0.9


def test_false_positive_patches_are_cut_where_the_model_fires_off_the_nodules():
    from lunglib.training.sampling import false_positive_patches

    shape = (12, 40, 40)
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    nodules = np.zeros(shape, np.uint8)
    nodules[5:8, 8:12, 8:12] = 1
    prob = np.zeros(shape, np.float32)
    prob[4:9, 7:13, 7:13] = 0.9  # fires on the nodule and its outline: not mined
    prob[6, 30:32, 25:27] = 0.8  # a false positive
    x, y = false_positive_patches(prob, image, nodules, (8, 8), 20, rng=0, context=1)
    assert x.shape == (20, 8, 8, 3) and y.shape == (20, 8, 8)
    # every patch is centred on one of the 4 false-positive voxels, with slices 5-7 as channels
    cuts = [image[5:8, r - 4:r + 4, c - 4:c + 4] for r, c in np.argwhere(prob[6] == 0.8)]
    for patch in x:
        assert any(np.array_equal(np.moveaxis(patch, -1, 0), cut) for cut in cuts)
    assert y.max() == 0
    none, _ = false_positive_patches(np.where(nodules > 0, 0.9, 0.0), image, nodules, (8, 8), 5)
    assert none.shape == (0, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        false_positive_patches(prob[:5], image, nodules, (8, 8), 5)


def test_dihedral_patches_move_each_mask_with_its_image_through_all_eight_orientations():
    from lunglib.augment import dihedral_patches

    rng = np.random.default_rng(3)
    images = rng.normal(size=(400, 6, 6, 3)).astype(np.float32)
    masks = (images[..., 1] > 0.3).astype(np.uint8)  # the mask is a function of the centre slice
    before = images.copy()
    x, y = dihedral_patches(images, masks, rng=0)
    assert x.shape == images.shape and x.dtype == images.dtype
    assert y.shape == masks.shape and y.dtype == masks.dtype
    np.testing.assert_array_equal(images, before)  # the input is left alone
    np.testing.assert_array_equal(y, (x[..., 1] > 0.3).astype(np.uint8))

    def orientations(patch):
        turned = [np.rot90(patch, k, axes=(0, 1)) for k in range(4)]
        return turned + [t[:, ::-1] for t in turned]

    seen = set()
    for original, out in zip(images, x, strict=True):
        matches = [i for i, o in enumerate(orientations(original)) if np.array_equal(o, out)]
        assert len(matches) == 1  # one of the 8 exact orientations, every channel alike
        seen.add(matches[0])
    assert seen == set(range(8))
    # 2D patches with a trailing mask channel work too
    flat = images[..., 0]
    x2, y2 = dihedral_patches(flat, (flat > 0.3).astype(np.uint8)[..., None], rng=1)
    assert not np.array_equal(x2, flat)
    np.testing.assert_array_equal(y2[..., 0], (x2 > 0.3).astype(np.uint8))
    with pytest.raises(ValueError, match="not square"):
        dihedral_patches(np.zeros((2, 4, 6)), np.zeros((2, 4, 6)))
    with pytest.raises(ValueError, match="one"):
        dihedral_patches(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))


def test_component_peaks_are_ndimage_maxima_per_label():
    from scipy import ndimage

    from lunglib.inference.candidates import component_peaks, label_candidates

    rng = np.random.default_rng(3)
    prob = ndimage.gaussian_filter(rng.random((20, 30, 30)), 1.5)
    labels, n = label_candidates(prob, float(np.quantile(prob, 0.9)))
    assert n > 3
    peaks = component_peaks(prob, labels, n)
    np.testing.assert_array_equal(peaks[1:], ndimage.maximum(prob, labels, np.arange(1, n + 1)))
    assert peaks[0] == 0.0 and component_peaks(prob, np.zeros_like(labels), 0).tolist() == [0.0]
