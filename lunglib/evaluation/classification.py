"""Classification metrics with honest thresholds and confidence intervals.

Every point estimate comes from scikit-learn (the bootstrap of :func:`evaluate_binary` writes the
same definitions out on weighted counts, to score a thousand resamples at once, and is tested
against scikit-learn resample by resample). What this module adds is the discipline around them:

* the decision threshold is chosen on the **validation** split (:func:`choose_threshold`) and only
  then applied to the test split -- :func:`evaluate_binary` takes both and never looks at test
  labels when choosing;
* every test metric gets a bootstrap 95% confidence interval, resampling **patients** when
  several samples share a patient (:func:`bootstrap_ci`); an interval whose resamples all give
  the same value (precision [1, 1] on a small test split) is flagged as degenerate, because it
  says the test split is too small, not that the metric is certain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm

THRESHOLD_RULES = ("youden", "f1", "sensitivity", "accuracy")


def _as_binary(y_true: Sequence[int], y_prob: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(y_prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values but y_prob has {p.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold 0 and 1 only; found {sorted(set(y.tolist()))}")
    if p.size and (p.min() < 0 or p.max() > 1 or not np.isfinite(p).all()):
        raise ValueError("y_prob must hold probabilities in [0, 1]")
    return y, p


def choose_threshold(
    y_val: Sequence[int], p_val: Sequence[float], rule: str = "youden",
    min_sensitivity: float = 0.9,
) -> float:
    """Choose a decision threshold on validation data.

    Parameters
    ----------
    y_val, p_val : array-like
        Validation labels (0/1) and predicted probabilities of class 1.
    rule : {"youden", "f1", "sensitivity", "accuracy"}
        ``youden`` maximises sensitivity + specificity - 1; ``f1`` maximises F1;
        ``sensitivity`` takes the highest threshold whose sensitivity reaches
        ``min_sensitivity`` (a screening setting); ``accuracy`` maximises accuracy over the
        candidate thresholds 0.5 and every validation probability (``p >= threshold`` is
        positive), the lowest of equally accurate ones.
    min_sensitivity : float
        Used by the ``sensitivity`` rule.

    Returns
    -------
    float
    """
    y, p = _as_binary(y_val, p_val)
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"rule must be one of {THRESHOLD_RULES}; got {rule!r}")
    if len(np.unique(y)) < 2:
        raise ValueError("the validation split needs both classes to choose a threshold")
    if rule == "accuracy":
        return _most_accurate_threshold(y, p)
    if rule == "f1":
        precision, recall, thresholds = skm.precision_recall_curve(y, p)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        return float(thresholds[int(np.argmax(f1[:-1]))])
    fpr, tpr, thresholds = skm.roc_curve(y, p)
    thresholds = np.clip(thresholds, 0.0, 1.0)  # sklearn puts inf before the first threshold
    if rule == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    reaching = np.flatnonzero(tpr >= min_sensitivity)
    return float(thresholds[reaching[0]])


def _most_accurate_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The candidate (0.5 or a value of ``p``) with the most correct ``p >= t`` decisions."""
    candidates = np.unique(np.append(p, 0.5))
    positives, negatives = np.sort(p[y == 1]), np.sort(p[y == 0])
    # correct = positives at or above t + negatives below t; integer counts, so ties are exact
    correct = (positives.size - np.searchsorted(positives, candidates, side="left")
               + np.searchsorted(negatives, candidates, side="left"))
    return float(candidates[int(np.argmax(correct))])


def classification_metrics(
    y_true: Sequence[int], y_prob: Sequence[float], threshold: float = 0.5
) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity, F1, ROC-AUC, PR-AUC, log-loss,
    Brier score.

    Class 1 is positive (cancer, malignant). Metrics that need both classes are NaN when the
    labels hold one class only. The Brier score is the mean squared difference between the
    probability and the label (0 best; 0.25 for always saying 0.5), a measure of calibration
    and sharpness together.
    """
    y, p = _as_binary(y_true, y_prob)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    return {
        "n": int(y.size),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if (tn + fp) else float("nan"),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(skm.average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(skm.brier_score_loss(y, p, labels=[0, 1])),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
    }


def bootstrap_ci(
    y_true: Sequence[int],
    y_prob: Sequence[float],
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    confidence: float = 0.95,
    groups: Sequence[object] | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(y, p)``.

    With ``groups`` (patient ids), whole patients are resampled, so that the several patches of
    one patient do not pass for independent evidence. Resamples in which the metric is undefined
    (for example a single class for ROC-AUC) are skipped. :func:`bootstrap_interval` also says
    whether the interval is degenerate.
    """
    interval = bootstrap_interval(y_true, y_prob, metric, n_boot, confidence, groups, seed)
    return interval.low, interval.high


