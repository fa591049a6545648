"""Which cases to show after an evaluation, and under which names.

A report shows a few cases, never patient identifiers:

- :func:`patient_codes` gives pseudonymous codes ``P001``, ``P002``, ... in order of first
  appearance, so a table or a figure can say "the same patient" without saying who;
- :func:`pick_cases` picks the best, the median and the worst case by a score (e.g. Dice), so a
  gallery shows the spread of the results rather than only the flattering end;
- :func:`largest_section` and :func:`strongest_slice` choose the axial slice worth looking at
  in a volume: through the largest cross-section of a mask, or where a heat map (Grad-CAM) has
  the most weight;
- :func:`axial_gallery` stacks one such slice per picked case (image, truth, prediction) into
  equally shaped arrays, the ``segmentation_gallery.npz`` a run report reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

GALLERY_LABELS = ("best", "median", "worst")


def patient_codes(patients: Iterable[object], prefix: str = "P", width: int = 3) -> dict[str, str]:
    """Pseudonymous codes for patient ids, numbered in order of first appearance.

    Parameters
    ----------
    patients : iterable
        Patient ids, one per sample; repeats get the code of their first appearance.
    prefix : str
        Put before the number.
    width : int
        Digits of the number, zero-padded (more when there are more patients than that allows).

    Returns
    -------
    dict of str to str
        ``{patient id: code}``, e.g. ``{"LIDC-IDRI-0007": "P001", ...}``. The codes say nothing
        about the ids; keep the mapping out of anything saved or shown.
    """
    order = list(dict.fromkeys(str(p) for p in patients))
    digits = max(width, len(str(len(order))))
    return {pid: f"{prefix}{i:0{digits}d}" for i, pid in enumerate(order, start=1)}


def pick_cases(scores: Mapping[str, float]) -> dict[str, str]:
    """The best, median and worst case by a score where higher is better (e.g. Dice).

    Cases are ranked from the highest score down (ties keep the order given); the median is the
    middle case of that ranking (for an even count, the better of the two middle ones). With
    fewer than three cases a case is listed once, under its first label.

    Parameters
    ----------
    scores : mapping of str to float
        ``{case id: score}``; cases whose score is NaN are left out.

    Returns
    -------
    dict of str to str
        ``{"best": id, "median": id, "worst": id}`` in that order, fewer keys for fewer cases.
    """
    scored = [(case, float(value)) for case, value in scores.items()
              if not np.isnan(float(value))]
    ranked = [case for case, _ in sorted(scored, key=lambda item: -item[1])]
    if not ranked:
        return {}
    positions = {"best": 0, "median": (len(ranked) - 1) // 2, "worst": len(ranked) - 1}
    picked: dict[str, str] = {}
    for label in GALLERY_LABELS:
        case = ranked[positions[label]]
        if case not in picked.values():
            picked[label] = case
    return picked


def largest_section(mask: np.ndarray) -> int:
    """Axial index (axis 0) of a mask's largest cross-section; the middle slice when empty."""
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"largest_section needs a (z, y, x) mask, got shape {mask.shape}")
    area = (mask > 0).sum(axis=(1, 2))
    return int(np.argmax(area)) if area.any() else mask.shape[0] // 2


def strongest_slice(heat: np.ndarray) -> int:
    """Axial index (axis 0) where a heat map in [0, 1] has the most weight (sum over the slice).

    The sum, not the maximum: a normalised Grad-CAM reaches 1 at a single voxel, and the slice
    that holds most of the attention says more than the one holding its peak.
    """
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 3:
        raise ValueError(f"strongest_slice needs a (z, y, x) map, got shape {heat.shape}")
    return int(np.argmax(heat.sum(axis=(1, 2))))


def _pad_to(section: np.ndarray, shape: tuple[int, int], fill: float) -> np.ndarray:
    """Pad a 2D slice evenly on both sides to ``shape`` with ``fill``."""
    pad = [(0, 0), (0, 0)]
    for axis, (have, want) in enumerate(zip(section.shape, shape, strict=True)):
        before = (want - have) // 2
        pad[axis] = (before, want - have - before)
    return np.pad(section, pad, constant_values=fill)


def axial_gallery(
    picked: Mapping[str, str],
    volumes: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    scores: Mapping[str, float],
    fill: float = -1000.0,
) -> dict[str, np.ndarray]:
    """One axial slice per picked case: image, truth and prediction, stacked.

    The slice goes through the truth's largest cross-section (:func:`largest_section`), or the
    prediction's when the truth is empty. Slices of different sizes are padded evenly to the
    largest, the image with ``fill`` (air in HU), the masks with False.

    Parameters
    ----------
    picked : mapping of str to str
        ``{label: case id}``, e.g. from :func:`pick_cases`.
    volumes : mapping of str to (image, truth, prediction)
        Each picked case's ``(z, y, x)`` image (HU), truth mask and predicted mask.
    scores : mapping of str to float
        Each picked case's score (Dice).
    fill : float
        Image value of the padding.

    Returns
    -------
    dict of str to ndarray
        ``image`` (k, H, W) float32, ``truth`` and ``prediction`` (k, H, W) bool, ``dice`` (k,)
        float, ``label`` (k,) str -- ready for ``numpy.savez``.
    """
    images, truths, preds = [], [], []
    for case in picked.values():
        image, truth, prediction = (np.asarray(v) for v in volumes[case])
        if not image.shape == truth.shape == prediction.shape:
            raise ValueError(f"case {list(picked.values()).index(case)}: image {image.shape}, "
                             f"truth {truth.shape} and prediction {prediction.shape} differ")
        z = largest_section(truth if truth.any() else prediction)
        images.append(image[z].astype(np.float32))
        truths.append(truth[z] > 0)
        preds.append(prediction[z] > 0)
    if not images:
        return {"image": np.zeros((0, 0, 0), np.float32), "truth": np.zeros((0, 0, 0), bool),
                "prediction": np.zeros((0, 0, 0), bool), "dice": np.zeros(0),
                "label": np.zeros(0, dtype=str)}
    shape = tuple(int(max(s[axis] for s in map(np.shape, images))) for axis in (0, 1))
    return {
        "image": np.stack([_pad_to(i, shape, fill) for i in images]).astype(np.float32),
        "truth": np.stack([_pad_to(t, shape, False) for t in truths]),
        "prediction": np.stack([_pad_to(p, shape, False) for p in preds]),
        "dice": np.array([float(scores[case]) for case in picked.values()]),
        "label": np.array(list(picked), dtype=str),
    }
