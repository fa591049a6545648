"""Sliding-window inference: a patch-trained model over the lungs of a whole scan.

:func:`predict_volume` slides a 2D (per slice, optionally 2.5D) or 3D patch model over the
bounding box of the lung mask (:func:`lung_box`) and averages the overlapping windows into a
probability map; :func:`slice_window` gives the in-plane window that covers a whole slice of the
lungs in one go, and :func:`context_step_for` the slice step of a 2.5D input for a slice
thickness. Its stages are small helpers below: the window geometry, the padded region and its
context slices, the batches of windows, the predictions (with test-time augmentation through
:func:`lunglib.augment.predict_tta`) and the clipping to the lungs.

The model is anything with a Keras-style ``predict(batch, batch_size=..., verbose=0)`` that
maps ``(n, *patch_shape, channels)`` to probabilities of shape ``(n, *patch_shape, 1)``; this
module imports no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from lunglib.augment import predict_tta
from lunglib.preprocess import mask_bbox
from lunglib.training.sampling import check_context


def context_step_for(slice_spacing_mm: float, context_mm: float | None) -> int:
    """Slices between the channels of a 2.5D input so that they lie about ``context_mm`` apart.

    ``max(1, round(context_mm / slice_spacing_mm))``: 2 for 1.25 mm slices and 2.5 mm, 1 for
    2-3 mm slices; 1 when ``context_mm`` is None or 0 (neighbouring slices, whatever their
    spacing). Pass the result as ``context_step`` to
    :func:`lunglib.training.sampling.sample_patches` and :func:`predict_volume`, scan by scan.
    """
    if slice_spacing_mm <= 0:
        raise ValueError(f"slice_spacing_mm must be > 0, got {slice_spacing_mm}")
    if not context_mm:
        return 1
    if context_mm < 0:
        raise ValueError(f"context_mm must be >= 0, got {context_mm}")
    return max(1, int(round(context_mm / slice_spacing_mm)))


def _starts(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def lung_box(
    lung_mask: np.ndarray | None, shape: Sequence[int], margin: Sequence[int] | int = 0
) -> tuple[slice, ...]:
    """Bounding box of the lung mask grown by ``margin`` voxels per axis (whole array if None)."""
    if lung_mask is None:
        return tuple(slice(0, n) for n in shape)
    if tuple(lung_mask.shape) != tuple(shape):
        raise ValueError(f"lung_mask shape {lung_mask.shape} differs from image shape {shape}")
    box = mask_bbox(lung_mask > 0, margin)
    if box is None:
        raise ValueError("lung_mask is empty; pass lung_mask=None to search the whole volume")
    return box


def slice_window(
    lung_mask: np.ndarray, multiple: int = 8, margin: int = 2
) -> tuple[int, int]:
    """In-plane size of the lung box (grown by ``margin``) rounded up to ``multiple``.

    The window that covers a whole axial slice of the lungs in one go: resize a 2D U-Net to it
    (:func:`lunglib.models.unet.resize_unet`, ``multiple = 2 ** depth``) and pass it to
    :func:`predict_volume` as ``patch_shape`` for fast per-slice inference.
    """
    box = lung_box(lung_mask, lung_mask.shape, (0, margin, margin))
    return tuple(int(-(-(b.stop - b.start) // multiple) * multiple) for b in box[1:])


def predict_volume(
    model,
    image: np.ndarray,
    lung_mask: np.ndarray | None,
    patch_shape: Sequence[int],
    stride: Sequence[int] | int | None = None,
    batch_size: int = 16,
    margin: Sequence[int] | int = 2,
    fill: float | None = None,
    clip_to_lung: bool = True,
    context: int = 0,
    context_step: int = 1,
    flip: bool = False,
) -> np.ndarray:
    """Nodule probability for every voxel, by a sliding window over the lungs' bounding box.

    Parameters
    ----------
    model : keras.Model or any object with ``predict(x, batch_size=, verbose=)``
        A 2D model (input ``(h, w, 1)``) is run slice by slice; a 3D model (input
        ``(d, h, w, 1)``) on 3D windows.
    image : ndarray (z, y, x)
        Model-ready intensities, the same preprocessing as the training patches.
    lung_mask : ndarray (z, y, x) or None
        Only the bounding box of its nonzero voxels (grown by ``margin``) is searched; voxels
        outside keep probability 0. ``None`` searches the whole volume.
    patch_shape : sequence of int
        The model's spatial input: ``(h, w)`` for 2D, ``(d, h, w)`` for 3D.
    stride : int or sequence of int, optional
        Window step per axis; default half the patch (50 % overlap). Overlapping windows are
        averaged.
    batch_size : int, default 16
    margin : int or sequence of int, default 2
        Voxels added around the lung box, so nodules on the pleura are not cut off.
    fill : float, optional
        Value to pad with where the box is smaller than a patch; default ``image.min()``.
    clip_to_lung : bool, default True
        Also set the probability to 0 outside the lung mask grown by ``max(margin)`` voxels
        (in-plane only for a 2D model) -- chest wall, mediastinum -- which a model trained
        on lung patches has never seen. The lung mask must then include the nodules (as
        ``segment_lungs`` and the synthetic cohort's masks do).
    context : int, default 0
        For a 2.5D model (2D input with ``2 * context + 1`` channels, trained on
        ``sample_patches(..., context=context)``): each slice is given with its ``context``
        neighbours above and below as channels, padded with ``fill`` beyond the volume.
    context_step : int, default 1
        Slices between neighbouring channels, as given to
        :func:`lunglib.training.sampling.sample_patches` for training.
    flip : bool, default False
        Test-time augmentation: also predict every window mirrored left-right and average the
        two probabilities (the ``"flip"`` views of :func:`lunglib.augment.predict_tta`; twice
        the inference time). A false positive that the model fires on only one of the two views
        is halved, while a nodule, found in both, keeps its probability.

    Returns
    -------
    ndarray of float32, shape of ``image``
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be a (z, y, x) volume, got shape {image.shape}")
    planar = len(patch_shape) == 2
    context, step = check_context(context, context_step, planar)
    window, stride = _window_geometry(patch_shape, stride)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fill = float(image.min()) if fill is None else fill

    box = lung_box(lung_mask, image.shape, (0, margin, margin) if planar else margin)
    region = _pad_to(image[box], window, fill)
    source = _with_context(image, box, region, context * step, fill) if context else region
    corners = _window_corners(region.shape, window, stride)
    total = np.zeros(region.shape, dtype=np.float32)
    count = np.zeros(region.shape, dtype=np.float32)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first:first + batch_size]
        batch = _window_batch(source, chunk, window, planar, context, step)
        prob = _predict_views(model, batch, batch_size, flip).reshape(len(chunk), *window)
        for (z, y, x), p in zip(chunk, prob, strict=True):
            total[z:z + window[0], y:y + window[1], x:x + window[2]] += p
            count[z:z + window[0], y:y + window[1], x:x + window[2]] += 1
    averaged = total / np.maximum(count, 1)
    out = np.zeros(image.shape, dtype=np.float32)
    out[box] = averaged[tuple(slice(0, n) for n in image[box].shape)]
    if clip_to_lung and lung_mask is not None:
        out[~_grown_lung(lung_mask, int(np.max(margin)), planar)] = 0.0
    return out