_DISTINCT_DECIMALS = 12
"""Decimals to which bootstrap values are compared when counting distinct ones."""


@dataclass(frozen=True)
class BootstrapInterval:
    """A percentile bootstrap interval and how many distinct values its resamples gave.

    Attributes
    ----------
    low, high : float
        The interval's ends; NaN when no resample could be scored.
    distinct : int
        Distinct finite values of the statistic over the scored resamples, to
        :data:`_DISTINCT_DECIMALS` decimals (so that 1.0 and 0.9999999999999998, one value
        summed in two orders, count once).
    scored : int
        Resamples on which the statistic was defined.
    """

    low: float
    high: float
    distinct: int
    scored: int

    @property
    def degenerate(self) -> bool:
        """True when the interval cannot show uncertainty: fewer than 2 distinct resampled
        values, or zero width (for example precision [1, 1] when every resample of a small test
        split has no false positive), or no resample scored at all."""
        return self.distinct < 2 or not self.high - self.low > 10.0**-_DISTINCT_DECIMALS


def bootstrap_interval(
    y_true: Sequence[int],
    y_prob: Sequence[float],
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 1000,
    confidence: float = 0.95,
    groups: Sequence[object] | None = None,
    seed: int = 0,
) -> BootstrapInterval:
    """:func:`bootstrap_ci`, also counting the distinct resampled values (degenerate or not)."""
    y, p = _as_binary(y_true, y_prob)
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(y.size)]
    else:
        codes = pd.factorize(np.asarray(groups))[0]
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    return _percentile_bootstrap(lambda index: metric(y[index], p[index]), members, n_boot,
                                 confidence, rng)


def _percentile_bootstrap(
    statistic: Callable[[np.ndarray], float], members: Sequence[np.ndarray], n_boot: int,
    confidence: float, rng: np.random.Generator,
) -> BootstrapInterval:
    """Percentile interval of ``statistic(index)`` over resamples of whole ``members`` (index
    arrays); resamples where it raises ``ValueError`` or is not finite are skipped."""
    values = []
    for _ in range(n_boot):
        chosen = rng.integers(0, len(members), len(members))
        index = np.concatenate([members[c] for c in chosen])
        try:
            value = statistic(index)
        except ValueError:
            continue
        values.append(value)
    return _interval(np.asarray(values, dtype=float), confidence)


def _interval(values: np.ndarray, confidence: float) -> BootstrapInterval:
    """Percentile interval of the finite ``values`` (one per resample; NaN: not scored)."""
    values = values[np.isfinite(values)]
    if not values.size:
        return BootstrapInterval(float("nan"), float("nan"), distinct=0, scored=0)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    distinct = len(np.unique(np.round(values, _DISTINCT_DECIMALS)))
    return BootstrapInterval(float(low), float(high), distinct=distinct, scored=int(values.size))


def _resample_weights(n_samples: int, groups: Sequence[object] | None, n_boot: int,
                      seed: int) -> np.ndarray:
    """How often each sample occurs in each of ``n_boot`` resamples of whole groups.

    The resamples are :func:`bootstrap_interval`'s, drawn from the same seeded stream in the
    same order, so a statistic computed from these weights equals the one computed on the
    resampled arrays.
    """
    codes = (np.arange(n_samples) if groups is None
             else pd.factorize(np.asarray(groups))[0])
    n_members = int(codes.max()) + 1 if n_samples else 0
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, n_members))
    for b in range(n_boot):
        counts[b] = np.bincount(rng.integers(0, n_members, n_members), minlength=n_members)
    return counts[:, codes]


