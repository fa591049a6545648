"""Segmentation overlap and surface-distance metrics on numpy masks (no TensorFlow).

Three levels of Dice for a split of scans, which answer different questions:

- **per case** (:func:`score_cases`, then the mean): each scan scored on its own, then averaged
  -- every patient counts the same, so a healthy scan with one false-positive voxel, or a scan
  whose only nodule is a missed 7-voxel one, pulls the mean down by a whole case;
- **global** (:func:`dice_global`): intersections and sizes pooled over all voxels of all scans
  before the ratio, as LiTS reports "Dice global" beside "Dice per case" -- every *voxel* counts
  the same, so large structures weigh more;
- **per nodule** (:func:`score_nodules`): a box around each true nodule, false positives
  elsewhere ignored.

Conventions for empty masks, chosen so that per-case means stay meaningful:

- ``dice`` and ``iou`` of two empty masks are 1.0 (nothing to find, nothing found); of one empty
  and one non-empty mask 0.0.
- ``hausdorff95`` of two empty masks is 0.0; of exactly one empty mask it is ``nan`` (a distance
  to nothing is undefined), which :func:`summarize` leaves out of the mean and counts.
- ``surface_dice`` of two empty masks is 1.0 (as Dice; MONAI returns ``nan`` there), of exactly
  one empty mask 0.0.

Surface metrics (:func:`hausdorff95`, :func:`surface_dice`) follow the definitions of MONAI
(``compute_hausdorff_distance(percentile=95)``, ``compute_surface_dice``) and of DeepMind's
``surface-distance`` package (``compute_robust_hausdorff``,
``compute_surface_dice_at_tolerance``; Nikolov et al. 2021), built on one building block,
:func:`surface_distances`: the distances from each surface voxel of one mask to the other
mask's surface, each direction kept apart. They count surface *voxels*, as MONAI does; DeepMind's
package weighs each surface element by its area, which changes the numbers slightly at
anisotropic spacing. That package is not on PyPI, so the definitions are written here with
:mod:`scipy` and tested on hand-made cases with known answers.

Post-processing is chosen on validation patients, never on test ones: :func:`choose_postprocessing`
for whole-scan probability maps (threshold, minimum component volume and peak),
:func:`choose_binarization` for patches centred on a nodule (threshold, and whether to keep only
the :func:`central_component`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    return a > 0, b > 0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2|A and B| / (|A| + |B|)`` of two masks (nonzero = foreground).

    Returns 1.0 when both masks are empty.
    """
    a, b = _pair(a, b)
    total = a.sum() + b.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(a, b).sum() / total)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union (Jaccard index) of two masks; 1.0 when both are empty."""
    a, b = _pair(a, b)
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def _pooled_counts(
    truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]
) -> tuple[int, int, int]:
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} truth masks but {len(preds)} predictions; give one "
                         "prediction per case")
    if len(truths) == 0:
        raise ValueError("no cases given: a split-level score needs at least one case")
    shared = n_true = n_pred = 0
    for i, (t, p) in enumerate(zip(truths, preds, strict=True)):
        try:
            t, p = _pair(t, p)
        except ValueError as err:
            raise ValueError(f"case {i}: {err}") from None
        shared += int(np.logical_and(t, p).sum())
        n_true += int(t.sum())
        n_pred += int(p.sum())
    return shared, n_true, n_pred


def dice_global(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> float:
    """Split-level ("global") Dice: ``2 sum|A_i and B_i| / (sum|A_i| + sum|B_i|)`` over cases i.

    Intersections and mask sizes are summed over every voxel of every case of the split (the
    scans may differ in shape) before the ratio is taken -- the Dice of all scans laid side by
    side, the "Dice global" that LiTS reports beside the mean "Dice per case". It weighs each
    voxel equally, so it is dominated by large nodules and barely moved by a patient whose only
    nodule is a few voxels; the per-case mean weighs each patient equally. Report both.

    Parameters
    ----------
    truths, preds : sequence of ndarray
        Ground-truth and predicted masks (nonzero = foreground), case by case; each pair must
        have the same shape.

    Returns
    -------
    float
        1.0 when every mask of the split is empty (nothing to find, nothing found).
    """
    shared, n_true, n_pred = _pooled_counts(truths, preds)
    if n_true + n_pred == 0:
        return 1.0
    return float(2.0 * shared / (n_true + n_pred))


def iou_global(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> float:
    """Split-level ("global") IoU: pooled intersection over pooled union, as :func:`dice_global`.

    1.0 when every mask of the split is empty.
    """
    shared, n_true, n_pred = _pooled_counts(truths, preds)
    union = n_true + n_pred - shared
    if union == 0:
        return 1.0
    return float(shared / union)


def _labels_and_pred(labels: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    pred = np.asarray(pred) > 0
    if labels.shape != pred.shape:
        raise ValueError(f"labels {labels.shape} and pred {pred.shape} must have the same shape")
    if labels.dtype == bool:
        labels, _ = ndimage.label(labels, ndimage.generate_binary_structure(labels.ndim, 3))
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer label image or a boolean mask, got dtype "
                         f"{labels.dtype}; pass labels.astype(int) or labels > 0")
    return labels, pred


def error_breakdown(
    labels: np.ndarray, pred: np.ndarray, case_id: str = "", connectivity: int = 3
) -> dict:
    """Where a whole-scan Dice is lost: the voxels of a prediction sorted by kind of error.

    With ``TP`` shared voxels, ``FN`` missed and ``FP`` false voxels, Dice is
    ``2 TP / (2 TP + FN + FP)``; this splits ``FN`` and ``FP`` by cause, so one can tell
    detection errors from outline errors:

    - ``fn_missed``: voxels of true nodules that no predicted voxel touches (nodule not found);
    - ``fn_outline``: missed voxels of nodules that were found (outline too small);
    - ``fp_outline``: false voxels in predicted components that touch a true nodule (outline
      too large);
    - ``fp_elsewhere``: false voxels in predicted components that touch no nodule (false
      candidates, e.g. vessels).

    Summed over a split's cases, the counts give its global Dice (:func:`dice_global`) and what it
    would be without one kind of error.

    Parameters
    ----------
    labels : ndarray (z, y, x)
        Nodule label image (0 background, k inside nodule k), used as given; a *boolean* mask
        counts as one nodule per connected component (26-neighbourhood).
    pred : ndarray, same shape
        Predicted mask (nonzero = nodule).
    case_id : str, optional
        Kept under ``case_id``.
    connectivity : {1, 2, 3}, default 3
        Neighbourhood that makes predicted voxels one component (as
        :func:`lunglib.inference.candidate_mask`).

    Returns
    -------
    dict
        ``case_id, tp, fn_missed, fn_outline, fp_outline, fp_elsewhere, nodules, nodules_found,
        false_components``.
    """
    labels, pred = _labels_and_pred(labels, pred)
    truth = labels > 0
    structure = ndimage.generate_binary_structure(labels.ndim, connectivity)
    components, n_components = ndimage.label(pred, structure=structure)
    touching = np.unique(components[truth & pred])
    on_nodule = np.isin(components, touching[touching > 0])
    found = np.unique(labels[truth & pred])
    found = found[found > 0]
    in_found = np.isin(labels, found)
    false = pred & ~truth
    return {
        "case_id": str(case_id),
        "tp": int((truth & pred).sum()),
        "fn_missed": int((truth & ~in_found).sum()),
        "fn_outline": int((in_found & ~pred).sum()),
        "fp_outline": int((false & on_nodule).sum()),
        "fp_elsewhere": int((false & ~on_nodule).sum()),
        "nodules": int(len(np.unique(labels[truth]))),
        "nodules_found": int(len(found)),
        "false_components": int(n_components - np.count_nonzero(touching)),
    }


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


DEFAULT_NSD_TOLERANCE_MM = 1.0
"""Tolerance of the ``nsd`` column of :func:`score_cases` and :func:`score_nodules`, in mm.

