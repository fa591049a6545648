"""Classical lung segmentation: threshold, connected components, airways out, holes filled.

:func:`segment_lungs` needs no training data: every step is a standard operation of
:mod:`scipy.ndimage`. The thresholds below are the usual ones for chest CT in Hounsfield units;
:data:`MIN_LUNG_ML` and :data:`PLAUSIBLE_LUNG_ML` are what
:func:`~lunglib.preprocess.prepare` checks a mask's volume against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from lunglib.preprocess.boxes import mask_bbox
from lunglib.preprocess.resample import _check_volume

#: Voxels below this are air or lung.
LUNG_THRESHOLD_HU = -320
#: Thresholds the airway is grown through, tried in turn until it stops leaking into the lungs.
AIRWAY_THRESHOLDS_HU = (-950, -975, -990, -1000)
#: Less lung than this (mL) means no lungs were found.
MIN_LUNG_ML = 200.0
#: The usual range of adult lung volume (mL); outside it a mask is worth a look.
PLAUSIBLE_LUNG_ML = (1000.0, 10000.0)


def _superior_is_high_z(direction: np.ndarray | None) -> bool:
    """Whether a higher slice index is closer to the head (LPS: +z is superior)."""
    if direction is None:
        return True
    return bool(np.asarray(direction)[2, 2] >= 0)


def _find_trachea_seed(
    candidate: np.ndarray, hu: np.ndarray, spacing: Sequence[float], superior_high: bool
) -> np.ndarray | None:
    """Voxels of the trachea lumen in the most superior slices where it shows, or None.

    In the top slices of a chest CT the trachea is the one air-filled tube of 1-8 cm2 near the
    middle of the body, left to right; lung apices sit to either side.
    """
    pixel_mm2 = spacing[1] * spacing[2]
    zs = np.flatnonzero(candidate.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    order = zs[::-1] if superior_high else zs
    body_x = np.flatnonzero((hu > -500).any(axis=(0, 1)))
    x_mid = 0.5 * (body_x[0] + body_x[-1]) if body_x.size else hu.shape[2] / 2
    x_half = 0.5 * (body_x[-1] - body_x[0]) if body_x.size else hu.shape[2] / 2
    # Look through the top ~40 mm of the candidate region.
    for z in order[: max(1, int(round(40.0 / spacing[0])))]:
        labels, n = ndimage.label(candidate[z])
        if n == 0:
            continue
        areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        centres = ndimage.center_of_mass(np.ones_like(labels), labels, np.arange(1, n + 1))
        for k, (area, (_, cx)) in enumerate(zip(areas, centres, strict=False), start=1):
            if 80.0 <= area * pixel_mm2 <= 800.0 and abs(cx - x_mid) < 0.25 * x_half:
                seed = np.zeros_like(candidate)
                seed[z] = labels == k
                return seed
    return None


def _select(labels: np.ndarray, n: int, chosen) -> np.ndarray:
    """Boolean mask of the voxels whose label is in ``chosen`` (a lookup table, not np.isin)."""
    table = np.zeros(n + 1, dtype=bool)
    table[np.asarray(chosen, dtype=int)] = True
    return table[labels]


def _largest(sizes: np.ndarray, keep: int = 2, min_fraction: float = 0.1) -> list[int]:
    """Ids of the ``keep`` largest labels (``sizes[k]`` voxels of label k; label 0 and labels of
    size 0 never count); the smaller ones only if >= min_fraction of the largest."""
    sizes = np.asarray(sizes).copy()
    sizes[0] = 0
    order = np.argsort(sizes[1:])[::-1][:keep] + 1
    if order.size == 0 or sizes[order[0]] == 0:
        return []
    return [int(k) for k in order if sizes[k] > 0 and sizes[k] >= min_fraction * sizes[order[0]]]


def _largest_components(
    mask: np.ndarray, keep: int = 2, min_fraction: float = 0.1
) -> tuple[np.ndarray, int, list[int]]:
    """The ``keep`` largest 3-D components of ``mask`` (see :func:`_largest`): (labels, n, ids)."""
    labels, n = ndimage.label(mask)
    return labels, n, _largest(np.bincount(labels.ravel(), minlength=n + 1), keep, min_fraction)


def segment_lungs(
    hu: np.ndarray,
    spacing: Sequence[float],
    direction: np.ndarray | None = None,
    threshold_hu: float = LUNG_THRESHOLD_HU,
    closing_mm: float = 5.0,
    max_hole_mm2: float = 2000.0,
) -> np.ndarray:
    """Classical lung segmentation: both lungs, airways removed, vessels and nodules kept.

    Steps (each a standard image-processing operation from :mod:`scipy.ndimage`):

    1. voxels below ``threshold_hu`` are air or lung;
    2. air connected to the in-plane border of the image (outside the body) is removed;
    3. the two largest 3-D components are kept (one when the lungs touch each other);
    4. the trachea and main bronchi are found from a seed in the top slices (an air tube near the
       middle of the body), grown through very low HU (< -950, lowered if the growth leaks into
       the lungs) and removed, and the lungs re-selected;
    5. each lung gets a closing of ``closing_mm`` and per-slice filling of holes up to
       ``max_hole_mm2``, which brings back vessels and juxtapleural nodules that the threshold
       left out (each lung alone, so the mediastinum between them is never filled). A hole
       that opens downwards into the tissue under the lung is left out: that is the top of
       the liver (or spleen) dome, which pokes up into the lung base and shows, slice by
       slice, as a disc surrounded by lung -- a hole in 2-D but not in 3-D.

    Parameters
    ----------
    hu : ndarray (z, y, x)
        Hounsfield units (any resolution; :func:`prepare` passes a ~5 mm copy).
    spacing : sequence of float
        Voxel size (z, y, x) in mm.
    direction : ndarray (3, 3), optional
        The scan's direction matrix; tells which end is the head (default: higher z).
    threshold_hu : float, default -320
    closing_mm : float, default 5.0
    max_hole_mm2 : float, default 2000

    Returns
    -------
    ndarray of uint8
        1 inside the lungs. All zeros when nothing lung-like was found (check the volume).
    """
    _check_volume(hu, spacing, "hu")
    # Steps 1-3 in one labelling: components touching the in-plane border (air outside the
    # body) get size 0, so they are never among the largest.
    labels, n = ndimage.label(hu < threshold_hu)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    border = [labels[:, [0, -1], :], labels[:, :, [0, -1]]]
    sizes[np.unique(np.concatenate([b.ravel() for b in border]))] = 0
    chosen = _largest(sizes)
    if not chosen:
        return np.zeros(hu.shape, dtype=np.uint8)
    lungs = _select(labels, n, chosen)
    superior_high = _superior_is_high_z(direction)
    seed = _find_trachea_seed(lungs, hu, spacing, superior_high)

    # Everything from here on happens inside the lungs' bounding box (plus the closing radius):
    # the same result as on the whole volume, on a fraction of the voxels.
    radius = np.maximum(1, np.round(closing_mm / np.asarray(spacing))).astype(int)
    box = mask_bbox(lungs, radius + 2)
    lungs, hu_box = lungs[box], hu[box]
    labels = labels[box]
    if seed is not None:
        seed = seed[box]
        voxel_ml = float(np.prod(spacing)) / 1000.0
        for airway_hu in AIRWAY_THRESHOLDS_HU:
            low = lungs & (hu_box < airway_hu)
            grown, n_grown = ndimage.label(low | seed)
            ids = np.unique(grown[seed])
            airway = _select(grown, n_grown, ids[ids > 0])
            if airway.sum() * voxel_ml < 150.0:  # larger means it leaked into emphysematous lung
                break
        else:
            airway = seed
        lungs = lungs & ~_dilate_once(airway)
        labels, n, chosen = _largest_components(lungs)

    # Each lung is closed and filled on its own: closing both at once would bridge the anterior
    # junction and hole filling would then swallow the mediastinum between them.
    out = np.zeros(hu.shape, dtype=bool)
    for k in chosen:
        out[box] |= _close_and_fill(labels == k, radius, spacing, max_hole_mm2, superior_high)
    return out.view(np.uint8)


def _dilate_once(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=1)``, computed around the mask only."""
    box = mask_bbox(mask, 1)
    out = np.zeros_like(mask)
    if box is None:
        return out
    out[box] = ndimage.binary_dilation(mask[box], iterations=1)
    return out


