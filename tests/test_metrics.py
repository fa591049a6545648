"""Metrics agree with hand-computed values; thresholds come from validation data only."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from lunglib.evaluation.classification import (
    BootstrapInterval,
    aggregate_by_group,
    bootstrap_ci,
    bootstrap_interval,
    calibration_table,
    choose_threshold,
    classification_metrics,
    confusion_table,
    evaluate_binary,
    paired_bootstrap_ci,
)

Y = [0, 0, 1, 1, 1, 0, 1, 0]
P = [0.1, 0.4, 0.35, 0.8, 0.9, 0.6, 0.7, 0.2]


def test_metrics_match_hand_computed_values() -> None:
    m = classification_metrics(Y, P, threshold=0.5)
    # predictions 0 0 0 1 1 1 1 0 -> tp 3 (0.8, 0.9, 0.7), fn 1 (0.35), fp 1 (0.6), tn 3
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    # 14 of the 16 (positive, negative) pairs are ranked correctly: 0.35 beats only 0.1 and 0.2
    assert m["roc_auc"] == pytest.approx(14 / 16)
    expected_loss = -np.mean([math.log(1 - 0.1), math.log(1 - 0.4), math.log(0.35),
                              math.log(0.8), math.log(0.9), math.log(1 - 0.6), math.log(0.7),
                              math.log(1 - 0.2)])
    assert m["log_loss"] == pytest.approx(expected_loss)
    # Brier: mean squared (p - y) = (0.01 + 0.16 + 0.4225 + 0.04 + 0.01 + 0.36 + 0.09 + 0.04) / 8
    assert m["brier"] == pytest.approx(1.1325 / 8)


def test_threshold_changes_the_confusion_matrix() -> None:
    table = confusion_table(Y, P, threshold=0.3)
    # at 0.3 every positive is caught and two negatives (0.4, 0.6) become false positives
    assert table.to_numpy().tolist() == [[2, 2], [0, 4]]


def test_youden_threshold_on_a_separable_validation_set() -> None:
    y_val = [0, 0, 0, 1, 1, 1]
    p_val = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    threshold = choose_threshold(y_val, p_val, rule="youden")
    assert 0.3 < threshold <= 0.6
    assert classification_metrics(y_val, p_val, threshold)["accuracy"] == 1.0


def test_sensitivity_rule_reaches_the_target() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.5 * y + rng.normal(0.25, 0.2, 400), 0, 1)
    threshold = choose_threshold(y, p, rule="sensitivity", min_sensitivity=0.95)
    assert classification_metrics(y, p, threshold)["recall"] >= 0.95


def test_evaluate_binary_never_looks_at_test_labels_for_the_threshold() -> None:
    rng = np.random.default_rng(1)
    y_val = rng.integers(0, 2, 60)
    p_val = np.clip(0.4 * y_val + rng.uniform(0, 0.6, 60), 0, 1)
    y_test = rng.integers(0, 2, 50)
    p_test = rng.uniform(0, 1, 50)
    first = evaluate_binary(y_val, p_val, y_test, p_test, n_boot=50)
    flipped = evaluate_binary(y_val, p_val, 1 - y_test, p_test, n_boot=50)
    assert first.threshold == flipped.threshold == choose_threshold(y_val, p_val)
    accuracy = first.table.set_index("metric").loc["accuracy"]
    assert accuracy.ci_low <= accuracy.value <= accuracy.ci_high
    assert set(first.as_dict()["ci95"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc"}


def test_bootstrap_by_patient_is_wider_than_by_sample_for_repeated_samples() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 30)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 30), 0, 1)
    repeats = 6  # six patches of each patient, all alike
    y_rep, p_rep = np.repeat(y, repeats), np.repeat(p, repeats)
    groups = np.repeat(np.arange(30), repeats)

    naive = bootstrap_ci(y_rep, p_rep, roc_auc_score, n_boot=300, seed=0)
    by_patient = bootstrap_ci(y_rep, p_rep, roc_auc_score, n_boot=300, groups=groups, seed=0)
    assert (by_patient[1] - by_patient[0]) > 1.5 * (naive[1] - naive[0])


def test_calibration_of_a_calibrated_predictor_is_near_the_diagonal() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, 20000) < p).astype(int)
    table = calibration_table(y, p, n_bins=5)
    assert np.allclose(table.mean_predicted, table.fraction_positive, atol=0.03)


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [([0, 1, 2], [0.1, 0.2, 0.3], "0 and 1"), ([0, 1], [0.1], "2 values"),
     ([0, 1], [0.1, 1.5], r"\[0, 1\]")],
)
def test_bad_inputs_are_explained(y: list[int], p: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_metrics(y, p)


def test_threshold_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])


def test_aggregate_by_group_gives_each_sample_its_group_mean() -> None:
    # nodule "n1" has three outlines, "n7" two (not adjacent), "n2" one
    values = [0.2, 0.9, 0.5, 0.4, 0.1, 0.6]
    groups = ["n1", "n7", "n1", "n2", "n1", "n7"]
    out = aggregate_by_group(values, groups)
    # (0.2 + 0.5 + 0.1) / 3 = 0.2667, (0.9 + 0.6) / 2 = 0.75, a singleton keeps its value
    np.testing.assert_allclose(out, [0.8 / 3, 0.75, 0.8 / 3, 0.4, 0.8 / 3, 0.75])


def test_aggregate_by_group_is_the_identity_for_distinct_groups() -> None:
    values = np.array([0.3, 0.1, 0.7])
    np.testing.assert_array_equal(aggregate_by_group(values, [5, 6, 7]), values)


def test_aggregate_by_group_explains_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        aggregate_by_group([0.1, 0.2], ["a"])


def test_accuracy_threshold_by_hand() -> None:
    # sorted: 0.1 (0), 0.2 (0), 0.35 (1), 0.4 (0), 0.6 (0), 0.7 (1), 0.8 (1), 0.9 (1); at 0.7
    # every negative is below and 3 of 4 positives at or above: 7 of 8, the most of any candidate
    assert choose_threshold(Y, P, rule="accuracy") == pytest.approx(0.7)


def test_accuracy_threshold_takes_the_lowest_of_ties_and_may_be_one_half() -> None:
    # 3 of 4 correct at 0.3, 0.5 and 0.9 (2 of 4 at 0.2 and 0.6): the lowest, 0.3, wins
    assert choose_threshold([0, 1, 0, 1], [0.2, 0.3, 0.6, 0.9], rule="accuracy") == 0.3
    # every threshold in (0.45, 0.55] separates the classes; 0.5 is a candidate and the lowest
    assert choose_threshold([0, 0, 1, 1], [0.1, 0.45, 0.55, 0.9], rule="accuracy") == 0.5


def test_accuracy_threshold_is_the_most_accurate_candidate() -> None:
    rng = np.random.default_rng(4)
    for _ in range(200):
        n = int(rng.integers(4, 40))
        y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
        p = np.round(rng.random(n), 1)  # many ties
        candidates = np.unique(np.append(p, 0.5))
        accuracy = [np.mean((p >= t) == y) for t in candidates]
        expected = candidates[int(np.argmax(accuracy))]
        assert choose_threshold(y, p, rule="accuracy") == expected


def test_paired_bootstrap_of_identical_predictors_is_zero() -> None:
    rng = np.random.default_rng(5)
    y = np.r_[0, 1, rng.integers(0, 2, 40)]
    p = rng.random(42)
    assert paired_bootstrap_ci(y, p, p, roc_auc_score, n_boot=50) == (0.0, 0.0)


def test_paired_bootstrap_resamples_whole_groups_in_sorted_order() -> None:
    y = np.array([0, 1, 1, 0, 1, 0])
    p_a = np.array([0.1, 0.8, 0.7, 0.3, 0.6, 0.4])
    p_b = np.array([0.5, 0.4, 0.9, 0.2, 0.3, 0.6])
    groups = np.array(["c", "a", "a", "b", "c", "b"])  # sorted ids: a, b, c
    low, high = paired_bootstrap_ci(y, p_a, p_b, roc_auc_score, n_boot=1, groups=groups, seed=3)
    members = {0: [1, 2], 1: [3, 5], 2: [0, 4]}
    drawn = np.random.default_rng(3).integers(0, 3, 3)
    index = np.concatenate([members[int(g)] for g in drawn])
    expected = roc_auc_score(y[index], p_a[index]) - roc_auc_score(y[index], p_b[index])
    assert low == pytest.approx(expected) and high == pytest.approx(expected)


def test_paired_bootstrap_brackets_a_clear_difference_and_shares_a_generator() -> None:
    rng = np.random.default_rng(6)
    y = np.r_[0, 1, rng.integers(0, 2, 118)]
    good = np.clip(0.6 * y + rng.uniform(0, 0.4, 120), 0, 1)
    noise = rng.random(120)
    low, high = paired_bootstrap_ci(y, good, noise, roc_auc_score, n_boot=60, seed=0)
    point = roc_auc_score(y, good) - roc_auc_score(y, noise)
    assert 0 < low <= point <= high
    back = paired_bootstrap_ci(y, noise, good, roc_auc_score, n_boot=60, seed=0)
    assert back == pytest.approx((-high, -low))
    stream = np.random.default_rng(0)
    first = paired_bootstrap_ci(y, good, noise, roc_auc_score, n_boot=60, seed=stream)
    second = paired_bootstrap_ci(y, good, noise, roc_auc_score, n_boot=60, seed=stream)
    assert first == (low, high) and second != first  # the second call continues the stream


def test_evaluate_binary_reports_the_brier_score_with_its_interval() -> None:
    y_val, p_val = [0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    result = evaluate_binary(y_val, p_val, Y, P, n_boot=60)
    brier = result.table.set_index("metric").loc["brier"]
    assert brier.value == pytest.approx(1.1325 / 8)
    assert brier.ci_low < brier.value < brier.ci_high
    assert result.as_dict()["brier"] == pytest.approx(1.1325 / 8)
    assert result.as_dict()["ci95"]["brier"] == [brier.ci_low, brier.ci_high]


def test_intervals_of_a_perfectly_separated_small_test_split_are_flagged_degenerate() -> None:
    # 16 test patients, every positive above the validation threshold (0.6) and every negative
    # below: every resample has precision, recall, specificity, accuracy, F1, ROC-AUC and
    # PR-AUC 1 -- an interval [1, 1] that only says the split is small. The log-loss and Brier
    # score still vary with the resampled probabilities.
    y_val, p_val = [0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    y_test = np.r_[np.zeros(8, int), np.ones(8, int)]
    p_test = np.r_[np.linspace(0.05, 0.4, 8), np.linspace(0.65, 0.95, 8)]
    result = evaluate_binary(y_val, p_val, y_test, p_test, n_boot=100)
    table = result.table.set_index("metric")
    assert table["ci_degenerate"].dtype == bool
    assert table.loc["precision", ["ci_low", "ci_high"]].tolist() == [1.0, 1.0]
    # PR-AUC is 1 in every resample up to rounding (0.9999999999999998: sums in another order)
    assert table.loc["pr_auc", "ci_low"] == pytest.approx(1.0, abs=1e-12)
    expected = ["accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc"]
    assert result.as_dict()["ci_degenerate"] == expected
    assert not table.loc["brier", "ci_degenerate"] and not table.loc["log_loss", "ci_degenerate"]
    # one positive moved below the threshold (0.5), still above every negative: recall, accuracy
    # and F1 now vary; precision and specificity (no negative above the threshold) and the
    # ranking metrics (the classes are still separated) stay 1
    p_test[8] = 0.5
    flags = evaluate_binary(y_val, p_val, y_test, p_test, n_boot=100).as_dict()["ci_degenerate"]
    assert flags == ["precision", "specificity", "roc_auc", "pr_auc"]


@pytest.mark.parametrize("n, grouped", [(40, False), (40, True), (7, False)])
def test_evaluate_binary_intervals_equal_scikit_learn_metrics_on_each_resample(
    n: int, grouped: bool
) -> None:
    # evaluate_binary computes every metric on all resamples at once from weighted counts; each
    # interval must be the one bootstrap_interval gives on the resampled arrays with the
    # scikit-learn metric, to the last digit -- with tied scores, patient groups, and (n = 7)
    # resamples holding one class, where ROC-AUC, PR-AUC and specificity are skipped
    from sklearn import metrics as skm

    rng = np.random.default_rng(n + grouped)
    y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    p = np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 1)  # rounded: many ties
    groups = rng.integers(0, n // 3, n) if grouped else None
    result = evaluate_binary(y, p, y, p, groups_test=groups, n_boot=200, seed=5)
    t = result.threshold

    def both(score):
        def metric(yy, pp):
            if len(np.unique(yy)) < 2:
                raise ValueError("one class")
            return score(yy, pp)
        return metric

    def negatives_kept(yy, pp):
        return float(((pp < t) & (yy == 0)).sum() / (yy == 0).sum()) if (yy == 0).any() else np.nan

    reference = {
        "accuracy": lambda yy, pp: skm.accuracy_score(yy, pp >= t),
        "precision": lambda yy, pp: skm.precision_score(yy, pp >= t, zero_division=0),
        "recall": lambda yy, pp: skm.recall_score(yy, pp >= t, zero_division=0),
        "specificity": negatives_kept,
        "f1": lambda yy, pp: skm.f1_score(yy, pp >= t, zero_division=0),
        "roc_auc": both(skm.roc_auc_score),
        "pr_auc": both(skm.average_precision_score),
        "log_loss": lambda yy, pp: skm.log_loss(yy, np.clip(pp, 1e-7, 1 - 1e-7), labels=[0, 1]),
        "brier": lambda yy, pp: skm.brier_score_loss(yy, pp, labels=[0, 1]),
    }
    table = result.table.set_index("metric")
    assert list(table.index) == list(reference)
    for name, metric in reference.items():
        expected = bootstrap_interval(y, p, metric, n_boot=200, groups=groups, seed=5)
        np.testing.assert_allclose(table.loc[name, ["ci_low", "ci_high"]].astype(float),
                                   [expected.low, expected.high], rtol=0, atol=1e-12,
                                   err_msg=name)
        assert table.loc[name, "ci_degenerate"] == expected.degenerate, name
    if n == 7:  # small enough that some resamples hold one class
        assert bootstrap_interval(y, p, reference["roc_auc"], n_boot=200, seed=5).scored < 200


def test_bootstrap_interval_counts_distinct_values_and_matches_bootstrap_ci() -> None:
    rng = np.random.default_rng(7)
    y = np.r_[0, 1, rng.integers(0, 2, 38)]
    p = rng.random(40)
    interval = bootstrap_interval(y, p, roc_auc_score, n_boot=100, seed=3)
    assert (interval.low, interval.high) == bootstrap_ci(y, p, roc_auc_score, n_boot=100, seed=3)
    assert interval.scored == 100 and interval.distinct > 50 and not interval.degenerate
    constant = bootstrap_interval(y, p, lambda yy, pp: 0.5, n_boot=100)
    assert (constant.low, constant.high, constant.distinct) == (0.5, 0.5, 1)
    assert constant.degenerate
    # several distinct values but a zero-width interval (nearly every resample alike): degenerate
    assert BootstrapInterval(1.0, 1.0, distinct=3, scored=100).degenerate
    never = bootstrap_interval(y, p, lambda yy, pp: float("nan"), n_boot=20)
    assert np.isnan(never.low) and never.scored == 0 and never.degenerate


def test_calibration_table_counts_samples_and_patients_per_bin() -> None:
    y = [0, 0, 1, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    groups = ["a", "a", "b", "c", "c", "c"]
    # 2 quantile bins split at the median 0.45: {0.1, 0.2, 0.3} (1 of 3 positive; patients a, b)
    # and {0.6, 0.7, 0.9} (2 of 3; patient c)
    table = calibration_table(y, p, n_bins=2, groups=groups)
    assert list(table.columns) == ["mean_predicted", "fraction_positive", "n_samples",
                                   "n_patients"]
    np.testing.assert_allclose(table.mean_predicted, [0.2, 2.2 / 3])
    np.testing.assert_allclose(table.fraction_positive, [1 / 3, 2 / 3])
    assert table.n_samples.tolist() == [3, 3] and table.n_patients.tolist() == [2, 1]
    assert "n_patients" not in calibration_table(y, p, n_bins=2).columns
    with pytest.raises(ValueError, match="groups"):
        calibration_table(y, p, n_bins=2, groups=["a"])


def test_calibration_table_bins_as_sklearn_does_ties_included() -> None:
    rng = np.random.default_rng(8)
    p = np.round(rng.random(300) ** 4, 1)  # many ties: about half are 0.0, the first edges
    y = (rng.random(300) < p).astype(int)
    table = calibration_table(y, p, n_bins=6)
    observed, predicted = calibration_curve(y, p, n_bins=6, strategy="quantile")
    np.testing.assert_allclose(table.fraction_positive, observed)
    np.testing.assert_allclose(table.mean_predicted, predicted)
    assert table.n_samples.sum() == 300 and len(table) < 6  # tied edges leave bins empty