About one to two pixels of the LIDC patches (0.5-0.9 mm) and one CT slice: a boundary drawn
within 1 mm of the reference counts as right. Nikolov et al. (2021) set the tolerance per organ
from the disagreement between human outliners; pass another one where that is known.
"""


def surface_distances(
    a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of one mask to the nearest surface voxel of the other.

    The surface of a mask is its foreground voxels with a background face-neighbour (or on the
    array border). Distances between voxel centres come from
    :func:`scipy.ndimage.distance_transform_edt` with ``sampling=spacing``, as MONAI's
    ``get_surface_distance``. Both directions are returned apart, because the surface metrics
    summarise each direction on its own (:func:`hausdorff95`, :func:`surface_dice`).

    Parameters
    ----------
    a, b : ndarray
        Masks of the same shape (nonzero = foreground), 2D or 3D.
    spacing : sequence of float, optional
        Voxel size per axis in mm, in array axis order. Default 1 per axis (distances in voxels).

    Returns
    -------
    a_to_b, b_to_a : ndarray of float
        One distance (mm) per surface voxel of ``a`` (of ``b``), in C order of the voxels. An
        empty mask has no surface voxels (an empty array); the distances *to* an empty mask are
        ``inf``.
    """
    a, b = _pair(a, b)
    if spacing is None:
        spacing = (1.0,) * a.ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != a.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} must give one positive size per axis of {a.shape}")
    surf_a, surf_b = _surface(a), _surface(b)

    def to_surface(surface: np.ndarray, points: np.ndarray) -> np.ndarray:
        if not surface.any():
            return np.full(int(points.sum()), np.inf)
        return ndimage.distance_transform_edt(~surface, sampling=spacing)[points]

    return to_surface(surf_b, surf_a), to_surface(surf_a, surf_b)


