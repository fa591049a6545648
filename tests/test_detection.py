"""LUNA16-style detection scoring: matching candidates to nodules, FROC and CPM, by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lunglib.evaluation.detection import LUNA16_FP_RATES, froc, match_candidates

# two scans, three nodules: A holds n0 (10 mm) and n1 (6 mm), B holds n2 (4 mm)
NODULES = pd.DataFrame({
    "scan": ["A", "A", "B"], "x_mm": [0.0, 50.0, 0.0], "y_mm": [0.0, 0.0, 0.0],
    "z_mm": [0.0, 0.0, 0.0], "diameter_mm": [10.0, 6.0, 4.0]})
CANDIDATES = pd.DataFrame({
    "scan": ["A", "A", "A", "A", "B", "B", "B"],
    "x_mm": [1.0, 0.0, 100.0, 52.0, 0.0, 0.0, 10.0],
    "y_mm": [1.0, 0.0, 0.0, 0.0, 3.0, 1.0, 10.0],
    "z_mm": [1.0, 3.0, 0.0, 0.0, 0.0, 0.0, 10.0],
    "score": [0.9, 0.8, 0.7, 0.4, 0.6, 0.3, 0.2]})


def test_each_nodule_counts_once_and_misses_are_false_positives():
    matched = match_candidates(CANDIDATES, NODULES)
    # c1 hits n0 (1.7 mm < 5), c2 hits n0 again, c3 is far away, c4 hits n1 (2 mm < 3),
    # c5 is 3 mm from n2 (radius 2: a miss), c6 hits n2 (1 mm), c7 hits nothing
    assert matched["nodule"].tolist() == [0, 0, -1, 1, -1, 2, -1]
    assert matched["kind"].tolist() == ["tp", "repeat", "fp", "tp", "fp", "tp", "fp"]


def test_froc_and_cpm_by_hand():
    curve = froc(CANDIDATES, NODULES)
    # thresholds 0.9 0.7 0.6 0.4 0.3 0.2 (the repeat's 0.8 is neither a hit nor a false alarm)
    np.testing.assert_allclose(curve.fps_per_scan, [0, 0, 0.5, 1, 1, 1, 1.5])
    np.testing.assert_allclose(curve.sensitivity, [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert (curve.n_nodules, curve.n_scans) == (3, 2)
    # at one rate the curve reaches its highest point; between rates it is linear
    np.testing.assert_allclose(curve.sensitivity_at([0.125, 0.5, 0.75, 1, 8]),
                               [1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert curve.cpm() == pytest.approx((3 * (1 / 3) + 4 * 1) / 7)
    assert len(LUNA16_FP_RATES) == 7


def test_scans_without_candidates_or_nodules_dilute_the_false_positives():
    curve = froc(CANDIDATES, NODULES, n_scans=4)
    np.testing.assert_allclose(curve.fps_per_scan, [0, 0, 0.25, 0.5, 0.5, 0.5, 0.75])
    assert curve.cpm() == pytest.approx((2 * (1 / 3) + 5 * 1) / 7)


def test_a_candidate_inside_two_nodules_goes_to_the_nearer():
    nodules = pd.DataFrame({"scan": ["A", "A"], "x_mm": [0.0, 6.0], "y_mm": [0.0, 0.0],
                            "z_mm": [0.0, 0.0], "diameter_mm": [20.0, 20.0]})
    candidates = pd.DataFrame({"scan": ["A"], "x_mm": [4.0], "y_mm": [0.0], "z_mm": [0.0],
                               "score": [0.5]})
    assert match_candidates(candidates, nodules)["nodule"].tolist() == [1]
    curve = froc(candidates, nodules)
    assert curve.sensitivity[-1] == 0.5 and curve.fps_per_scan[-1] == 0.0


def test_bad_inputs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="lacks column"):
        froc(CANDIDATES.drop(columns="score"), NODULES)
    with pytest.raises(ValueError, match="positive diameter"):
        froc(CANDIDATES, NODULES.assign(diameter_mm=0.0))
    with pytest.raises(ValueError, match="at least one true nodule"):
        froc(CANDIDATES, NODULES.iloc[:0])


def test_nodule_centres_are_the_world_centres_and_sphere_diameters_of_the_labels():
    from types import SimpleNamespace

    from lunglib.evaluation.detection import nodule_centres

    labels = np.zeros((10, 20, 20), np.int16)
    labels[2:4, 5:7, 5:7] = 1  # 8 voxels, centre (2.5, 5.5, 5.5)
    labels[8, 10, 12] = 3  # label 2 is absent
    # z steps 2 mm, y and x 0.5 mm; origin (100, 200, 300); axes aligned
    scan = SimpleNamespace(spacing=(2.0, 0.5, 0.5),
                           voxel_to_world=lambda zyx: np.array(
                               [100 + 0.5 * zyx[2], 200 + 0.5 * zyx[1], 300 + 2.0 * zyx[0]]))
    table = nodule_centres(labels, scan, "P001")
    assert table["nodule"].tolist() == [1, 3] and set(table["scan"]) == {"P001"}
    np.testing.assert_allclose(table[["x_mm", "y_mm", "z_mm"]].to_numpy(),
                               [[102.75, 202.75, 305.0], [106.0, 205.0, 316.0]])
    volume = 8 * 0.5  # mm3
    assert table["diameter_mm"].iloc[0] == pytest.approx((6 * volume / np.pi) ** (1 / 3))
    assert nodule_centres(np.zeros((2, 2, 2)), scan).empty