def _window_geometry(
    patch_shape: Sequence[int], stride: Sequence[int] | int | None
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The (z, y, x) window and step of a 2D ``(h, w)`` or 3D ``(d, h, w)`` patch model.

    A 2D model's window is one slice deep and steps one slice at a time; the default stride is
    half the patch (50 % overlap).
    """
    patch = tuple(int(s) for s in patch_shape)
    if len(patch) not in (2, 3):
        raise ValueError(f"patch_shape {patch_shape} must be (h, w) for 2D or (d, h, w) for 3D")
    if stride is None:
        stride = tuple(max(1, s // 2) for s in patch)
    stride = tuple(int(s) for s in np.broadcast_to(np.asarray(stride), (len(patch),)))
    if len(patch) == 2:
        patch, stride = (1, *patch), (1, *stride)
    if min(stride) < 1:
        raise ValueError(f"stride must be >= 1 on every axis, got {stride}")
    return patch, stride


def _pad_to(region: np.ndarray, window: Sequence[int], fill: float) -> np.ndarray:
    """``region`` padded with ``fill`` at the far end of each axis to at least ``window``."""
    pad = [(0, max(0, w - n)) for w, n in zip(window, region.shape, strict=True)]
    return np.pad(region, pad, mode="constant", constant_values=fill)


def _with_context(
    image: np.ndarray, box: tuple[slice, ...], region: np.ndarray, reach: int, fill: float
) -> np.ndarray:
    """The region with ``reach`` more slices below and above, taken from the image where they
    exist and ``fill`` beyond it: the neighbours a 2.5D window needs at the box's ends."""
    z0, z1 = box[0].start, box[0].stop
    below = image[max(z0 - reach, 0):z0, box[1], box[2]]
    above = image[z1:z1 + reach, box[1], box[2]]
    sides = [(0, 0), (0, region.shape[1] - below.shape[1]), (0, region.shape[2] - below.shape[2])]
    below = np.pad(below, sides, mode="constant", constant_values=fill)
    above = np.pad(above, sides, mode="constant", constant_values=fill)
    stacked = np.concatenate([below, region[: z1 - z0], above])
    return np.pad(stacked, [(reach - len(below), reach - len(above)), (0, 0), (0, 0)],
                  mode="constant", constant_values=fill)


def _window_corners(
    shape: Sequence[int], window: Sequence[int], stride: Sequence[int]
) -> list[tuple[int, int, int]]:
    """Every window's first voxel (z, y, x); the last window on each axis ends at the edge."""
    return [
        (z, y, x)
        for z in _starts(shape[0], window[0], stride[0])
        for y in _starts(shape[1], window[1], stride[1])
        for x in _starts(shape[2], window[2], stride[2])
    ]


def _window_batch(
    source: np.ndarray,
    corners: Sequence[tuple[int, int, int]],
    window: Sequence[int],
    planar: bool,
    context: int,
    step: int,
) -> np.ndarray:
    """The model inputs at ``corners``: ``(n, h, w, 2 * context + 1)`` slices with their
    neighbours as channels (``source`` holds the context slices), ``(n, h, w, 1)`` slices or
    ``(n, d, h, w, 1)`` blocks."""
    if context:
        reach = context * step
        return np.stack([
            np.moveaxis(source[z:z + 1 + 2 * reach:step, y:y + window[1], x:x + window[2]], 0, -1)
            for z, y, x in corners
        ])
    batch = np.stack([
        source[z:z + window[0], y:y + window[1], x:x + window[2]] for z, y, x in corners
    ])[..., None]
    return batch[:, 0] if planar else batch


def _predict_views(model, batch: np.ndarray, batch_size: int, flip: bool) -> np.ndarray:
    """The model's float32 probabilities of a batch; with ``flip``, the mean of the batch and
    its left-right mirror (mapped back), as :func:`lunglib.augment.predict_tta` computes it.

    The in-plane axes of a ``(n, [d,] h, w, channels)`` batch are the two before the channels;
    the mirror flips the last of them.
    """
    def predict(views: np.ndarray) -> np.ndarray:
        return model.predict(views, batch_size=batch_size, verbose=0)

    axes = (batch.ndim - 3, batch.ndim - 2)
    prob = predict_tta(predict, batch, views="flip" if flip else "none", dense=True, axes=axes)
    return prob.astype(np.float32)


def _grown_lung(lung_mask: np.ndarray, grow: int, planar: bool) -> np.ndarray:
    """The lung mask grown by ``grow`` voxels: in-plane only for a per-slice (2D) model, which
    searches no extra slices; in 3D otherwise."""
    keep = lung_mask > 0
    if grow:
        structure = ndimage.generate_binary_structure(3, 1)
        if planar:
            structure[0] = structure[2] = False
        keep = ndimage.binary_dilation(keep, structure, iterations=grow)
    return keep
