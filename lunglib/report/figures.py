"""The report's figures, each drawn from a run folder's files and returned as PNG bytes.

Figures are made with :class:`matplotlib.figure.Figure` directly (no pyplot), so building a
report neither needs a display nor changes the caller's matplotlib backend or open figures.

Curves carry **patient-bootstrap** 95% bands: whole patients are resampled, as
:func:`lunglib.evaluation.bootstrap_ci` does for the metrics, so that several samples of one
patient do not pass for independent evidence.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from sklearn import metrics as skm

from lunglib.evaluation.classification import calibration_table, confusion_table
from lunglib.viz.viewer import window_limits

CURVE_GRID = np.linspace(0.0, 1.0, 101)
TRUTH_COLOUR = "tab:red"
PREDICTION_COLOUR = "tab:cyan"
OUTLINE_COLOUR = "lime"


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes at its own size (constrained layout already fits it, so no
    second drawing pass for a tight bounding box)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _patient_members(groups: np.ndarray) -> list[np.ndarray]:
    codes = pd.factorize(groups)[0]
    return [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]


def bootstrap_band(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray,
    curve: Callable[[np.ndarray, np.ndarray], np.ndarray], n_boot: int = 200, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray] | None:
    """2.5th and 97.5th percentiles of ``curve(y, p)`` (values on a fixed grid) over patient
    resamples; resamples with one class only are skipped. None when fewer than 20 are left."""
    rng = np.random.default_rng(seed)
    members = _patient_members(groups)
    curves = []
    for _ in range(n_boot):
        index = np.concatenate([members[c] for c in rng.integers(0, len(members), len(members))])
        if len(np.unique(y[index])) == 2:
            curves.append(curve(y[index], p[index]))
    if len(curves) < 20:
        return None
    low, high = np.percentile(np.asarray(curves), [2.5, 97.5], axis=0)
    return low, high


def _cumulative_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, highest first (as sklearn's curves;
    written with NumPy because the bootstrap draws a curve hundreds of times)."""
    order = np.argsort(-p, kind="mergesort")
    ranked = p[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    tps = np.cumsum(y[order])[last_of_each]
    return tps, last_of_each + 1 - tps


def roc_on_grid(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """True-positive rate at the false-positive rates of :data:`CURVE_GRID`."""
    tps, fps = _cumulative_counts(y, p)
    return np.interp(CURVE_GRID, np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]])


