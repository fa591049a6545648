"""Hand-crafted size, shape and density features of an outlined nodule on a 2D HU patch.

A reader's outline already says a lot about malignancy: large, irregular, solid nodules tend to
be rated malignant, small, round or calcified ones benign. :func:`outline_features` turns every
``(patch, outline)`` pair into a short, named feature vector (shape from
``skimage.measure.regionprops``, HU statistics inside the outline and in a thin ring around it),
in millimetres so patches of different pixel spacing compare. A logistic regression on these is
the honest baseline a CNN has to beat, and a stacker can combine them with a CNN's output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label, regionprops

FEATURE_NAMES = (
    "log_area_mm2",  # log(1 + outline area in mm^2)
    "major_axis_mm",  # ellipse fitted to the outline's largest component
    "minor_axis_mm",
    "compactness",  # 4 pi area / perimeter^2: 1 for a disc, smaller for irregular outlines
    "solidity",  # area / convex hull area
    "eccentricity",
    "hu_mean",  # HU inside the outline
    "hu_std",
    "hu_p95",
    "calcified_fraction",  # fraction of outline pixels above CALCIFIED_HU
    "low_density_fraction",  # fraction below LOW_DENSITY_HU (ground glass, air)
    "ring_hu_mean",  # HU in a ring ``ring_mm`` wide just outside the outline
    "ring_hu_std",
)
CALCIFIED_HU = 200.0
LOW_DENSITY_HU = -500.0
HU_RANGE = (-1024.0, 3071.0)  # stored-value range of CT; scanner padding (<= -2000 HU) is clipped


def outline_features(
    images: np.ndarray,
    masks: np.ndarray,
    spacing_mm: Sequence[float] | np.ndarray,
    ring_mm: float = 2.0,
) -> np.ndarray:
    """Size, shape and density features of every outlined nodule, ``(n, len(FEATURE_NAMES))``.

    Parameters
    ----------
    images
        ``(n, height, width)`` patches in Hounsfield units.
    masks
        ``(n, height, width)`` outlines, nonzero inside; every outline must be non-empty.
    spacing_mm
        In-plane pixel spacing of every patch (square pixels).
    ring_mm
        Width of the ring around the outline whose HU statistics describe the margin.

    Returns
    -------
    numpy.ndarray
        float64, one row per patch, columns in the order of :data:`FEATURE_NAMES`.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    spacing = np.asarray(spacing_mm, dtype=np.float64).ravel()
    if images.ndim != 3 or masks.shape != images.shape:
        raise ValueError(
            f"images {images.shape} and masks {masks.shape} must both be (n, height, width)"
        )
    if spacing.shape[0] != images.shape[0]:
        raise ValueError(f"{spacing.shape[0]} spacings for {images.shape[0]} patches")
    if np.any(spacing <= 0):
        raise ValueError(f"pixel spacings must be > 0, got minimum {spacing.min()}")
    if ring_mm <= 0:
        raise ValueError(f"ring_mm must be > 0, got {ring_mm}")
    out = np.empty((images.shape[0], len(FEATURE_NAMES)), dtype=np.float64)
    for i, (image, mask, s) in enumerate(zip(images, masks, spacing, strict=True)):
        m = mask > 0
        if not m.any():
            raise ValueError(f"patch {i} has an empty outline; drop it or give its outline")
        hu = np.clip(image.astype(np.float64), *HU_RANGE)
        components = label(m)
        rp = max(regionprops(components), key=lambda r: r.area)
        area = m.sum() * s * s
        perimeter = max(rp.perimeter * s, s)
        inside = hu[m]
        ring = ndi.binary_dilation(m, iterations=max(1, int(round(ring_mm / s)))) & ~m
        ring_hu = hu[ring] if ring.any() else inside  # outline fills the patch: no margin seen
        out[i] = (
            np.log1p(area),
            rp.axis_major_length * s,
            rp.axis_minor_length * s,
            4.0 * np.pi * area / perimeter**2,
            rp.solidity,
            rp.eccentricity,
            inside.mean(),
            inside.std(),
            np.percentile(inside, 95),
            (inside > CALCIFIED_HU).mean(),
            (inside < LOW_DENSITY_HU).mean(),
            ring_hu.mean(),
            ring_hu.std(),
        )
    return out
