"""2D HU nodule patches to CNN input: windowed, resampled to one pixel size, cropped or padded.

:func:`patch_inputs` turns a patch set's images (and outlines) into ``(n, size, size, channels)``
arrays in [0, 1], with optional extra HU windows, the outline and a size-normalised view of the
nodule as further channels. NumPy and scikit-image only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def patch_inputs(
    images: np.ndarray,
    masks: np.ndarray | None = None,
    spacing_mm: np.ndarray | None = None,
    target_spacing_mm: float | None = 0.8,
    size: int = 40,
    window: tuple[float, float] = (-1000.0, 1000.0),
    extra_windows: Sequence[tuple[float, float]] = (),
    nodule_view: float | None = None,
) -> np.ndarray:
    """2D HU patches to CNN input ``(n, size, size, channels)`` in [0, 1].

    Each patch is clipped to the HU ``window`` and scaled to [0, 1]; resampled to
    ``target_spacing_mm`` pixels (so a pixel means the same millimetres in every patch) when
    ``spacing_mm`` is given; centre-cropped or padded (with the window's low end) to ``size``.

    Channels, in this order: the patch in ``window``; the same patch in every one of
    ``extra_windows`` (e.g. a lung window ``(-1000, -400)`` and a mediastinal one
    ``(-160, 240)``); the outline when ``masks`` is given; and with ``nodule_view`` a
    size-normalised view: a square around the outline's bounding box, ``1 / nodule_view`` times
    its longer side, resized to ``size`` (so the outline spans about ``nodule_view`` of the
    channel whatever the nodule's size), in ``window``. ``nodule_view`` needs ``masks``.
    """
    from skimage.transform import rescale

    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must be (n, height, width) HU patches, got {images.shape}")
    if masks is not None and np.shape(masks) != images.shape:
        raise ValueError(f"masks {np.shape(masks)} must match images {images.shape}")
    windows = [tuple(window), *(tuple(w) for w in extra_windows)]
    for lo, hi in windows:
        if hi <= lo:
            raise ValueError(f"window {(lo, hi)} must be (low, high) with low < high")
    if nodule_view is not None:
        if masks is None:
            raise ValueError("nodule_view needs masks: the view is cut around the outline")
        if not 0.0 < nodule_view <= 1.0:
            raise ValueError(f"nodule_view must be in (0, 1], got {nodule_view}")
    resample = spacing_mm is not None and target_spacing_mm is not None
    if resample and len(spacing_mm) != len(images):
        raise ValueError(f"{len(spacing_mm)} spacings for {len(images)} patches")
    channels = len(windows) + (masks is not None) + (nodule_view is not None)
    out = np.empty((len(images), size, size, channels), dtype=np.float32)
    lo, hi = windows[0]
    for i, raw in enumerate(images):
        raw = raw.astype(np.float32)
        msk = None if masks is None else masks[i].astype(np.float32)
        img = raw
        if resample:
            scale = float(spacing_mm[i]) / target_spacing_mm
            # resample the widest window's range once; each window clips the result
            wlo, whi = min(w[0] for w in windows), max(w[1] for w in windows)
            img = rescale(np.clip(raw, wlo, whi), scale, order=1, preserve_range=True,
                          anti_aliasing=True)
            if msk is not None:
                msk = rescale(msk, scale, order=1, preserve_range=True)
        for c, (wlo, whi) in enumerate(windows):
            out[i, :, :, c] = (_center_crop_pad(np.clip(img, wlo, whi), size, wlo) - wlo) / (
                whi - wlo
            )
        c = len(windows)
        if msk is not None:
            out[i, :, :, c] = _center_crop_pad((msk >= 0.5).astype(np.float32), size, 0.0)
            c += 1
        if nodule_view is not None:
            view = _nodule_view(np.clip(raw, lo, hi), masks[i] > 0, nodule_view, size, lo)
            out[i, :, :, c] = (view - lo) / (hi - lo)
    return out


def _nodule_view(img: np.ndarray, mask: np.ndarray, fraction: float, size: int,
                 fill: float) -> np.ndarray:
    """A square around ``mask``'s bounding box, its longer side / ``fraction``, resized."""
    from skimage.transform import resize

    if not mask.any():
        return _center_crop_pad(img, size, fill)
    rows, cols = np.nonzero(mask)
    cy, cx = (rows.min() + rows.max()) / 2.0, (cols.min() + cols.max()) / 2.0
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    half = max(extent / fraction, 4.0) / 2.0
    top, left = int(round(cy - half)), int(round(cx - half))
    side = int(round(2 * half))
    canvas = np.full((side, side), fill, dtype=np.float32)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + side, img.shape[0]), min(left + side, img.shape[1])
    canvas[r0 - top : r1 - top, c0 - left : c1 - left] = img[r0:r1, c0:c1]
    return resize(canvas, (size, size), order=1, preserve_range=True, anti_aliasing=True)


def _center_crop_pad(a: np.ndarray, size: int, fill: float) -> np.ndarray:
    out = np.full((size, size), fill, dtype=np.float32)
    h, w = a.shape
    sy, sx = max((h - size) // 2, 0), max((w - size) // 2, 0)
    dy, dx = max((size - h) // 2, 0), max((size - w) // 2, 0)
    ch, cw = min(h, size), min(w, size)
    out[dy : dy + ch, dx : dx + cw] = a[sy : sy + ch, sx : sx + cw]
    return out
