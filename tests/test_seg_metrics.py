"""Split-level ("global") Dice and IoU, beside the per-case mean."""

from __future__ import annotations

import numpy as np
import pytest

from lunglib.evaluation.segmentation import (
    BINARIZATION_THRESHOLDS,
    binarize,
    central_component,
    choose_binarization,
    dice,
    dice_global,
    error_breakdown,
    iou,
    iou_global,
    score_nodules,
)


def _cases():
    """A scan with a 2x2x2 nodule of which 6 voxels are found, and a healthy scan with 2 FPs."""
    nodule = np.zeros((4, 6, 6), bool)
    nodule[1:3, 2:4, 2:4] = True  # 8 voxels
    found = nodule.copy()
    found[2, 3, 2:4] = False  # 6 of them predicted, nothing else
    healthy = np.zeros((3, 5, 7), bool)  # another shape: scans need not match
    false_pos = healthy.copy()
    false_pos[0, 0, :2] = True
    return [nodule, healthy], [found, false_pos]


def test_global_dice_pools_voxels_while_the_per_case_mean_weighs_patients():
    truths, preds = _cases()
    per_case = [dice(t, p) for t, p in zip(truths, preds, strict=True)]
    assert per_case == pytest.approx([2 * 6 / (8 + 6), 0.0])
    # pooled: 6 shared voxels, 8 true, 6 + 2 predicted
    assert dice_global(truths, preds) == pytest.approx(2 * 6 / (8 + 8))
    assert iou_global(truths, preds) == pytest.approx(6 / (8 + 8 - 6))
    assert dice_global(truths, preds) > np.mean(per_case)


def test_global_dice_equals_the_dice_of_the_scans_laid_side_by_side():
    rng = np.random.default_rng(0)
    truths = [rng.random((5, 8, 8)) > 0.7, rng.random((5, 8, 8)) > 0.9]
    preds = [rng.random((5, 8, 8)) > 0.6, np.zeros((5, 8, 8), bool)]
    side_by_side = (np.concatenate(truths), np.concatenate(preds))
    assert dice_global(truths, preds) == pytest.approx(dice(*side_by_side))
    assert iou_global(truths, preds) == pytest.approx(iou(*side_by_side))
    # one case alone is its own Dice
    assert dice_global(truths[:1], preds[:1]) == pytest.approx(dice(truths[0], preds[0]))


def test_global_dice_of_empty_splits_and_bad_input():
    empty = [np.zeros((2, 3, 3)), np.zeros((1, 2, 2))]
    assert dice_global(empty, empty) == 1.0 and iou_global(empty, empty) == 1.0
    truths, preds = _cases()
    with pytest.raises(ValueError, match="case 1: masks must have the same shape"):
        dice_global(truths, [preds[0], np.zeros((3, 5, 6))])
    with pytest.raises(ValueError, match="one prediction per case"):
        dice_global(truths, preds[:1])
    with pytest.raises(ValueError, match="at least one case"):
        dice_global([], [])


def test_error_breakdown_separates_missed_nodules_outlines_and_false_candidates():
    labels = np.zeros((6, 20, 20), np.int16)
    labels[2:4, 2:5, 2:5] = 1  # 18 voxels, found with a one-column-short outline
    labels[2:4, 12:14, 12:14] = 2  # 8 voxels, missed
    pred = labels == 1
    pred[2:4, 2:5, 4] = False  # 6 voxels of nodule 1 missed
    pred[2:4, 2:5, 1] = True  # 6 false voxels glued to nodule 1
    pred[0, 17:19, 17:19] = True  # a false candidate of 4 voxels
    found = error_breakdown(labels, pred, "A")
    assert found == {"case_id": "A", "tp": 12, "fn_missed": 8, "fn_outline": 6,
                     "fp_outline": 6, "fp_elsewhere": 4, "nodules": 2, "nodules_found": 1,
                     "false_components": 1}
    fn = found["fn_missed"] + found["fn_outline"]
    fp = found["fp_outline"] + found["fp_elsewhere"]
    assert 2 * found["tp"] / (2 * found["tp"] + fn + fp) == pytest.approx(dice(labels, pred))
    healthy = error_breakdown(np.zeros_like(labels), pred > 0)
    assert healthy["nodules"] == 0 and healthy["false_components"] == 2
    assert healthy["fp_elsewhere"] == int(pred.sum())


