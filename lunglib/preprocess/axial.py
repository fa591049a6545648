"""Square axial patches around a point, at a chosen pixel size.

The real-data models that lunglib ships were trained on 2D axial patches of LIDC-IDRI nodules;
:func:`axial_patch` cuts the same kind of patch from any 2D slice (a training patch or a slice of
a whole scan) around a point, resampled to the model's pixel size, so that the training crops and
the crops cut from a user's scan come from one function.

Sampling is scipy's :func:`scipy.ndimage.map_coordinates` (linear for images, nearest for masks);
points outside the slice take ``fill``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def axial_patch(
    image: np.ndarray,
    centre_rc: Sequence[float],
    size: int,
    spacing_mm: float | Sequence[float] = 1.0,
    target_spacing_mm: float | None = None,
    fill: float = -1024.0,
    order: int = 1,
) -> np.ndarray:
    """A ``size`` x ``size`` patch of the 2D ``image`` centred on ``centre_rc``.

    Parameters
    ----------
    image : ndarray (rows, cols)
        One axial slice or patch (HU, or a mask with ``order=0``).
    centre_rc : (row, col)
        The patch centre in ``image``'s pixel coordinates (fractions allowed).
    size : int
        Side of the patch in output pixels.
    spacing_mm : float or (row, col), default 1.0
        ``image``'s pixel size.
    target_spacing_mm : float, optional
        The output pixel size; ``None`` keeps ``image``'s own pixels (no resampling).
    fill : float, default -1024
        Value of output pixels that fall outside ``image`` (air, in HU).
    order : int, default 1
        Spline order: 1 (linear) for images, 0 (nearest) for masks.

    Returns
    -------
    ndarray of float32 (size, size)
        For an even ``size`` the centre lies between the two middle pixels.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be one 2D slice (rows, cols), got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (2,))
    if np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    step = spacing / spacing if target_spacing_mm is None else target_spacing_mm / spacing
    offsets = (np.arange(size) - (size - 1) / 2.0)
    rows = centre_rc[0] + offsets * step[0]
    cols = centre_rc[1] + offsets * step[1]
    grid = np.meshgrid(rows, cols, indexing="ij")
    out = ndimage.map_coordinates(image.astype(np.float32), grid, order=order, mode="constant",
                                  cval=fill)
    return out.astype(np.float32)