def _weighted_metrics(y: np.ndarray, p: np.ndarray, threshold: float,
                      weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of :func:`evaluate_binary` on every resample at once; NaN where undefined.

    Scikit-learn computes each metric on one array at a time, and its input checks cost about
    a millisecond a call: nine metrics on 1000 resamples spent half a minute there. Here each
    resample is a row of sample weights (occurrence counts), and the metrics are their
    definitions written out on weighted counts -- the same values as scikit-learn's functions
    on the resampled arrays (tests/test_metrics.py checks every metric against them):
    ``zero_division=0`` for precision, recall and F1; ROC-AUC as the probability that a
    positive outscores a negative, ties counting one half (the area under scikit-learn's
    trapezoidal ROC curve); average precision as the sum over distinct scores, highest first,
    of the recall gained times the precision there.
    """
    positive, predicted = y == 1, p >= threshold
    tp = weights[:, positive & predicted].sum(axis=1)
    fn = weights[:, positive & ~predicted].sum(axis=1)
    fp = weights[:, ~positive & predicted].sum(axis=1)
    tn = weights[:, ~positive & ~predicted].sum(axis=1)
    total = weights.sum(axis=1)

    def ratio(numerator, denominator, undefined):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, numerator / denominator, undefined)

    both = (tp + fn > 0) & (fp + tn > 0)
    pos_w, neg_w = weights[:, positive], weights[:, ~positive]
    beats = (p[positive][:, None] > p[~positive][None, :]).astype(float)
    beats += 0.5 * (p[positive][:, None] == p[~positive][None, :])
    pairs = pos_w.sum(axis=1) * neg_w.sum(axis=1)
    auc = ratio(np.einsum("bi,ij,bj->b", pos_w, beats, neg_w), pairs, np.nan)

    order = np.argsort(-p, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(p[order]) != 0])  # groups of equal scores
    ordered = weights[:, order]
    true_pos = np.cumsum(np.add.reduceat(ordered * y[order], starts, axis=1), axis=1)
    false_pos = np.cumsum(np.add.reduceat(ordered * (1 - y[order]), starts, axis=1), axis=1)
    precision_at = ratio(true_pos, true_pos + false_pos, 0.0)
    recall_at = ratio(true_pos, true_pos[:, -1:], 0.0)
    gained = np.diff(recall_at, axis=1, prepend=0.0)
    average_precision = (gained * precision_at).sum(axis=1)

    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    log_loss = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    return {
        "accuracy": ratio(tp + tn, total, np.nan),
        "precision": ratio(tp, tp + fp, 0.0),
        "recall": ratio(tp, tp + fn, 0.0),
        "specificity": ratio(tn, tn + fp, np.nan),
        "f1": ratio(2 * tp, 2 * tp + fp + fn, 0.0),
        "roc_auc": np.where(both, auc, np.nan),
        "pr_auc": np.where(both, average_precision, np.nan),
        "log_loss": ratio(weights @ log_loss, total, np.nan),
        "brier": ratio(weights @ (p - y) ** 2, total, np.nan),
    }


def paired_bootstrap_ci(
    y_true: Sequence[int],
    y_prob_a: Sequence[float],
    y_prob_b: Sequence[float],
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 2000,
    confidence: float = 0.95,
    groups: Sequence[object] | None = None,
    seed: int | np.random.Generator = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(y, p_a) - metric(y, p_b)``.

    Two predictors scored on the same samples are compared on the same resamples (a paired
    bootstrap), so the sample-to-sample noise they share cancels out of the difference.

    Parameters
    ----------
    y_true : array-like of 0/1
        Labels of the samples both predictors scored.
    y_prob_a, y_prob_b : array-like of float
        The two predictors' probabilities of class 1, one per sample.
    metric : callable
        ``metric(y, p) -> float``, for example :func:`sklearn.metrics.roc_auc_score`. Resamples
        on which it is undefined (raises ``ValueError`` or gives NaN, as ROC-AUC on one class
        only) are skipped.
    n_boot : int
        Resamples drawn.
    confidence : float
        Coverage of the interval.
    groups : array-like, optional
        Group (patient) of every sample: whole groups are resampled, in the order of their
        sorted ids, so the several samples of one patient do not pass for independent evidence.
    seed : int or numpy.random.Generator
        Random source; pass one Generator to several calls to continue one random stream.

    Returns
    -------
    (float, float)
        The interval's low and high ends; NaN when no resample could be scored.
    """
    y, p_a = _as_binary(y_true, y_prob_a)
    _, p_b = _as_binary(y_true, y_prob_b)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(y.size)]
    else:
        codes = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    interval = _percentile_bootstrap(
        lambda index: metric(y[index], p_a[index]) - metric(y[index], p_b[index]), members,
        n_boot, confidence, rng)
    return interval.low, interval.high