def precision_on_grid(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Interpolated precision (the best precision at this recall or higher) on the recall grid."""
    tps, fps = _cumulative_counts(y, p)
    # recall ascending, starting from sklearn's (recall 0, precision 1)
    recall, precision = np.r_[0.0, tps / tps[-1]], np.r_[1.0, tps / (tps + fps)]
    best_from_here = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.clip(np.searchsorted(recall, CURVE_GRID, side="left"), 0, recall.size - 1)
    return best_from_here[index]


def _band(ax, y, p, groups, curve, colour: str) -> None:
    band = bootstrap_band(y, p, groups, curve)
    if band is not None:
        ax.fill_between(CURVE_GRID, band[0], band[1], color=colour, alpha=0.2, linewidth=0,
                        label="95% band (patient bootstrap)")


def roc_figure(y: np.ndarray, p: np.ndarray, groups: np.ndarray,
               threshold: float | None = None) -> bytes:
    """ROC curve of the test samples with its patient-bootstrap band and the operating point."""
    fig = _figure(4.4, 4.0)
    ax = fig.add_subplot()
    fpr, tpr, _ = skm.roc_curve(y, p)
    _band(ax, y, p, groups, roc_on_grid, "tab:blue")
    ax.plot(fpr, tpr, color="tab:blue", lw=2,
            label=f"ROC (AUC {skm.roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
    if threshold is not None:
        pred = p >= threshold
        ax.plot([pred[y == 0].mean()], [pred[y == 1].mean()], "o", color="black",
                label=f"threshold {threshold:.3f}")
    ax.set(xlabel="false-positive rate (1 - specificity)", ylabel="true-positive rate (recall)",
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title="ROC curve, test patients")
    ax.legend(loc="lower right", fontsize=8)
    return figure_png(fig)


def pr_figure(y: np.ndarray, p: np.ndarray, groups: np.ndarray,
              threshold: float | None = None) -> bytes:
    """Precision-recall curve with its patient-bootstrap band and the prevalence line."""
    fig = _figure(4.4, 4.0)
    ax = fig.add_subplot()
    precision, recall, _ = skm.precision_recall_curve(y, p)
    _band(ax, y, p, groups, precision_on_grid, "tab:purple")
    ax.step(recall, precision, where="post", color="tab:purple", lw=2,
            label=f"PR (AUC {skm.average_precision_score(y, p):.3f})")
    ax.axhline(y.mean(), ls=":", color="grey", label=f"prevalence {y.mean():.3f}")
    if threshold is not None:
        pred = p >= threshold
        if pred.any():
            ax.plot([pred[y == 1].mean()], [y[pred].mean()], "o", color="black",
                    label=f"threshold {threshold:.3f}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", xlim=(-0.02, 1.02),
           ylim=(-0.02, 1.05), title="Precision-recall curve, test patients")
    ax.legend(loc="lower left", fontsize=8)
    return figure_png(fig)


def confusion_figure(y: np.ndarray, p: np.ndarray, threshold: float) -> bytes:
    """The confusion matrix of the test samples at the validation-chosen threshold."""
    table = confusion_table(y, p, threshold)
    counts = table.to_numpy()
    fig = _figure(4.0, 3.4)
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(int(counts.max()), 1))
    for (row, col), count in np.ndenumerate(counts):
        dark = count > counts.max() / 2
        ax.text(col, row, str(count), ha="center", va="center", fontsize=16,
                color="white" if dark else "black")
    ax.set_xticks([0, 1], ["no cancer", "cancer"])
    ax.set_yticks([0, 1], ["no cancer", "cancer"])
    ax.set(xlabel="predicted", ylabel="true",
           title=f"Confusion matrix at threshold {threshold:.3f}")
    return figure_png(fig)


def calibration_figure(y: np.ndarray, p: np.ndarray, groups: np.ndarray, brier: float,
                       n_bins: int = 5) -> bytes:
    """Observed against predicted probability per quantile bin, each point labelled with its
    number of patients, and the Brier score in the title."""
    bins = calibration_table(y, p, n_bins, groups=groups)
    fig = _figure(4.4, 4.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfectly calibrated")
    ax.plot(bins.mean_predicted, bins.fraction_positive, "o-", color="tab:green", lw=2,
            label=f"test samples, {len(bins)} quantile bins")
    for row in bins.itertuples():
        ax.annotate(f"{row.n_patients} pat.", (row.mean_predicted, row.fraction_positive),
                    textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction with cancer",
           xlim=(-0.02, 1.02), ylim=(-0.05, 1.05), title=f"Calibration (Brier {brier:.3f})")
    ax.legend(loc="lower right", fontsize=8)
    return figure_png(fig)


def tuning_figure(results: pd.DataFrame) -> bytes:
    """Validation score of every trial in the order run, one colour per search, best circled."""
    fig = _figure(6.0, 3.4)
    ax = fig.add_subplot()
    searches = list(dict.fromkeys(results["search"])) if "search" in results else [None]
    offset = 0
    for search, colour in zip(searches, ("tab:blue", "tab:orange", "tab:green", "tab:red"),
                              strict=False):
        rows = results if search is None else results[results["search"] == search]
        trials = np.arange(len(rows)) + offset
        ax.plot(trials, rows["score"], "o-", color=colour,
                label=f"{search} search" if search else "trials")
        ax.plot(trials, np.maximum.accumulate(rows["score"].fillna(-np.inf)), ls="--",
                color=colour, alpha=0.6, lw=1)
        offset += len(rows)
    best = int(np.nanargmax(results["score"].to_numpy()))
    ax.plot([best], [results["score"].iloc[best]], "o", ms=14, mfc="none", mec="black",
            label="best")
    ax.set(xlabel="trial (in the order run)", ylabel="validation ROC-AUC",
           title="Hyperparameter search (dashed: best so far)")
    ax.legend(fontsize=8, loc="lower right")
    return figure_png(fig)


def _slices(array: np.ndarray) -> np.ndarray:
    """``(k, H, W)`` from ``(k, H, W)`` or a channels-last ``(k, H, W, 1)``."""
    array = np.asarray(array)
    return array[..., 0] if array.ndim == 4 and array.shape[-1] == 1 else array


def _overlay(ax, mask: np.ndarray, colour: str, alpha: float = 0.5) -> None:
    if mask.any():
        ax.imshow(np.ma.masked_where(~mask, mask), cmap=ListedColormap([colour]), alpha=alpha,
                  vmin=0, vmax=1, interpolation="nearest")


def _outline(ax, mask: np.ndarray, colour: str) -> None:
    if mask.any() and mask.shape[0] > 1 and mask.shape[1] > 1:
        ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.2)


def gallery_figure(gallery: Mapping[str, np.ndarray]) -> bytes:
    """Test cases as rows (best, median, worst Dice): CT | truth | prediction, lung window."""
    images = _slices(gallery["image"])
    truths, preds = _slices(gallery["truth"]) > 0, _slices(gallery["prediction"]) > 0.5
    low, high = window_limits("lung")
    k = len(images)
    fig = _figure(7.2, 2.5 * k + 0.5)
    axes = fig.subplots(k, 3, squeeze=False)
    for row in range(k):
        label, score = str(gallery["label"][row]), float(gallery["dice"][row])
        for col, title in enumerate(("CT (lung window)", "truth", "prediction")):
            ax = axes[row, col]
            ax.imshow(images[row], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            if col == 1:
                _overlay(ax, truths[row], TRUTH_COLOUR)
            elif col == 2:
                _overlay(ax, preds[row], PREDICTION_COLOUR)
                _outline(ax, truths[row], TRUTH_COLOUR)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
        axes[row, 0].set_ylabel(f"{label}\nDice {score:.3f}")
    fig.legend(handles=[Patch(color=TRUTH_COLOUR, alpha=0.5, label="truth (reference mask)"),
                        Line2D([], [], color=TRUTH_COLOUR, label="truth outline"),
                        Patch(color=PREDICTION_COLOUR, alpha=0.5, label="prediction")],
               loc="outside lower center", ncol=3, fontsize=8)
    return figure_png(fig)


def failures_figure(failures: Mapping[str, np.ndarray]) -> bytes:
    """Each misclassified test case: the CT slice in grey, then the Grad-CAM as a heat map over
    it with the true nodule outlined (where known)."""
    images, cams = _slices(failures["image"]), _slices(failures["cam"])
    truths = _slices(failures["truth"]) > 0
    k = len(images)
    fig = _figure(6.4, 3.0 * k + 0.6)
    axes = fig.subplots(k, 2, squeeze=False)
    heat = None
    for row in range(k):
        kind, probability = str(failures["kind"][row]), float(failures["probability"][row])
        for col in range(2):
            ax = axes[row, col]
            ax.imshow(images[row], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            if col == 1:
                heat = ax.imshow(cams[row], cmap="jet", vmin=0.0, vmax=1.0, alpha=0.45,
                                 interpolation="bilinear")
                _outline(ax, truths[row], OUTLINE_COLOUR)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_title(f"{kind}, p = {probability:.3f}", fontsize=10)
        axes[row, 1].set_title("Grad-CAM" + ("" if truths[row].any() else
                                             " (no true nodule outlined)"), fontsize=10)
    if heat is not None:
        fig.colorbar(heat, ax=axes[:, 1].tolist(), shrink=0.8, label="Grad-CAM (0-1)")
    fig.legend(handles=[Line2D([], [], color=OUTLINE_COLOUR, label="true nodule outline")],
               loc="outside lower center", fontsize=8)
    return figure_png(fig)
