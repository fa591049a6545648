"""Detection scoring as in LUNA16: candidates matched to nodule centres, FROC and the CPM.

A whole-scan detector answers with a list of candidates per scan (a position in mm and a
score); the truth is a list of nodules (centre in mm and diameter). LUNA16 (Setio et al.,
*Medical Image Analysis* 42, 2017) scores such lists with the **FROC** curve -- sensitivity
against the mean number of false positives per scan as the score threshold falls -- and its
summary, the **competition performance metric (CPM)**: the mean sensitivity at 1/8, 1/4, 1/2,
1, 2, 4 and 8 false positives per scan, read off the curve by linear interpolation as the
challenge's evaluation script does.

The matching rule is LUNA16's: a candidate is a hit when it lies within a nodule's radius of the
nodule's centre. A nodule counts once, with the highest score among the candidates that hit it;
further hits on the same nodule are neither true nor false positives. Every candidate that hits
no nodule is a false positive. (LUNA16's "irrelevant findings" -- nodules < 3 mm and
non-nodules that readers marked -- are not modelled; drop such candidates before scoring.)

Written out here rather than imported: MONAI's ``compute_froc_curve_data`` and
``compute_froc_score`` do the curve arithmetic but need PyTorch, which lunglib does not use, and
neither library has the matching to nodule centres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

LUNA16_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""The false-positive rates per scan at which the CPM averages the sensitivity."""

_POSITION = ("x_mm", "y_mm", "z_mm")


@dataclass(frozen=True)
class FROC:
    """A FROC curve: at each threshold, the sensitivity and the false positives per scan.

    ``thresholds`` fall, ``fps_per_scan`` and ``sensitivity`` rise; the first point is
    (0, 0) at threshold +inf. ``n_nodules`` and ``n_scans`` are the denominators.
    """

    thresholds: np.ndarray
    fps_per_scan: np.ndarray
    sensitivity: np.ndarray
    n_nodules: int
    n_scans: int

    def sensitivity_at(self, fp_rates: Sequence[float] = LUNA16_FP_RATES) -> np.ndarray:
        """The sensitivity at each false-positive rate, linearly interpolated on the curve
        (beyond its last point: the last sensitivity, as in the LUNA16 script)."""
        # where several points share one rate, the curve reaches the highest of them
        rates, first = np.unique(self.fps_per_scan, return_index=True)
        best = np.maximum.reduceat(self.sensitivity, first)
        return np.interp(np.asarray(fp_rates, dtype=float), rates, best)

    def cpm(self, fp_rates: Sequence[float] = LUNA16_FP_RATES) -> float:
        """The competition performance metric: the mean of :meth:`sensitivity_at`."""
        return float(np.mean(self.sensitivity_at(fp_rates)))


def match_candidates(candidates: pd.DataFrame, nodules: pd.DataFrame) -> pd.DataFrame:
    """Mark each candidate as the hit of a nodule, a repeated hit, or a false positive.

    Parameters
    ----------
    candidates : DataFrame
        Columns ``scan``, ``x_mm``, ``y_mm``, ``z_mm`` and ``score``, one row per candidate.
    nodules : DataFrame
        Columns ``scan``, ``x_mm``, ``y_mm``, ``z_mm`` and ``diameter_mm``, one row per true
        nodule.

    Returns
    -------
    DataFrame
        ``candidates`` with ``nodule`` (the row position in ``nodules`` of the nodule it hits,
        the nearest one when it hits several; -1 for none) and ``kind``: ``"tp"`` for the
        highest-scoring hit of a nodule, ``"repeat"`` for its other hits, ``"fp"`` otherwise.
    """
    _check_columns(candidates, ("scan", *_POSITION, "score"), "candidates")
    _check_columns(nodules, ("scan", *_POSITION, "diameter_mm"), "nodules")
    if (nodules["diameter_mm"] <= 0).any():
        raise ValueError("every nodule needs a positive diameter_mm")
    nodules = nodules.reset_index(drop=True)
    out = candidates.copy()
    out["nodule"] = -1
    for scan, rows in out.groupby("scan", sort=False):
        truth = nodules[nodules["scan"] == scan]
        if truth.empty:
            continue
        here = rows[list(_POSITION)].to_numpy(float)
        centres = truth[list(_POSITION)].to_numpy(float)
        distance = np.linalg.norm(here[:, None, :] - centres[None, :, :], axis=2)
        inside = distance <= truth["diameter_mm"].to_numpy(float)[None, :] / 2
        nearest = np.where(inside, distance, np.inf).argmin(axis=1)
        hit = inside.any(axis=1)
        out.loc[rows.index[hit], "nodule"] = truth.index.to_numpy()[nearest[hit]]
    out["kind"] = np.where(out["nodule"] >= 0, "repeat", "fp")
    hits = out[out["nodule"] >= 0]
    best = hits.sort_values("score", ascending=False, kind="stable").groupby("nodule").head(1)
    out.loc[best.index, "kind"] = "tp"
    return out


