"""Picking and naming the cases a report shows (lunglib.evaluation.cases)."""

from __future__ import annotations

import numpy as np
import pytest

from lunglib.evaluation.cases import (
    axial_gallery,
    largest_section,
    patient_codes,
    pick_cases,
    strongest_slice,
)


def test_patient_codes_number_patients_in_order_of_first_appearance():
    codes = patient_codes(["synth-0042", "synth-0007", "synth-0042", "LIDC-IDRI-0001"])
    assert codes == {"synth-0042": "P001", "synth-0007": "P002", "LIDC-IDRI-0001": "P003"}


def test_patient_codes_widen_when_three_digits_are_not_enough():
    codes = patient_codes(f"id{i}" for i in range(1000))
    assert codes["id0"] == "P0001" and codes["id999"] == "P1000"
    assert len(set(codes.values())) == 1000
    assert patient_codes(["a"], prefix="S", width=2) == {"a": "S01"}


def test_pick_cases_takes_best_median_and_worst_by_score():
    scores = {"a": 0.5, "b": 0.9, "c": 0.1, "d": 0.7, "e": 0.3}
    assert pick_cases(scores) == {"best": "b", "median": "a", "worst": "c"}


def test_pick_cases_median_of_an_even_count_is_the_better_middle_case_and_nan_is_left_out():
    scores = {"a": 0.8, "b": 0.6, "c": 0.4, "d": 0.2, "e": float("nan")}
    assert pick_cases(scores) == {"best": "a", "median": "b", "worst": "d"}


def test_pick_cases_lists_each_case_once_with_few_cases():
    assert pick_cases({"a": 0.2, "b": 0.9}) == {"best": "b", "worst": "a"}
    assert pick_cases({"a": 0.2}) == {"best": "a"}
    assert pick_cases({}) == {}
    # ties keep the order given
    assert pick_cases({"a": 0.0, "b": 0.0, "c": 0.0}) == {"best": "a", "median": "b",
                                                          "worst": "c"}


def test_largest_section_and_strongest_slice():
    mask = np.zeros((5, 8, 8), bool)
    mask[1, 2:4, 2:4] = True  # 4 voxels
    mask[3, 1:6, 1:6] = True  # 25 voxels: the largest cross-section
    assert largest_section(mask) == 3
    assert largest_section(np.zeros((6, 4, 4), bool)) == 3  # empty: the middle slice
    heat = np.zeros((4, 8, 8))
    heat[0, 0, 0] = 1.0  # the single peak
    heat[2] = 0.2  # most of the weight
    assert strongest_slice(heat) == 2
    with pytest.raises(ValueError, match="z, y, x"):
        largest_section(np.zeros((4, 4)))


def test_axial_gallery_stacks_one_slice_per_case_padded_to_the_largest():
    rng = np.random.default_rng(0)
    small = rng.normal(size=(4, 6, 6)).astype(np.float32)
    large = rng.normal(size=(3, 8, 10)).astype(np.float32)
    truth_small = np.zeros(small.shape, bool)
    truth_small[2, 1:4, 1:4] = True
    pred_small = np.zeros(small.shape, bool)
    pred_small[2, 2:4, 2:4] = True
    truth_large = np.zeros(large.shape, bool)  # no truth: the prediction's slice is shown
    pred_large = np.zeros(large.shape, bool)
    pred_large[1, 0, 0] = True
    gallery = axial_gallery({"best": "s", "worst": "l"},
                            {"s": (small, truth_small, pred_small),
                             "l": (large, truth_large, pred_large)},
                            {"s": 0.6, "l": 0.0})
    assert gallery["image"].shape == gallery["truth"].shape == gallery["prediction"].shape
    assert gallery["image"].shape == (2, 8, 10)
    assert gallery["truth"].dtype == bool and gallery["image"].dtype == np.float32
    np.testing.assert_array_equal(gallery["image"][0, 1:7, 2:8], small[2])  # centred
    assert gallery["image"][0, 0, 0] == -1000.0  # padded with air
    assert gallery["truth"][0].sum() == 9 and gallery["prediction"][0].sum() == 4
    np.testing.assert_array_equal(gallery["image"][1], large[1])
    assert gallery["prediction"][1, 0, 0] and not gallery["truth"][1].any()
    assert list(gallery["label"]) == ["best", "worst"]
    np.testing.assert_allclose(gallery["dice"], [0.6, 0.0])


def test_axial_gallery_rejects_mismatched_volumes_and_handles_no_case():
    with pytest.raises(ValueError, match="differ"):
        axial_gallery({"best": "x"}, {"x": (np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool),
                                            np.zeros((2, 4, 5), bool))}, {"x": 1.0})
    empty = axial_gallery({}, {}, {})
    assert empty["image"].shape[0] == 0 and empty["label"].shape == (0,)
