"""Boxes in voxel arrays: the bounding box of a mask, and fixed-size patches around a centre.

A box is a tuple of slices, one per axis, so that ``volume[box]`` is the cropped array.
:func:`mask_bbox` is the one place that turns a mask into such a box (optionally grown by a
margin and clipped to the array); lung segmentation, :func:`~lunglib.preprocess.prepare` and
sliding-window inference all use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mask_bbox(mask: np.ndarray, margin: Sequence[int] | int = 0) -> tuple[slice, ...] | None:
    """The smallest box holding every nonzero voxel of ``mask``, grown by ``margin``.

    Parameters
    ----------
    mask : ndarray
        Any number of axes; nonzero voxels count.
    margin : int or sequence of int, default 0
        Voxels added on both sides of each axis (one value for all axes, or one per axis). The
        grown box is clipped to the array.

    Returns
    -------
    tuple of slice or None
        One ``slice(start, stop)`` per axis (``stop`` exclusive, so ``mask[box]`` is the crop);
        None when the mask is empty.
    """
    mask = np.asarray(mask)
    grow = np.broadcast_to(np.asarray(margin, dtype=int), (mask.ndim,))
    if np.any(grow < 0):
        raise ValueError(f"margin must be >= 0 voxels, got {margin}")
    box = []
    for axis, (pad, n) in enumerate(zip(grow, mask.shape, strict=True)):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        found = np.flatnonzero(mask.any(axis=others))
        if found.size == 0:
            return None
        box.append(slice(max(int(found[0]) - int(pad), 0), min(int(found[-1]) + 1 + int(pad), n)))
    return tuple(box)


def check_patch_shape(patch_shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    """``patch_shape`` as a tuple of ints, one positive size per image axis, or a ValueError."""
    shape = tuple(int(s) for s in patch_shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(
            f"patch_shape {tuple(patch_shape)} must have {ndim} positive sizes, one per axis of "
            "the image"
        )
    return shape


def extract_patch(
    volume: np.ndarray, centre: Sequence[int], patch_shape: Sequence[int], fill: float = 0
) -> np.ndarray:
    """The ``patch_shape`` box of ``volume`` centred on ``centre``, padded with ``fill``.

    The box starts at ``centre - patch_shape // 2`` on each axis; parts outside the volume take
    the value ``fill``.
    """
    shape = check_patch_shape(patch_shape, volume.ndim)
    out = np.full(shape, fill, dtype=volume.dtype)
    src, dst = [], []
    for c, p, n in zip(centre, shape, volume.shape, strict=True):
        start = int(c) - p // 2
        lo, hi = max(start, 0), min(start + p, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = volume[tuple(src)]
    return out