def froc(candidates: pd.DataFrame, nodules: pd.DataFrame, n_scans: int | None = None) -> FROC:
    """The FROC curve of a detector's candidates against the true nodules (LUNA16's rules).

    Parameters
    ----------
    candidates, nodules : DataFrame
        As for :func:`match_candidates`.
    n_scans : int, optional
        Scans evaluated (the false positives are averaged over them). Default: the scans named
        in ``candidates`` or ``nodules`` -- pass it when some scans have neither.

    Returns
    -------
    FROC
        One point per distinct candidate score, plus (0, 0).
    """
    matched = match_candidates(candidates, nodules)
    if n_scans is None:
        n_scans = len(set(candidates["scan"]) | set(nodules["scan"]))
    if n_scans <= 0:
        raise ValueError("FROC needs at least one scan")
    if len(nodules) == 0:
        raise ValueError("FROC needs at least one true nodule (its sensitivity is undefined)")
    tp_scores = np.sort(matched.loc[matched["kind"] == "tp", "score"].to_numpy(float))
    fp_scores = np.sort(matched.loc[matched["kind"] == "fp", "score"].to_numpy(float))
    thresholds = np.unique(np.concatenate([tp_scores, fp_scores]))[::-1]
    # candidates scoring >= t, counted by binary search in the sorted scores
    n_tp = len(tp_scores) - np.searchsorted(tp_scores, thresholds, side="left")
    n_fp = len(fp_scores) - np.searchsorted(fp_scores, thresholds, side="left")
    return FROC(
        thresholds=np.concatenate([[np.inf], thresholds]),
        fps_per_scan=np.concatenate([[0.0], n_fp / n_scans]),
        sensitivity=np.concatenate([[0.0], n_tp / len(nodules)]),
        n_nodules=len(nodules),
        n_scans=int(n_scans),
    )


def nodule_centres(labels: np.ndarray, scan, scan_name: str = "scan") -> pd.DataFrame:
    """The nodules of a label mask as LUNA16-style rows: centre (world mm) and diameter.

    Parameters
    ----------
    labels : ndarray (z, y, x)
        0 background, k inside nodule k (a dataset's ``nodule_mask``); a boolean mask counts as
        one nodule.
    scan : CTScan
        Gives the geometry (``voxel_to_world``, ``spacing``).
    scan_name : str
        The ``scan`` column, to match the candidates' (use a pseudonym, not a patient id).

    Returns
    -------
    DataFrame
        Columns ``scan, nodule, x_mm, y_mm, z_mm, diameter_mm``: the centre of mass of each
        label and the diameter of the sphere of its volume (the radius is the hit distance).
    """
    from lunglib.datasets.points import label_centres

    centres = label_centres(np.asarray(labels).astype(np.int32), scan)
    return centres.assign(scan=scan_name)[["scan", "nodule", *_POSITION, "diameter_mm"]]


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; it needs {list(columns)}")
