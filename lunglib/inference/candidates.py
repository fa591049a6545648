"""Nodule candidates: connected components of a probability map, as a table or a mask.

:func:`label_candidates` cuts the components out of a probability map (the one place that does);
:func:`find_candidates` lists them with volume, equivalent diameter, centroid (voxel and mm) and
peak probability; :func:`candidate_mask` keeps the voxels of those above a minimum volume and
minimum peak probability, by the rule of :func:`kept_components`, which the post-processing
search of :func:`lunglib.evaluation.choose_postprocessing` shares. Work in one voxel grid: the
probability map and the geometry given to :func:`find_candidates` must describe the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import measure

from lunglib.io.geometry import sphere_diameter_mm

CANDIDATE_COLUMNS = [
    "candidate", "peak_prob", "mean_prob", "volume_mm3", "diameter_mm", "n_voxels",
    "centroid_z", "centroid_y", "centroid_x", "x_mm", "y_mm", "z_mm",
]


def find_candidates(
    prob: np.ndarray,
    spacing: Sequence[float] | None = None,
    scan=None,
    threshold: float = 0.5,
    min_volume_mm3: float = 0.0,
    connectivity: int = 3,
    min_peak: float = 0.0,
) -> pd.DataFrame:
    """Nodule candidates: connected components of ``prob > threshold``, most probable first.

    Parameters
    ----------
    prob : ndarray (z, y, x)
        Probability map (or a binary mask, whose peak probability is then 1).
    spacing : sequence of float, optional
        Voxel size (z, y, x) in mm. Taken from ``scan`` when omitted.
    scan : CTScan, optional
        Any object with ``spacing`` and ``voxel_to_world(zyx) -> xyz`` describing the grid of
        ``prob`` (e.g. :class:`lunglib.CTScan`); gives the centroid in patient mm (LPS).
        Without it ``x_mm, y_mm, z_mm`` are ``centroid * spacing`` from voxel (0, 0, 0).
    threshold : float, default 0.5
        Voxels with ``prob > threshold`` are foreground.
    min_volume_mm3 : float, default 0
        Drop candidates smaller than this.
    connectivity : {1, 2, 3}, default 3
        Neighbourhood for :func:`scipy.ndimage.label`: 1 = faces, 3 = faces, edges and corners.
    min_peak : float, default 0
        Drop candidates whose highest probability is below this (a two-level rule: a candidate
        is grown from ``threshold`` but must reach ``min_peak`` somewhere).

    Returns
    -------
    DataFrame
        One row per candidate, sorted by ``peak_prob`` (then volume) descending, with columns
        ``candidate`` (1 = most probable), ``peak_prob``, ``mean_prob``, ``volume_mm3`` (voxel
        count x voxel volume), ``diameter_mm`` (diameter of the sphere of that volume),
        ``n_voxels``, ``centroid_z/y/x`` (voxel index) and ``x_mm, y_mm, z_mm``.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 3:
        raise ValueError(f"prob must be a (z, y, x) volume, got shape {prob.shape}")
    if spacing is None:
        if scan is None:
            raise ValueError("give the voxel spacing (z, y, x mm) or a scan with its geometry")
        spacing = scan.spacing
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} must be three positive sizes (z, y, x) in mm")
    voxel_mm3 = float(np.prod(spacing))
    labels, _ = label_candidates(prob, threshold, connectivity)
    rows = []
    for region in measure.regionprops(labels, intensity_image=prob):
        volume = region.num_pixels * voxel_mm3
        if volume < min_volume_mm3 or region.intensity_max < min_peak:
            continue
        zyx = np.asarray(region.centroid)
        if scan is not None:
            xyz = np.asarray(scan.voxel_to_world(zyx))
        else:
            xyz = (zyx * spacing)[::-1]
        rows.append({
            "peak_prob": float(region.intensity_max),
            "mean_prob": float(region.intensity_mean),
            "volume_mm3": volume,
            "diameter_mm": sphere_diameter_mm(volume),
            "n_voxels": int(region.num_pixels),
            "centroid_z": float(zyx[0]), "centroid_y": float(zyx[1]),
            "centroid_x": float(zyx[2]),
            "x_mm": float(xyz[0]), "y_mm": float(xyz[1]), "z_mm": float(xyz[2]),
        })
    table = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS[1:])
    table = table.sort_values(["peak_prob", "volume_mm3"], ascending=False, ignore_index=True)
    table.insert(0, "candidate", np.arange(1, len(table) + 1))
    return table


