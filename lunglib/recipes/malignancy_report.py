"""Score the malignancy recipe's cross-validation table at three evaluation levels.

:func:`lunglib.recipes.malignancy.cross_validate_malignancy` returns one row per predicted
outline; this module turns it into the reported figures. The same trained models, folds and
thresholding rule serve every level:

``outline``
    PRIMARY: one row per rated outline, the outlining reader's label.
``outline-agg``
    The same rows and labels, each outline's prediction replaced by the mean over every outline
    of its nodule in that split (all readers' views, rating 3 included: inputs only, no labels),
    on validation too, so the threshold is chosen as scored.
``nodule``
    One row per nodule, prediction = the mean over its outlines, label = the readers'
    consensus (:func:`consensus_label` of the mean of every reader's rating), nodules the
    readers put between 2 and 4 left out.

Every fold's threshold maximises accuracy on that fold's validation patients at the level scored
(:func:`lunglib.evaluation.choose_threshold`, rule ``"accuracy"``); the test fold is scored once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from lunglib.evaluation import aggregate_by_group, choose_threshold, classification_metrics
from lunglib.evaluation.classification import paired_bootstrap_ci

LEVELS = {
    "outline": "per outline, the outlining reader's label",
    "outline-agg": "per outline, the outlining reader's label, prediction = mean over the "
                   "nodule's outlines (--aggregate nodule)",
    "nodule": "per nodule, the readers' consensus label (mean rating <=2 / >=4), prediction = "
              "mean over the nodule's outlines",
}
METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def consensus_label(reader_mean: np.ndarray) -> np.ndarray:
    """1 if the readers' mean malignancy is >= 4, 0 if <= 2, -1 in between (not evaluated)."""
    return np.where(reader_mean >= 4, 1, np.where(reader_mean <= 2, 0, -1))


def level_view(rows: pd.DataFrame, level: str = "outline"
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, predictions, patients) of one method's fold split at an evaluation level.

    Parameters
    ----------
    rows : DataFrame
        The rows of the cross-validation table of one method, fold and split, in table order.
    level : {"outline", "outline-agg", "nodule"}
        See the module notes; ``nodule`` rows come in sorted nodule-id order.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    y, p, patients = (rows[c].to_numpy() for c in ("y", "p", "patient"))
    if level == "outline":
        keep = y >= 0
        return y[keep], p[keep], patients[keep]
    nodules = rows["nodule"].to_numpy()
    p = aggregate_by_group(p, nodules)
    if level == "outline-agg":
        keep = y >= 0
        return y[keep], p[keep], patients[keep]
    _, first = np.unique(nodules, return_index=True)
    label = consensus_label(rows["reader_mean"].to_numpy()[first])
    keep = label >= 0
    return label[keep], p[first][keep], patients[first][keep]


def _methods(table: pd.DataFrame, methods: Sequence[str] | None) -> list[str]:
    present = list(pd.unique(table["method"]))
    return present if methods is None else [m for m in methods if m in present]


def _splits(table: pd.DataFrame, method: str) -> dict[int, dict[str, pd.DataFrame]]:
    """``{fold: {"val": rows, "test": rows}}`` of one method, folds in increasing order."""
    rows = table[table["method"] == method]
    return {int(f): dict(tuple(part.groupby("split", sort=False)))
            for f, part in sorted(rows.groupby("fold"), key=lambda kv: kv[0])}


