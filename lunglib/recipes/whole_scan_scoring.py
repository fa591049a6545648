"""Scoring the whole-scan segmentation recipe on its test patients, at three levels.

- **whole scan, per patient**: Dice of the predicted mask against all nodules of the patient's
  scan, every false-positive voxel anywhere in the lungs counting; a patient without nodules
  scores 1 if nothing is predicted and 0 otherwise. Mean over patients.
- **whole scan, global**: the same masks, intersections and sizes pooled over all voxels of the
  scans before the ratio (:func:`lunglib.evaluation.dice_global`): every voxel weighs the same,
  so large nodules dominate.
- **per nodule**: Dice inside each true nodule's bounding box grown by (2, 8, 8) voxels
  (:func:`lunglib.evaluation.score_nodules`) -- how well a nodule is outlined, false positives
  elsewhere ignored. Mean over nodules, also split at 1000 mm3 (about 12 mm across).

:func:`score_test` gives all of them for one variant and its post-processing, with the voxels
of each kind of error (:func:`lunglib.evaluation.error_breakdown`) and each nodule's peak
probability; :func:`score_variants` adds two test columns to a validation choice among
variants; :func:`dice_losses` says how much global Dice each kind of error costs;
:func:`dice_bound_table` what an outline one voxel off scores on a small nodule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import ndimage

from lunglib.evaluation import (
    dice,
    dice_global,
    error_breakdown,
    iou_global,
    score_cases,
    score_nodules,
)
from lunglib.evaluation.selection import VariantChoice
from lunglib.inference import candidate_mask
from lunglib.inference.candidates import component_peaks

if TYPE_CHECKING:
    from lunglib.recipes.whole_scan import Case

LARGE_NODULE_MM3 = 1000.0  # about 12 mm across and up: the synthetic cohort's malignant range
LEVELS = [
    "whole scan, mean per patient", "whole scan, global (pooled voxels)", "per nodule, all",
    f"per nodule, >= {LARGE_NODULE_MM3:g} mm3", f"per nodule, < {LARGE_NODULE_MM3:g} mm3",
]


@dataclass
class WholeScanScores:
    """One variant's masks and scores on the test patients.

    Attributes
    ----------
    masks : dict of str to ndarray of bool
        The post-processed mask of each patient.
    patients : DataFrame
        :func:`lunglib.evaluation.score_cases`: Dice, IoU, HD95 per patient (whole scan).
    nodules : DataFrame
        :func:`lunglib.evaluation.score_nodules` of every patient, with ``volume_mm3`` (the true
        nodule's) and ``peak_prob`` (the highest probability inside it: below the threshold a
        miss is the model's, above it the post-processing's).
    levels : DataFrame
        Index :data:`LEVELS`, columns ``n, Dice, IoU``: the table notebook 07 reads.
    errors : DataFrame
        :func:`lunglib.evaluation.error_breakdown` per patient (voxels by kind of error).
    """

    masks: dict[str, np.ndarray]
    patients: pd.DataFrame
    nodules: pd.DataFrame
    levels: pd.DataFrame
    errors: pd.DataFrame


def postprocessed_masks(
    probs: Mapping[str, np.ndarray],
    cases: Mapping[str, Case],
    ids: Sequence[str],
    postprocessing: Mapping[str, float],
) -> dict[str, np.ndarray]:
    """Each patient's mask: :func:`lunglib.inference.candidate_mask` of its probability map with
    ``postprocessing`` (``threshold``, ``min_volume_mm3``, ``min_peak``)."""
    return {p: candidate_mask(probs[p], cases[p].spacing, postprocessing["threshold"],
                              postprocessing["min_volume_mm3"],
                              min_peak=postprocessing["min_peak"]) for p in ids}


def score_variants(
    maps: Mapping[str, Mapping[str, np.ndarray]],
    choice: VariantChoice,
    cases: Mapping[str, Case],
    test_ids: Sequence[str],
) -> pd.DataFrame:
    """The validation choice's table with every variant's test Dice added.

    Each variant is scored once on the test patients with the post-processing validation gave
    it: ``test_dice`` (whole scan, mean per patient) and ``test_dice_global`` (pooled). All
    variants are scored so that nothing is hidden; only ``choice.chosen`` is the result.
    """
    truths = [cases[p].nodules > 0 for p in test_ids]
    per_patient, pooled = [], []
    for row in choice.table.itertuples():
        chosen = choice.postprocessing(row.variant)
        masks = postprocessed_masks(maps[row.variant], cases, test_ids, chosen)
        masks = [masks[p] for p in test_ids]
        per_patient.append(float(np.mean([dice(t, m) for t, m in zip(truths, masks,
                                                                     strict=True)])))
        pooled.append(dice_global(truths, masks))
    return choice.table.assign(test_dice=per_patient, test_dice_global=pooled)


def nodule_peaks(prob: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """The highest probability inside each labelled nodule (label k -> its peak)."""
    labels = np.asarray(labels).astype(np.int32)
    n = int(labels.max())
    if not n:
        return {}
    peaks = component_peaks(prob, labels, n)[1:]
    return dict(zip(range(1, n + 1), peaks.tolist(), strict=True))


def score_test(
    probs: Mapping[str, np.ndarray],
    cases: Mapping[str, Case],
    ids: Sequence[str],
    postprocessing: Mapping[str, float],
) -> WholeScanScores:
    """Masks, per-patient, per-nodule and pooled scores and error voxels of the test patients.

    Parameters
    ----------
    probs : mapping of str to ndarray (z, y, x)
        Probability map of each patient (one variant).
    cases : mapping of str to Case
        The patients' nodule labels and voxel spacing.
    ids : sequence of str
        The test patients.
    postprocessing : mapping
        ``threshold``, ``min_volume_mm3`` and ``min_peak``, chosen on validation.

    Returns
    -------
    WholeScanScores
    """
    masks = postprocessed_masks(probs, cases, ids, postprocessing)
    truths, preds = [cases[p].nodules > 0 for p in ids], [masks[p] for p in ids]
    patients = score_cases(truths, preds, list(ids), spacings=[cases[p].spacing for p in ids])
    nodules = pd.concat([score_nodules(cases[p].nodules, masks[p], p, cases[p].spacing)
                         for p in ids], ignore_index=True)
    nodules["volume_mm3"] = [row.true_voxels * float(np.prod(cases[row.case_id].spacing))
                             for row in nodules.itertuples()]
    peaks = {(p, k): v for p in ids for k, v in nodule_peaks(probs[p], cases[p].nodules).items()}
    nodules["peak_prob"] = [peaks.get((row.case_id, row.nodule), np.nan)
                            for row in nodules.itertuples()]
    large = nodules.volume_mm3 >= LARGE_NODULE_MM3
    levels = pd.DataFrame({
        "n": [len(patients), len(patients), len(nodules), int(large.sum()), int((~large).sum())],
        "Dice": [patients.dice.mean(), dice_global(truths, preds), nodules.dice.mean(),
                 nodules.dice[large].mean(), nodules.dice[~large].mean()],
        "IoU": [patients.iou.mean(), iou_global(truths, preds), nodules.iou.mean(),
                nodules.iou[large].mean(), nodules.iou[~large].mean()],
        # surface metrics have no pooled form: NaN on the global row; means skip the cases
        # where one mask is empty (HD95 undefined there)
        "HD95 (mm)": [patients.hd95_mm.mean(), np.nan, nodules.hd95_mm.mean(),
                      nodules.hd95_mm[large].mean(), nodules.hd95_mm[~large].mean()],
        "NSD": [patients.nsd.mean(), np.nan, nodules.nsd.mean(),
                nodules.nsd[large].mean(), nodules.nsd[~large].mean()],
    }, index=LEVELS)
    errors = pd.DataFrame([error_breakdown(cases[p].nodules, masks[p], p) for p in ids])
    return WholeScanScores(masks=masks, patients=patients, nodules=nodules, levels=levels,
                      errors=errors)


def dice_losses(errors: pd.DataFrame) -> dict[str, float]:
    """Voxels of each kind of error summed over patients, and the global Dice without some.

    Returns the sums of ``tp, fn_missed, fn_outline, fp_outline, fp_elsewhere, nodules,
    nodules_found, false_components`` and ``dice_global`` (all errors), ``without_false``
    (the false components removed) and ``missed_found`` (the missed nodules found perfectly).
    """
    total = errors.drop(columns="case_id").sum()

    def pooled(tp: float, fn: float, fp: float) -> float:
        return float(2 * tp / (2 * tp + fn + fp)) if tp + fn + fp else 1.0

    fn, fp = total.fn_missed + total.fn_outline, total.fp_outline + total.fp_elsewhere
    out = {k: float(v) for k, v in total.items()}
    out["dice_global"] = pooled(total.tp, fn, fp)
    out["without_false"] = pooled(total.tp, fn, total.fp_outline)
    out["missed_found"] = pooled(total.tp + total.fn_missed, total.fn_outline, fp)
    return out


def _sphere_label(diameter_mm: float, spacing: Sequence[float], offset: Sequence[float],
                  supersample: int = 6, half: int = 7) -> np.ndarray:
    """Voxels at least half inside a sphere (the cohort's label rule), by supersampling."""
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = [((np.arange(-half, half + 1)[:, None] + sub) - o).ravel() * s
            for o, s in zip(offset, spacing, strict=True)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij", sparse=True)
    inside = (zz**2 + yy**2 + xx**2) <= (diameter_mm / 2) ** 2
    n = 2 * half + 1
    shape = (n, supersample, n, supersample, n, supersample)
    return inside.reshape(shape).mean(axis=(1, 3, 5)) >= 0.5


def dice_bound_table(
    spacing: Sequence[float] = (3.0, 2.65, 2.65),
    diameters: Sequence[float] = (3, 4, 5, 6, 7, 8, 9, 12, 20, 30),
    n_draws: int = 100,
    seed: int = 0,
) -> pd.DataFrame:
    """Dice of a small nodule's label against the same label with its boundary off by one voxel.

    Spheres at random sub-voxel positions, labelled like the cohort (voxels at least half
    inside); the "prediction" is the label shifted by one voxel in-plane or along z, grown by one
    face-neighbour layer, or with one voxel added or removed. What an otherwise perfect
    segmenter scores when its outline is one voxel off -- the physical ceiling at this voxel size.
    """
    rng = np.random.default_rng(seed)
    grow = ndimage.generate_binary_structure(3, 1)
    rows = []
    for d in diameters:
        draws = []
        for _ in range(n_draws):
            truth = _sphere_label(d, spacing, rng.uniform(-0.5, 0.5, 3))
            if not truth.any():
                continue
            ring = np.argwhere(ndimage.binary_dilation(truth, grow) & ~truth)
            plus, minus = truth.copy(), truth.copy()
            plus[tuple(ring[0])] = True
            minus[tuple(np.argwhere(truth)[0])] = False
            draws.append((truth.sum(), dice(truth, np.roll(truth, 1, axis=2)),
                          dice(truth, np.roll(truth, 1, axis=0)),
                          dice(truth, ndimage.binary_dilation(truth, grow)),
                          dice(truth, plus), dice(truth, minus)))
        rows.append((d, *np.mean(draws, axis=0)))
    return pd.DataFrame(rows, columns=["diameter_mm", "voxels", "shift 1 in-plane", "shift 1 z",
                                       "grown 1 layer", "+1 voxel", "-1 voxel"])