def aggregate_by_group(values: Sequence[float], groups: Sequence[object]) -> np.ndarray:
    """Replace every value by the mean of its group (for example one nodule's several outlines).

    Several samples that are views of the same object (the readers' outlines of one nodule, the
    patches of one scan) each get the mean prediction of all its views. Only inputs are combined,
    never labels, so this may run on validation and test predictions alike.

    Parameters
    ----------
    values : sequence of float, shape (n,)
        One prediction per sample.
    groups : sequence, shape (n,)
        The group of each sample (any hashable id). Order does not matter.

    Returns
    -------
    numpy.ndarray, shape (n,)
        ``out[i]`` is the mean of ``values[j]`` over every ``j`` with ``groups[j] == groups[i]``.
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups)
    if v.ndim != 1 or g.ndim != 1 or v.shape != g.shape:
        raise ValueError(
            f"values and groups must be 1-D and of the same length, got shapes {v.shape} and "
            f"{g.shape}; pass one group id per value"
        )
    if not np.isfinite(v).all():
        raise ValueError("values hold NaN or infinity; drop or impute them before aggregating")
    return pd.Series(v).groupby(pd.factorize(g)[0]).transform("mean").to_numpy()


@dataclass
class BinaryEvaluation:
    """Test metrics at a threshold chosen on validation, with confidence intervals.

    ``table`` has one row per metric: ``metric, value, ci_low, ci_high, ci_degenerate`` (the
    bootstrap resamples gave fewer than 2 distinct values or a zero-width interval:
    :attr:`BootstrapInterval.degenerate`).
    """

    threshold: float
    rule: str
    table: pd.DataFrame

    def as_dict(self) -> dict[str, object]:
        """Threshold, rule, every metric's value, ``ci95`` ({metric: [low, high]}) and
        ``ci_degenerate`` (the metrics whose interval is degenerate), for ``metrics.json``."""
        rows = list(self.table.itertuples())
        return {
            "threshold": self.threshold,
            "threshold_rule": self.rule,
            **{row.metric: row.value for row in rows},
            "ci95": {row.metric: [row.ci_low, row.ci_high] for row in rows},
            "ci_degenerate": [row.metric for row in rows if row.ci_degenerate],
        }


def _specificity(y: np.ndarray, pred: np.ndarray) -> float:
    negatives = y == 0
    return float((pred[negatives] == 0).mean()) if negatives.any() else float("nan")


def _needs_both_classes(score: Callable[[np.ndarray, np.ndarray], float]):
    def metric(y: np.ndarray, p: np.ndarray) -> float:
        if len(np.unique(y)) < 2:
            raise ValueError("the metric needs both classes")
        return float(score(y, p))

    return metric


# One function per reported metric, each computing only itself (the bootstrap calls them often).
_THRESHOLD_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": skm.accuracy_score,
    "precision": lambda y, pred: skm.precision_score(y, pred, zero_division=0),
    "recall": lambda y, pred: skm.recall_score(y, pred, zero_division=0),
    "specificity": _specificity,
    "f1": lambda y, pred: skm.f1_score(y, pred, zero_division=0),
}
_SCORE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": _needs_both_classes(skm.roc_auc_score),
    "pr_auc": _needs_both_classes(skm.average_precision_score),
    "log_loss": lambda y, p: skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]),
    "brier": lambda y, p: skm.brier_score_loss(y, p, labels=[0, 1]),
}


def _metric_at(name: str, threshold: float) -> Callable[[np.ndarray, np.ndarray], float]:
    if name in _SCORE_METRICS:
        return _SCORE_METRICS[name]
    at_threshold = _THRESHOLD_METRICS[name]
    return lambda y, p: float(at_threshold(y, (p >= threshold).astype(int)))


def evaluate_binary(
    y_val: Sequence[int],
    p_val: Sequence[float],
    y_test: Sequence[int],
    p_test: Sequence[float],
    rule: str = "youden",
    groups_test: Sequence[object] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> BinaryEvaluation:
    """Choose the threshold on validation, then report test metrics with bootstrap CIs.

    The table (:class:`BinaryEvaluation`) flags each degenerate interval in ``ci_degenerate``.
    """
    threshold = choose_threshold(y_val, p_val, rule=rule)
    point = classification_metrics(y_test, p_test, threshold)
    y, p = _as_binary(y_test, p_test)
    if groups_test is not None and len(groups_test) != y.size:
        raise ValueError(f"groups_test has {len(groups_test)} values for {y.size} samples")
    # the resamples of bootstrap_interval(..., groups=groups_test, seed=seed), all metrics at once
    resampled = _weighted_metrics(y, p, threshold,
                                  _resample_weights(y.size, groups_test, n_boot, seed))
    rows = []
    for name in [*_THRESHOLD_METRICS, *_SCORE_METRICS]:
        ci = _interval(resampled[name], confidence=0.95)
        rows.append({"metric": name, "value": point[name], "ci_low": ci.low,
                     "ci_high": ci.high, "ci_degenerate": ci.degenerate})
    return BinaryEvaluation(threshold=threshold, rule=rule, table=pd.DataFrame(rows))


def calibration_table(
    y_true: Sequence[int], y_prob: Sequence[float], n_bins: int = 5,
    groups: Sequence[object] | None = None,
) -> pd.DataFrame:
    """Observed fraction of positives against mean predicted probability, per bin (reliability).

    The bins are those of :func:`sklearn.calibration.calibration_curve` with
    ``strategy="quantile"``: edges at the 0, 1/n_bins, ..., 1 quantiles of ``y_prob``, a
    probability equal to an inner edge in the lower bin; empty bins (tied probabilities) are
    left out. Each bin's sample count -- and, with ``groups``, its patient count -- says how much
    a point of the reliability diagram can be trusted: a bin of 3 patients' 12 patches is
    barely evidence.

    Parameters
    ----------
    y_true, y_prob : array-like
        Labels (0/1) and predicted probabilities of class 1.
    n_bins : int, default 5
        Quantile bins.
    groups : array-like, optional
        Patient (or other group) of every sample.

    Returns
    -------
    DataFrame
        One row per non-empty bin, by increasing probability: ``mean_predicted,
        fraction_positive, n_samples`` and, with ``groups``, ``n_patients`` (distinct groups in
        the bin).
    """
    y, p = _as_binary(y_true, y_prob)
    edges = np.percentile(p, np.linspace(0, 1, n_bins + 1) * 100)
    bins = np.searchsorted(edges[1:-1], p)
    table = pd.DataFrame({"bin": bins, "p": p, "y": y})
    if groups is not None:
        groups = np.asarray(groups).ravel()
        if groups.shape != p.shape:
            raise ValueError(f"groups has {groups.size} values for {p.size} samples")
        table["group"] = groups
    by_bin = table.groupby("bin", sort=True)
    out = pd.DataFrame({"mean_predicted": by_bin["p"].mean(),
                        "fraction_positive": by_bin["y"].mean(),
                        "n_samples": by_bin.size()})
    if groups is not None:
        out["n_patients"] = by_bin["group"].nunique()
    return out.reset_index(drop=True)


def confusion_table(y_true: Sequence[int], y_prob: Sequence[float], threshold: float,
                    names: Sequence[str] = ("no cancer", "cancer")) -> pd.DataFrame:
    """The confusion matrix as a labelled DataFrame (rows: truth, columns: prediction)."""
    y, p = _as_binary(y_true, y_prob)
    matrix = skm.confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    return pd.DataFrame(matrix, index=[f"true {n}" for n in names],
                        columns=[f"predicted {n}" for n in names])