def label_candidates(
    prob: np.ndarray, threshold: float = 0.5, connectivity: int = 3
) -> tuple[np.ndarray, int]:
    """Connected components of ``prob > threshold``: the label image (0 background) and count.

    The one place where candidates are cut out of a probability map, so that
    :func:`candidate_mask`, :func:`find_candidates` and the post-processing search of
    :func:`lunglib.evaluation.choose_postprocessing` agree on them.
    """
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity must be 1, 2 or 3, got {connectivity}")
    structure = ndimage.generate_binary_structure(3, connectivity)
    labels, n = ndimage.label(np.asarray(prob) > threshold, structure=structure)
    return labels, int(n)


def candidate_mask(
    prob: np.ndarray,
    spacing: Sequence[float],
    threshold: float = 0.5,
    min_volume_mm3: float = 0.0,
    connectivity: int = 3,
    min_peak: float = 0.0,
) -> np.ndarray:
    """Binary nodule mask: ``prob > threshold``, without components smaller than a volume.

    The voxels of the candidates that :func:`find_candidates` lists with the same arguments,
    as a mask to score (Dice) or export.

    Parameters
    ----------
    prob : ndarray (z, y, x)
        Probability map.
    spacing : sequence of float
        Voxel size (z, y, x) in mm.
    threshold, min_volume_mm3, connectivity, min_peak
        As for :func:`find_candidates`.

    Returns
    -------
    ndarray of bool, shape of ``prob``
    """
    prob = np.asarray(prob)
    if prob.ndim != 3:
        raise ValueError(f"prob must be a (z, y, x) volume, got shape {prob.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} must be three positive sizes (z, y, x) in mm")
    labels, n = label_candidates(prob, threshold, connectivity)
    if n == 0 or (min_volume_mm3 <= 0 and min_peak <= 0):
        return labels > 0
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    peaks = component_peaks(prob, labels, n) if min_peak > 0 else None
    keep = kept_components(counts, peaks, float(np.prod(spacing)), min_volume_mm3, min_peak)
    return keep[labels]


def component_peaks(prob: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """The highest value of ``prob`` in each label 0..n of ``labels`` (index 0: 0.0, as label 0
    is the background and never kept).

    The result of ``scipy.ndimage.maximum(prob, labels, index=range(n + 1))`` for labels 1..n,
    computed over the labelled voxels only: ndimage sorts every voxel of the volume, which for a
    whole-scan map costs far more than the few candidate voxels do.
    """
    peaks = np.zeros(n + 1, dtype=np.float64)
    inside = labels > 0
    if n:
        np.maximum.at(peaks, labels[inside], np.asarray(prob)[inside])
    return peaks


def kept_components(
    counts: np.ndarray,
    peaks: np.ndarray | None,
    voxel_mm3: float,
    min_volume_mm3: float = 0.0,
    min_peak: float = 0.0,
) -> np.ndarray:
    """Which labels of :func:`label_candidates` survive the minimum volume and minimum peak.

    ``counts[k]`` and ``peaks[k]`` are label k's voxel count and highest probability (index 0 is
    the background, never kept); ``peaks`` may be None when ``min_peak <= 0``. The rule of
    :func:`candidate_mask`, shared with the post-processing search so that both keep the same
    candidates.
    """
    keep = np.asarray(counts) * voxel_mm3 >= min_volume_mm3
    if min_peak > 0:
        keep &= np.asarray(peaks) >= min_peak
    keep[0] = False
    return keep