def _close_and_fill(
    lung: np.ndarray,
    radius: np.ndarray,
    spacing: Sequence[float],
    max_hole_mm2: float,
    superior_high: bool = True,
) -> np.ndarray:
    """Box closing (separable max/min filters), then per-slice filling of holes up to
    ``max_hole_mm2`` (vessels, nodules; not the heart) -- inside the lung's bounding box.

    The per-slice holes are grouped into 3-D pieces; a piece that lies directly on top of tissue
    outside the lung (not lung, not a hole) in the next slice towards the feet is a bay open
    downwards -- the dome of the liver or spleen under the lung base -- and is not filled.
    A nodule or vessel has lung or more of itself beneath it and is filled.
    """
    box = mask_bbox(lung, radius + 1)
    size = tuple(int(2 * r + 1) for r in radius)
    padded = np.pad(lung[box].view(np.uint8), [(r, r) for r in radius])
    closed = ndimage.minimum_filter(ndimage.maximum_filter(padded, size=size), size=size)
    part = closed[tuple(slice(r, -r) for r in radius)].astype(bool)
    # A hole is a piece of background, within one slice, that does not reach the slice's edge.
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(~part, structure=in_plane)
    if n:
        edge = np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel()])
        areas = np.bincount(labels.ravel(), minlength=n + 1) * spacing[1] * spacing[2]
        fill = areas <= max_hole_mm2
        fill[0] = False
        fill[np.unique(edge)] = False
        holes = fill[labels]
        if holes.any():
            holes &= ~_open_downwards(holes, ~part & ~holes, superior_high)
        part |= holes
    out = np.zeros_like(lung)
    out[box] = part
    return out


def _open_downwards(holes: np.ndarray, outside: np.ndarray, superior_high: bool) -> np.ndarray:
    """The 3-D pieces of ``holes`` with a voxel right above an ``outside`` voxel (one slice
    towards the feet); the voxels of those pieces."""
    pieces, n = ndimage.label(holes)
    over = np.zeros_like(holes)
    if superior_high:  # the feet are at lower z
        over[1:] = holes[1:] & outside[:-1]
    else:
        over[:-1] = holes[:-1] & outside[1:]
    ids = np.unique(pieces[over])
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros_like(holes)
    return _select(pieces, n, ids)


def lung_volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a binary mask in millilitres."""
    return float(np.count_nonzero(mask) * np.prod(spacing) / 1000.0)