def _hausdorff95_of(a_to_b: np.ndarray, b_to_a: np.ndarray) -> float:
    if a_to_b.size == 0 and b_to_a.size == 0:
        return 0.0
    if a_to_b.size == 0 or b_to_a.size == 0:
        return float("nan")
    return float(max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)))


def _surface_dice_of(a_to_b: np.ndarray, b_to_a: np.ndarray, tolerance_mm: float) -> float:
    if not tolerance_mm >= 0:
        raise ValueError(f"tolerance_mm must be a distance >= 0, got {tolerance_mm}")
    total = a_to_b.size + b_to_a.size
    if total == 0:
        return 1.0
    within = np.count_nonzero(a_to_b <= tolerance_mm) + np.count_nonzero(b_to_a <= tolerance_mm)
    return float(within / total)


def hausdorff95(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile Hausdorff distance (HD95) between the surfaces of two masks, in mm.

    The definition of MONAI (``compute_hausdorff_distance(percentile=95)``) and DeepMind's
    ``surface-distance`` (``compute_robust_hausdorff(..., 95)``): the 95th percentile of each
    direction's surface distances (:func:`surface_distances`) taken *separately*, then the larger
    of the two. (medpy's ``hd95`` pools both directions before the percentile, so a few far-off
    voxels of a small false component are diluted by the other direction's many near ones; here
    they count in full.) Surface voxels are counted, not surface-element areas as in DeepMind's
    package; the percentile is NumPy's linear interpolation, as in MONAI.

    Parameters
    ----------
    a, b : ndarray
        Masks of the same shape (nonzero = foreground), 2D or 3D.
    spacing : sequence of float, optional
        Voxel size per axis in mm, in array axis order. Default 1 per axis (distances in voxels).

    Returns
    -------
    float
        0.0 when both masks are empty, ``nan`` when exactly one is.
    """
    return _hausdorff95_of(*surface_distances(a, b, spacing))


def surface_dice(
    a: np.ndarray,
    b: np.ndarray,
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    spacing: Sequence[float] | None = None,
) -> float:
    """Normalised surface Dice (NSD): the share of both surfaces drawn within a tolerance.

    Nikolov et al. (2021), as MONAI's ``compute_surface_dice``: (surface voxels of ``a`` within
    ``tolerance_mm`` of ``b``'s surface + surface voxels of ``b`` within ``tolerance_mm`` of
    ``a``'s surface) / (surface voxels of ``a`` + of ``b``), from :func:`surface_distances`
    (a distance equal to the tolerance counts as within). Unlike Dice it ignores the interior, so
    a boundary off by one voxel costs a large nodule as much as a small one.

    Parameters
    ----------
    a, b : ndarray
        Masks of the same shape (nonzero = foreground), 2D or 3D.
    tolerance_mm : float, default :data:`DEFAULT_NSD_TOLERANCE_MM`
        Largest boundary distance that counts as agreement, in the unit of ``spacing``.
    spacing : sequence of float, optional
        Voxel size per axis in mm. Default 1 per axis (tolerance in voxels).

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty (MONAI gives ``nan``: chosen here so that
        per-case means stay defined, as for :func:`dice`), 0.0 when exactly one is.
    """
    return _surface_dice_of(*surface_distances(a, b, spacing), tolerance_mm)


def _pair_scores(t: np.ndarray, p: np.ndarray, spacing: Sequence[float] | None,
                 nsd_tolerance_mm: float) -> dict[str, float | int]:
    """Every per-case column of :func:`score_cases` but the case id (surfaces computed once)."""
    to_p, to_t = surface_distances(t, p, spacing)
    return {
        "dice": dice(t, p),
        "iou": iou(t, p),
        "hd95_mm": _hausdorff95_of(to_p, to_t),
        "nsd": _surface_dice_of(to_p, to_t, nsd_tolerance_mm),
        "true_voxels": int(np.count_nonzero(t)),
        "pred_voxels": int(np.count_nonzero(p)),
    }


def score_cases(
    truth: Sequence[np.ndarray] | np.ndarray,
    pred: Sequence[np.ndarray] | np.ndarray,
    case_ids: Sequence[str],
    spacings: Sequence[Sequence[float]] | None = None,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> pd.DataFrame:
    """Dice, IoU, HD95 and normalised surface Dice for each (truth, prediction) pair.

    Parameters
    ----------
    truth, pred : sequence of ndarray
        Ground-truth and predicted masks, case by case (or stacked along axis 0).
    case_ids : sequence of str
        Group key of each case (e.g. a patient id), kept as the ``case_id`` column.
    spacings : sequence of spacing tuples, optional
        Voxel size of each case in mm, for ``hd95_mm`` and ``nsd``; without it HD95 and the
        tolerance are in voxels.
    nsd_tolerance_mm : float, default :data:`DEFAULT_NSD_TOLERANCE_MM`
        Tolerance of :func:`surface_dice`.

    Returns
    -------
    DataFrame
        Columns ``case_id, dice, iou, hd95_mm, nsd, true_voxels, pred_voxels``; one row per case.
    """
    if not len(truth) == len(pred) == len(case_ids):
        raise ValueError(
            f"truth ({len(truth)}), pred ({len(pred)}) and case_ids ({len(case_ids)}) "
            "must have the same length"
        )
    if spacings is not None and len(spacings) != len(truth):
        raise ValueError(f"spacings has {len(spacings)} entries for {len(truth)} cases")
    rows = []
    for i, (t, p) in enumerate(zip(truth, pred, strict=True)):
        spacing = None if spacings is None else spacings[i]
        rows.append({"case_id": str(case_ids[i]),
                     **_pair_scores(t, p, spacing, nsd_tolerance_mm)})
    return pd.DataFrame(rows)


def summarize(scores: pd.DataFrame, by: str = "case_id") -> pd.DataFrame:
    """Per-case and per-group means of the metrics from :func:`score_cases`.

    Each group (e.g. patient) is first averaged over its cases, so a patient with many patches
    does not dominate; ``nan`` HD95 values (one mask empty) are left out of the means and
    counted in ``hd95_undefined``. ``nsd`` is averaged when ``scores`` has it (tables made
    before it existed have not).

    Returns
    -------
    DataFrame
        Index ``per_case`` and ``per_<by>``; columns ``n, dice, iou, hd95_mm, [nsd,]
        hd95_undefined``.
    """
    missing = {by, "dice", "iou", "hd95_mm"} - set(scores.columns)
    if missing:
        raise ValueError(f"scores lacks column(s) {sorted(missing)}; make it with score_cases")
    metrics = ["dice", "iou", "hd95_mm", *(["nsd"] if "nsd" in scores.columns else [])]
    grouped = scores.groupby(by)[metrics].mean()
    rows = {
        "per_case": {"n": len(scores), **scores[metrics].mean().to_dict(),
                     "hd95_undefined": int(scores["hd95_mm"].isna().sum())},
        f"per_{by}": {"n": len(grouped), **grouped.mean().to_dict(),
                      "hd95_undefined": int(grouped["hd95_mm"].isna().sum())},
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def score_nodules(
    labels: np.ndarray,
    pred: np.ndarray,
    case_id: str,
    spacing: Sequence[float] | None = None,
    margin: Sequence[int] | int = (2, 8, 8),
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> pd.DataFrame:
    """Dice, IoU, HD95 and NSD in a box around each true nodule ("per-nodule" scores).

    Each nodule's bounding box, grown by ``margin`` voxels per axis, is cut from the truth (this
    nodule only) and the prediction (without the voxels of *other* true nodules, which are
    neither a hit nor a false positive for this one) and scored like a case of
    :func:`score_cases`. False positives elsewhere in the scan do not count -- this measures how
    well found nodules are outlined, the level at which patch benchmarks (e.g. LIDC) report;
    whole-scan scores measure that *and* the false positives.

    Parameters
    ----------
    labels : ndarray (z, y, x)
        Nodule label image: 0 background, k inside nodule k, used as given (a nodule may be in
        several pieces, e.g. a spiculated one). A *boolean* mask counts as one nodule per
        connected component (26-neighbourhood).
    pred : ndarray, same shape
        Predicted binary mask.
    case_id : str
        Kept as the ``case_id`` column (e.g. the patient id).
    spacing : sequence of float, optional
        Voxel size in mm, for ``hd95_mm`` and ``nsd``.
    margin : int or sequence of int, default (2, 8, 8)
        Voxels added to each side of the nodule's bounding box, per axis.
    nsd_tolerance_mm : float, default :data:`DEFAULT_NSD_TOLERANCE_MM`
        Tolerance of :func:`surface_dice`.

    Returns
    -------
    DataFrame
        Columns ``case_id, nodule, dice, iou, hd95_mm, nsd, true_voxels, pred_voxels``; one row
        per nodule (none when ``labels`` is empty).
    """
    labels, pred = _labels_and_pred(labels, pred)
    margin = np.broadcast_to(np.asarray(margin, dtype=int), (labels.ndim,))
    truth = labels > 0
    rows = []
    for k, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        box = tuple(slice(max(s.start - m, 0), min(s.stop + m, n))
                    for s, m, n in zip(found, margin, labels.shape, strict=True))
        t = labels[box] == k
        p = pred[box] & (t | ~truth[box])
        rows.append({"case_id": str(case_id), "nodule": k,
                     **_pair_scores(t, p, spacing, nsd_tolerance_mm)})
    table = pd.DataFrame(rows, columns=["case_id", "nodule", "dice", "iou", "hd95_mm", "nsd",
                                        "true_voxels", "pred_voxels"])
    # typed even when empty, so that concatenating patients keeps numeric columns
    return table.astype({"case_id": str, "nodule": int, "dice": float, "iou": float,
                         "hd95_mm": float, "nsd": float, "true_voxels": int,
                         "pred_voxels": int})


def choose_postprocessing(
    probs: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    spacings: Sequence[Sequence[float]],
    thresholds: Sequence[float] = (0.3, 0.5, 0.7, 0.9),
    min_volumes_mm3: Sequence[float] = (0.0, 20.0, 50.0, 100.0),
    min_peaks: Sequence[float] = (0.0,),
) -> pd.DataFrame:
    """Mean whole-scan Dice of every (threshold, minimum volume, minimum peak), best first.

    Run it on the **validation** patients' probability maps; take the first row for the test
    patients. The masks are those of :func:`lunglib.inference.candidate_mask`.

    Parameters
    ----------
    probs, truths : sequence of ndarray (z, y, x)
        Probability maps and ground-truth masks (nonzero = nodule), patient by patient.
    spacings : sequence of spacing tuples
        Voxel size (z, y, x) in mm of each patient.
    thresholds, min_volumes_mm3, min_peaks : sequence of float
        The grid searched (``min_peaks`` as ``min_peak`` of ``candidate_mask``; pairs whose
        minimum peak is at or below the threshold are the same as no minimum and are skipped,
        except 0).

    Returns
    -------
    DataFrame
        Columns ``threshold, min_volume_mm3, min_peak, dice`` (mean over patients), sorted by
        ``dice`` descending; ties go to the lower threshold, the smaller minimum volume and the
        lower minimum peak.
    """
    from lunglib.inference.candidates import component_peaks, kept_components, label_candidates

    if not len(probs) == len(truths) == len(spacings) or len(probs) == 0:
        raise ValueError(
            f"probs ({len(probs)}), truths ({len(truths)}) and spacings ({len(spacings)}) must "
            "have the same, non-zero length"
        )
    # Each map is labelled once per threshold; every (minimum volume, minimum peak) then only
    # keeps or drops whole components, so its Dice follows from per-component voxel counts,
    # peaks and overlaps with the truth -- the same masks as candidate_mask, without redoing them.
    dices: dict[tuple[float, float, float], list[float]] = {}
    for prob, truth, spacing in zip(probs, truths, spacings, strict=True):
        prob, truth = np.asarray(prob), np.asarray(truth) > 0
        if prob.shape != truth.shape:
            raise ValueError(f"probability map {prob.shape} and truth {truth.shape} differ")
        voxel_mm3 = float(np.prod([float(v) for v in spacing]))
        n_true = int(truth.sum())
        for threshold in thresholds:
            labels, n = label_candidates(prob, threshold)
            counts = np.bincount(labels.ravel(), minlength=n + 1)
            shared = np.bincount(labels[truth], minlength=n + 1)
            peaks = component_peaks(prob, labels, n)
            for volume in min_volumes_mm3:
                for peak in min_peaks:
                    if 0 < peak <= threshold:
                        continue
                    keep = kept_components(counts, peaks, voxel_mm3, volume, peak)
                    total = int(counts[keep].sum()) + n_true
                    value = 1.0 if total == 0 else 2.0 * int(shared[keep].sum()) / total
                    key = (float(threshold), float(volume), float(peak))
                    dices.setdefault(key, []).append(value)
    rows = [{"threshold": t, "min_volume_mm3": v, "min_peak": k, "dice": float(np.mean(d))}
            for (t, v, k), d in dices.items()]
    table = pd.DataFrame(rows)
    return table.sort_values(["dice", "threshold", "min_volume_mm3", "min_peak"],
                             ascending=[False, True, True, True], ignore_index=True)


BINARIZATION_THRESHOLDS = tuple(round(0.2 + 0.05 * i, 2) for i in range(14))
"""The thresholds :func:`choose_binarization` tries by default: 0.20 to 0.85 in steps of 0.05."""


def central_component(mask: np.ndarray) -> np.ndarray:
    """The connected component of a mask under, or nearest to, its centre pixel.

    For patches cut around a nodule (the nodule is centred by construction), this drops
    everything the segmenter found elsewhere -- vessels, pleura, a neighbouring nodule.
    Components are face-connected (:func:`scipy.ndimage.label`'s default); when the centre pixel
    is background, the component of the nearest foreground pixel (Euclidean) is kept.

    Parameters
    ----------
    mask : ndarray
        A 2D (or 3D) mask, nonzero = foreground.

    Returns
    -------
    ndarray of bool
        Same shape; all False when ``mask`` is empty.
    """
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.asarray(mask).astype(bool)
    centre = tuple(np.array(labels.shape) // 2)
    keep = labels[centre]
    if keep == 0:
        _, nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        keep = labels[tuple(axis[centre] for axis in nearest)]
    return labels == keep


def binarize(probs: np.ndarray, threshold: float, central: bool = False) -> np.ndarray:
    """Masks ``probs > threshold``, patch by patch, optionally only each one's central component.

    Parameters
    ----------
    probs : ndarray (n, h, w)
        Probability maps of ``n`` patches centred on a nodule.
    threshold : float
        Compared in float64, so a float32 probability equal to ``float32(threshold)`` counts the
        same whatever type ``threshold`` has.
    central : bool, default False
        Keep only :func:`central_component` of each mask.

    Returns
    -------
    ndarray of bool (n, h, w)
    """
    masks = np.asarray(probs, dtype=np.float64) > float(threshold)
    return np.stack([central_component(m) for m in masks]) if central else masks


def choose_binarization(
    probs: np.ndarray,
    truths: np.ndarray,
    thresholds: Sequence[float] = BINARIZATION_THRESHOLDS,
    central: Sequence[bool] = (False, True),
) -> pd.DataFrame:
    """Mean patch Dice of every (threshold, keep-central-component) pair, best first.

    Run it on the **validation** patches' probability maps (patches centred on a nodule, as the
    LIDC nodule patches are); binarise the test patches with the first row (:func:`binarize`).
    For whole-scan maps use :func:`choose_postprocessing`.

    Parameters
    ----------
    probs : ndarray (n, h, w)
        Validation probabilities.
    truths : ndarray (n, h, w)
        Validation masks (nonzero = nodule).
    thresholds : sequence of float
        Thresholds tried (default :data:`BINARIZATION_THRESHOLDS`).
    central : sequence of bool
        Whether to try keeping only the central component, not keeping it, or both.

    Returns
    -------
    DataFrame
        Columns ``threshold, central, dice`` (``dice``: mean over patches), sorted by ``dice``
        descending; ties go to the higher threshold, then to keeping the central component.
    """
    probs, truths = np.asarray(probs), np.asarray(truths)
    if probs.shape != truths.shape or probs.ndim != 3 or len(probs) == 0:
        raise ValueError(
            f"probs {probs.shape} and truths {truths.shape} must be the same non-empty (n, h, w)"
        )
    rows = []
    for threshold in thresholds:
        for keep_central in central:
            pred = binarize(probs, threshold, keep_central)
            value = np.mean([dice(t, p) for t, p in zip(truths, pred, strict=True)])
            rows.append({"threshold": float(threshold), "central": bool(keep_central),
                         "dice": float(value)})
    return pd.DataFrame(rows).sort_values(["dice", "threshold", "central"], ascending=False,
                                          ignore_index=True)