def test_per_nodule_scores_keep_a_nodule_in_pieces_whole_and_neighbours_out():
    labels = np.zeros((8, 30, 30), np.int16)
    labels[2:6, 5:15, 5:15] = 1  # a large nodule...
    labels[3, 16, 10] = 1  # ...and a detached piece of it (a spicule): still nodule 1
    labels[3, 18:20, 10] = 2  # a 2-voxel nodule next to it, missed
    pred = (labels == 1).copy()
    table = score_nodules(labels, pred, "A")
    assert table.nodule.tolist() == [1, 2]
    assert table.true_voxels.tolist() == [401, 2]
    # the neighbour's box holds most of nodule 1 (found): that is no hit for nodule 2
    assert table.dice.tolist() == [1.0, 0.0]
    assert error_breakdown(labels, pred)["nodules"] == 2
    # a boolean mask is split into connected pieces: here 3
    assert len(score_nodules(labels > 0, pred, "A")) == 3
    with pytest.raises(ValueError, match="integer label image or a boolean mask"):
        score_nodules(labels.astype(float), pred, "A")


def test_central_component_keeps_the_blob_under_or_nearest_the_centre():
    mask = np.zeros((9, 9), bool)
    mask[3:6, 3:6] = True  # under the centre (4, 4)
    mask[0, 0:2] = True  # elsewhere
    np.testing.assert_array_equal(central_component(mask), np.pad(np.ones((3, 3), bool), 3))
    ring = np.zeros((9, 9), bool)
    ring[4, 6:8] = True  # 2 pixels from the centre, which is background
    ring[0:2, 0] = True  # farther
    kept = central_component(ring)
    assert kept.sum() == 2 and kept[4, 6] and kept[4, 7]
    assert not central_component(np.zeros((5, 5))).any()
    assert central_component(np.zeros((5, 5))).dtype == bool


def test_binarize_thresholds_strictly_and_per_patch():
    probs = np.zeros((2, 7, 7))
    probs[:, 2:5, 2:5] = 0.6
    probs[0, 0, 0] = 0.9  # a stray pixel in patch 0
    probs[1, 3, 3] = 0.5  # exactly at the threshold: background
    masks = binarize(probs, 0.5)
    assert masks.dtype == bool and masks[0, 0, 0] and not masks[1, 3, 3]
    central = binarize(probs, 0.5, central=True)
    assert not central[0, 0, 0] and central[0].sum() == 9
    # the central pixel is background in patch 1: the ring around it is the nearest component
    assert central[1].sum() == 8
    # a float32 probability equal to float32(0.2) is not above 0.2 in float64
    assert not binarize(np.full((1, 3, 3), 0.2, np.float32), np.float32(0.2)).any()


def test_choose_binarization_ranks_every_pair_by_validation_dice():
    truth = np.zeros((3, 11, 11), bool)
    truth[:, 4:7, 4:7] = True
    probs = np.where(truth, 0.7, 0.1)
    probs[:, 0:2, 0:2] = 0.45  # a stray blob: kept below 0.45 unless the central one is chosen
    table = choose_binarization(probs, truth)
    assert len(table) == 2 * len(BINARIZATION_THRESHOLDS)
    assert BINARIZATION_THRESHOLDS[0] == 0.2 and BINARIZATION_THRESHOLDS[-1] == 0.85
    assert list(table.columns) == ["threshold", "central", "dice"]
    assert table["dice"].is_monotonic_decreasing
    # Dice 1 from 0.45 to 0.65 either way, and below 0.45 with the central component: the
    # tie goes to the highest threshold and then to keeping the central component
    assert table.iloc[0].tolist() == [0.65, True, 1.0]
    assert table.iloc[1].tolist() == [0.65, False, 1.0]
    low = table[(table.threshold == 0.2) & ~table.central]["dice"].item()
    assert low == pytest.approx(2 * 9 / (2 * 9 + 4))
    assert table[table.threshold == 0.7]["dice"].tolist() == [0.0, 0.0]  # nothing above 0.7
    with pytest.raises(ValueError, match="same non-empty"):
        choose_binarization(probs[:2], truth)
