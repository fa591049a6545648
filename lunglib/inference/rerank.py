"""Re-rank whole-scan nodule candidates with a false-positive reducer.

A whole-scan segmenter lists candidates (:func:`lunglib.inference.find_candidates`) by its own
peak probability; on real CT most of them are vessels. :func:`rerank_candidates` scores each
candidate with a second model that looks at a small axial crop around it -- the real-data
``nodule_reducer`` that lunglib ships (:func:`lunglib.models.pretrained.load_pretrained`) -- and
sorts the list by that score, keeping the segmenter's own order in ``segmenter_rank``.
:func:`lunglib.predict.predict_scan` does this on real scans.

The crops are cut by :func:`lunglib.preprocess.axial_patch` and windowed by
:func:`lunglib.preprocess.window_channels` with the bundle's own windows -- the two functions that
made the reducer's training input::

    from lunglib.models.pretrained import load_pretrained

    model, info = load_pretrained("nodule_reducer")
    ranked = rerank_candidates(scan, candidates, model, info)

What re-ranking does to the rank of real nodules is measured by
``benchmarks/bench_lidc_detection.py`` (``docs/results.md``, "Detection on a real scan").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

POINT_COLUMNS = ("centroid_z", "centroid_y", "centroid_x")
"""The candidate-table columns that give the point the reducer looks at (voxel indices)."""
RERANK_COLUMNS = ("segmenter_rank", "reducer_score")
"""The columns :func:`rerank_candidates` adds."""


def reducer_scores(
    scan,
    candidates: pd.DataFrame,
    model,
    info: Mapping[str, object],
) -> np.ndarray:
    """The reducer's "nodule or not" probability at each candidate's centroid.

    For each row, a square axial crop of ``scan.hu`` on the slice ``round(centroid_z)``, centred
    on ``(centroid_y, centroid_x)``: ``info["input_size"]`` pixels a side, each
    ``info["target_spacing_mm"]`` mm (points outside the scan read as air, -1024 HU). The crops
    are windowed into the model's input (:func:`lunglib.preprocess.window_channels`) and scored;
    with ``info["tta"] == "dihedral"`` the mean over the 8 dihedral views.

    Why the centroid, not the peak voxel: the reducer was trained on crops centred on the centre
    of mass of the readers' outline (moved by up to 2 mm), which is what a compact component's
    centroid is. A candidate table does not carry a peak voxel, and a saturated segmenter has
    many voxels at probability 1.0, so "the peak" would be an arbitrary one of them, often at
    the component's edge. The price: the centroid of a curved or branching component (a vessel)
    may lie outside it, and the crop then shows the structure around that point. Each candidate
    is scored on one slice, as the reducer was trained. ``docs/results.md`` compares the
    choices on the real LIDC-IDRI case.

    Parameters
    ----------
    scan : CTScan
        The scan the candidates were found in: ``hu`` (z, y, x) and ``spacing`` (z, y, x) mm
        (any object with these two).
    candidates : DataFrame
        One row per candidate with ``centroid_z``, ``centroid_y``, ``centroid_x`` (voxel
        indices in ``scan``), e.g. from :func:`lunglib.inference.find_candidates`.
    model : keras.Model
        The reducer: input ``(size, size, len(windows))``, one sigmoid output.
    info : mapping
        The reducer bundle's metadata: ``input_size``, ``target_spacing_mm``, ``windows`` (one
        input channel each, :func:`lunglib.preprocess.window_channels`) and, optionally,
        ``tta`` (``"dihedral"`` or ``"none"``).

    Returns
    -------
    ndarray of float (n,)
        One probability per row of ``candidates``, in its order (empty for an empty table).

    Raises
    ------
    ValueError
        When the table lacks the centroid columns, or the metadata does not describe a reducer
        that lunglib can feed.
    """
    from lunglib.augment import predict_tta
    from lunglib.preprocess import axial_patch, window_channels
    from lunglib.training import predict_proba

    missing = [c for c in POINT_COLUMNS if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates lack column(s) {missing}: pass the table of "
                         "lunglib.inference.find_candidates (voxel centroids of the scan)")
    for key in ("input_size", "target_spacing_mm", "windows"):
        if key not in info:
            raise ValueError(f"the reducer's metadata has no {key!r}: load it with "
                             "lunglib.models.pretrained.load_pretrained('nodule_reducer')")
    tta = info.get("tta") or "none"
    if tta not in ("dihedral", "none"):
        raise ValueError(f"unknown test-time augmentation {tta!r} in the reducer's metadata "
                         "(lunglib knows 'dihedral' and 'none'): update lunglib")
    if len(candidates) == 0:
        return np.zeros(0, dtype=np.float64)

    hu = np.asarray(scan.hu)
    if hu.ndim != 3:
        raise ValueError(f"scan.hu must be a (z, y, x) volume, got shape {hu.shape}")
    in_plane = tuple(float(s) for s in scan.spacing[1:])  # (row, col) mm of an axial slice
    size, target = int(info["input_size"]), float(info["target_spacing_mm"])
    points = candidates[list(POINT_COLUMNS)].to_numpy(dtype=float)
    if not np.isfinite(points).all():
        raise ValueError("some candidates have no centroid (NaN): drop them before re-ranking")
    slices = np.clip(np.rint(points[:, 0]).astype(int), 0, hu.shape[0] - 1)
    crops = np.stack([axial_patch(hu[z], (row, col), size, in_plane, target, fill=-1024.0)
                      for z, (row, col) in zip(slices, points[:, 1:], strict=True)])
    x = window_channels(crops, [tuple(w) for w in info["windows"]])

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(predict_proba(model, batch), dtype=np.float64).reshape(len(batch))

    return predict_tta(predict, x, tta) if tta == "dihedral" else predict(x)


def rerank_candidates(
    scan,
    candidates: pd.DataFrame,
    model,
    info: Mapping[str, object],
) -> pd.DataFrame:
    """The candidates sorted by the reducer's score, with the segmenter's rank kept.

    Parameters
    ----------
    scan, candidates, model, info
        As for :func:`reducer_scores`; ``candidates`` in the segmenter's order (most probable
        first, as :func:`lunglib.inference.find_candidates` returns them).

    Returns
    -------
    DataFrame
        A copy of ``candidates`` with two more columns -- ``segmenter_rank`` (1-based position
        of the row in the incoming table) and ``reducer_score`` (:func:`reducer_scores`) --
        sorted by ``reducer_score``, highest first; ties keep the segmenter's order. The index
        is 0..n-1. An empty table comes back empty, with the two columns.

    Raises
    ------
    ValueError
        When ``candidates`` already has ``segmenter_rank`` or ``reducer_score`` (it was
        re-ranked before: pass the segmenter's table), or as :func:`reducer_scores`.
    """
    present = [c for c in RERANK_COLUMNS if c in candidates.columns]
    if present:
        raise ValueError(f"candidates already have {present}: they were re-ranked before; pass "
                         "the segmenter's own table (find_candidates) so that segmenter_rank "
                         "is its order")
    scores = reducer_scores(scan, candidates, model, info)
    out = candidates.reset_index(drop=True)
    out["segmenter_rank"] = np.arange(1, len(out) + 1, dtype=np.int64)
    out["reducer_score"] = scores
    return out.sort_values("reducer_score", ascending=False, kind="stable", ignore_index=True)