def fold_metrics(table: pd.DataFrame, level: str = "outline",
                 methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Test metrics of every method and fold at the validation-chosen threshold.

    Returns
    -------
    DataFrame
        One row per (method, fold): ``threshold`` (chosen on the fold's validation rows at
        ``level``), ``n`` test rows, :data:`METRICS` and ``seconds``.
    """
    out = []
    for m in _methods(table, methods):
        for fold, parts in _splits(table, m).items():
            yv, pv, _ = level_view(parts["val"], level)
            yt, pt, _ = level_view(parts["test"], level)
            threshold = choose_threshold(yv, pv, rule="accuracy")
            scores = classification_metrics(yt, pt, threshold)
            out.append({"method": m, "fold": fold, "threshold": threshold, "n": len(yt),
                        **{k: scores[k] for k in METRICS},
                        "seconds": float(parts["test"]["seconds"].iloc[0])})
    return pd.DataFrame(out)


def summarize_malignancy(table: pd.DataFrame, level: str = "outline",
                         methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and (population) standard deviation over the folds of every test metric.

    Returns
    -------
    DataFrame
        One row per method: ``<metric>`` and ``<metric>_std`` for :data:`METRICS`,
        ``pooled_roc_auc`` (the out-of-fold predictions of all folds pooled), ``n`` (pooled test
        rows), ``folds`` and ``seconds`` (summed over the folds).
    """
    per_fold = fold_metrics(table, level, methods)
    out = []
    for m in _methods(table, methods):
        rows = per_fold[per_fold["method"] == m]
        pooled = [level_view(parts["test"], level) for parts in _splits(table, m).values()]
        yy = np.concatenate([v[0] for v in pooled])
        pp = np.concatenate([v[1] for v in pooled])
        summary: dict[str, object] = {"method": m}
        for k in METRICS:
            summary[k] = float(rows[k].to_numpy().mean())
            summary[f"{k}_std"] = float(rows[k].to_numpy().std())
        summary.update({"pooled_roc_auc": float(roc_auc_score(yy, pp)), "n": len(yy),
                        "folds": len(rows), "seconds": float(rows["seconds"].sum())})
        out.append(summary)
    return pd.DataFrame(out)


def compare_with_reference(table: pd.DataFrame, reference: str = "area-logreg",
                           level: str = "outline", methods: Sequence[str] | None = None,
                           n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Every method against ``reference`` on the same test samples (ROC-AUC differences).

    Per fold the ROC-AUC difference (folds won: difference > 0); pooled over the folds the
    out-of-fold ROC-AUC difference with a 95 % CI from a paired bootstrap over patients
    (:func:`lunglib.evaluation.classification.paired_bootstrap_ci`; one random stream for all
    methods, in order). It holds the trained models fixed, so it covers test-sample noise, not
    training noise. "Clearly beats the reference" = the CI excludes 0.

    Returns
    -------
    DataFrame
        One row per method other than ``reference``: ``fold_differences`` (list),
        ``folds_won``, ``folds``, ``difference``, ``ci_low``, ``ci_high``. Empty when the
        table has no ``reference`` rows.
    """
    if reference not in set(table["method"]):
        return pd.DataFrame()
    rng = np.random.default_rng(seed)
    ref = _splits(table, reference)
    out = []
    for m in _methods(table, methods):
        if m == reference:
            continue
        y, pm, pr, patients, diffs = [], [], [], [], []
        for fold, parts in _splits(table, m).items():
            y_f, pm_f, pat_f = level_view(parts["test"], level)
            _, pr_f, _ = level_view(ref[fold]["test"], level)
            diffs.append(float(roc_auc_score(y_f, pm_f) - roc_auc_score(y_f, pr_f)))
            y.append(y_f)
            pm.append(pm_f)
            pr.append(pr_f)
            patients.append(pat_f)
        y, pm, pr, patients = map(np.concatenate, (y, pm, pr, patients))
        low, high = paired_bootstrap_ci(y, pm, pr, roc_auc_score, n_boot=n_boot, groups=patients,
                                        seed=rng)
        out.append({"method": m, "fold_differences": diffs,
                    "folds_won": sum(d > 0 for d in diffs), "folds": len(diffs),
                    "difference": float(roc_auc_score(y, pm) - roc_auc_score(y, pr)),
                    "ci_low": low, "ci_high": high})
    return pd.DataFrame(out)
