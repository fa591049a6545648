"""Training patches for the nodule segmenter: samples around nodules and the model's own mistakes.

- :func:`sample_patches` cuts training patches from a volume: positives centred (with jitter) on
  nodules, negatives centred on random lung voxels -- or, with ``hard_fraction``, on bright lung
  voxels away from the nodules (vessels: the look-alikes a model must learn to reject). With
  ``context`` a 2D patch carries its neighbouring slices as channels ("2.5D").
- :func:`false_positive_patches` cuts hard negatives where a first model fires off the nodules,
  for a second training round.

Both return image patches and their masks cut around the same centres (:func:`_cut_patches`),
so an image and its outline never drift apart. NumPy and SciPy only; no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from lunglib.preprocess import check_patch_shape as _check_shape
from lunglib.preprocess import extract_patch


def sample_patches(
    image: np.ndarray,
    nodule_mask: np.ndarray,
    lung_mask: np.ndarray,
    patch_shape: Sequence[int],
    n_pos: int,
    n_neg: int,
    rng: np.random.Generator | int | None = None,
    jitter: Sequence[int] | int | None = None,
    fill: float | None = None,
    context: int = 0,
    hard_fraction: float = 0.0,
    hard_level: float | None = None,
    hard_margin: int = 3,
    context_step: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Training patches of an image and its binary nodule mask.

    Parameters
    ----------
    image : ndarray (z, y, x) or (y, x)
        Model-ready intensities (e.g. :func:`lunglib.preprocess.window` output).
    nodule_mask : ndarray, same shape
        Nonzero inside nodules (a label image with k = nodule k works too).
    lung_mask : ndarray, same shape
        Nonzero inside the lungs; negative patches are centred on its voxels.
    patch_shape : sequence of int
        Patch size per axis of ``image``; or ``(h, w)`` on a 3D image for in-plane (axial)
        patches of a 2D model.
    n_pos, n_neg : int
        Number of positive patches and negative patches. Each positive patch picks a nodule
        uniformly (so small nodules count as much as large ones), then a random voxel of it as
        centre, so 2D patches also show the nodule's thin top and bottom slices. With no
        nodule in ``nodule_mask`` no positive patch is made.
    rng : Generator or int, optional
        Random source (or seed); the same seed gives the same patches.
    jitter : int or sequence of int, optional
        Maximum shift, in voxels per axis, of a positive patch's centre from the nodule's
        centre (uniform). Default a quarter of the patch size, so the nodule is not always in
        the middle.
    fill : float, optional
        Value outside the image; default ``image.min()``.
    context : int, default 0
        For in-plane patches of a 3D image only: also return the ``context`` slices above and
        below each patch, as channels (a "2.5D" input: the network can tell a vessel, which
        continues through the neighbouring slices, from a nodule, which ends). The mask stays
        that of the centre slice.
    context_step : int, default 1
        Slices between neighbouring channels: channel ``k`` is slice ``z + k * context_step``.
        Use :func:`lunglib.inference.context_step_for` to keep the context a fixed distance in
        mm whatever the slice thickness, so a model trained on 2.5 mm slices sees the same
        geometry on 1.25 mm ones.
    hard_fraction : float, default 0
        Fraction of the negative patches centred on *bright* lung voxels (``image >=
        hard_level``) at least ``hard_margin`` voxels from any nodule -- in a CT that is mostly
        vessels, the structures a nodule model confuses with nodules. The rest are centred on
        random lung voxels. Falls back to random lung voxels when there is no bright one.
    hard_level : float, optional
        Intensity that counts as bright; default the 97th percentile of ``image`` inside the
        lung mask.
    hard_margin : int, default 3
        Distance, in voxels (in 3D), that hard negatives keep from nodules.

    Returns
    -------
    images, masks : ndarray
        ``(n, *patch_shape)`` float32 images and uint8 0/1 masks, positives first; with
        ``context`` the images are ``(n, h, w, 2 * context + 1)`` (centre slice in the middle
        channel). Negative patches may contain part of a nodule by chance; their masks show it.
        Add the channel axis (``[..., None]``) for Keras where there is none.
    """
    image = np.asarray(image)
    if nodule_mask.shape != image.shape or lung_mask.shape != image.shape:
        raise ValueError(
            f"image {image.shape}, nodule_mask {nodule_mask.shape} and lung_mask "
            f"{lung_mask.shape} must have the same shape"
        )
    planar = image.ndim == 3 and len(patch_shape) == 2
    context, step = check_context(context, context_step, planar)
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    reach = context * step
    shape = _check_shape((1 + 2 * reach, *patch_shape) if planar else patch_shape, image.ndim)
    if n_pos < 0 or n_neg < 0:
        raise ValueError(f"n_pos and n_neg must be >= 0, got {n_pos} and {n_neg}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if jitter is None:
        jitter = (0, *(p // 4 for p in shape[1:])) if planar else tuple(p // 4 for p in shape)
    jitter = np.broadcast_to(np.asarray(jitter, dtype=int), (image.ndim,))
    fill = float(image.min()) if fill is None else fill
    binary = (np.asarray(nodule_mask) > 0).astype(np.uint8)

    centres: list[np.ndarray] = []
    labels, n_nodules = ndimage.label(binary)
    if n_nodules and n_pos:
        voxels = [np.argwhere(labels == k) for k in range(1, n_nodules + 1)]
        for k in rng.integers(0, n_nodules, size=n_pos):
            centre = voxels[k][rng.integers(0, len(voxels[k]))]
            centres.append(centre + rng.integers(-jitter, jitter + 1))
    if n_neg:
        lung = np.asarray(lung_mask) > 0
        lung_voxels = np.argwhere(lung)
        if len(lung_voxels) == 0:
            raise ValueError("lung_mask is empty: no voxel to centre a negative patch on")
        n_hard = int(round(hard_fraction * n_neg))
        if n_hard:
            level = float(np.percentile(image[lung], 97)) if hard_level is None else hard_level
            near = binary.astype(bool)
            if hard_margin > 0 and near.any():
                near = ndimage.binary_dilation(near, iterations=int(hard_margin))
            bright = np.argwhere(lung & (image >= level) & ~near)
            if len(bright):
                centres.extend(bright[rng.integers(0, len(bright), size=n_hard)])
            else:
                n_hard = 0
        centres.extend(lung_voxels[rng.integers(0, len(lung_voxels), size=n_neg - n_hard)])

    return _cut_patches(image, binary, centres, shape, fill, planar, context, step)


def _cut_patches(
    image: np.ndarray,
    binary: np.ndarray,
    centres: Sequence[Sequence[int]],
    shape: tuple[int, ...],
    fill: float,
    planar: bool,
    context: int,
    step: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask patches of ``shape`` (z, y, x) around each centre; for in-plane patches
    the slices ``step`` apart become channels and the mask is the centre slice's."""
    reach = context * step
    images = np.empty((len(centres), *shape), dtype=np.float32)
    masks = np.empty((len(centres), *shape), dtype=np.uint8)
    for i, centre in enumerate(centres):
        images[i] = extract_patch(image, centre, shape, fill)
        masks[i] = extract_patch(binary, centre, shape, 0)
    if planar and context:
        return np.moveaxis(images[:, ::step], 1, -1), masks[:, reach]
    if planar:
        return images[:, 0], masks[:, 0]
    return images, masks


def false_positive_patches(
    prob: np.ndarray,
    image: np.ndarray,
    nodule_mask: np.ndarray,
    patch_shape: Sequence[int],
    n: int,
    rng: np.random.Generator | int | None = None,
    threshold: float = 0.5,
    margin: int = 3,
    fill: float | None = None,
    context: int = 0,
    context_step: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Hard negatives for a second training round: patches where a model fires off the nodules.

    Run a first model over a *training* scan (:func:`lunglib.inference.predict_volume`), then
    cut ``n`` patches centred on random voxels with ``prob > threshold`` that lie at least
    ``margin`` voxels from every nodule -- the model's own false positives, the way
    :func:`lunglib.training.hard_negatives` mines them for a classifier. Add them to the training
    patches and train again (or fine-tune).

    Parameters
    ----------
    prob : ndarray (z, y, x)
        The first model's probability map of this scan.
    image, nodule_mask : ndarray, shape of ``prob``
        The scan's model-ready intensities and its nodule mask (nonzero = nodule).
    patch_shape, fill, context, context_step
        As for :func:`sample_patches`.
    n : int
        Number of patches; none are made when the model fires nowhere off the nodules.
    rng : Generator or int, optional
        Random source (or seed).
    threshold : float, default 0.5
        Probability above which a voxel counts as fired.
    margin : int, default 3
        Distance in voxels (3D) kept from the nodules, so outline errors are not mined.

    Returns
    -------
    images, masks : ndarray
        As :func:`sample_patches` returns them; ``len(images) == n`` or 0. A patch may still
        show part of a nodule at its edge; its mask shows it.
    """
    prob = np.asarray(prob)
    image = np.asarray(image)
    if prob.shape != image.shape or np.shape(nodule_mask) != image.shape or prob.ndim != 3:
        raise ValueError(
            f"prob {prob.shape}, image {image.shape} and nodule_mask {np.shape(nodule_mask)} "
            "must be (z, y, x) volumes of the same shape"
        )
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    planar = len(patch_shape) == 2
    context, step = check_context(context, context_step, planar)
    shape = _check_shape((1 + 2 * context * step, *patch_shape) if planar else patch_shape, 3)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    fill = float(image.min()) if fill is None else fill
    binary = (np.asarray(nodule_mask) > 0).astype(np.uint8)
    near = binary.astype(bool)
    if margin > 0 and near.any():
        near = ndimage.binary_dilation(near, iterations=int(margin))
    fired = np.argwhere((prob > threshold) & ~near)
    centres = fired[rng.integers(0, len(fired), size=n)] if len(fired) and n else fired[:0]
    return _cut_patches(image, binary, list(centres), shape, fill, planar, context, step)


def check_context(context: int, context_step: int, planar: bool) -> tuple[int, int]:
    """``(context, context_step)`` of a 2.5D input as ints, or a ValueError.

    ``context`` must be >= 0 and, when not 0, go with in-plane (``planar``) patches of a volume:
    the neighbouring slices become channels. ``context_step`` must be a positive integer.
    Shared by the patch samplers here and :func:`lunglib.inference.predict_volume`.
    """
    context = int(context)
    if context < 0 or (context and not planar):
        raise ValueError(
            f"context={context}: neighbouring slices as channels need in-plane (h, w) patches of "
            "a 3D volume and context >= 0"
        )
    if int(context_step) != context_step or context_step < 1:
        raise ValueError(f"context_step must be a positive integer, got {context_step!r}")
    return context, int(context_step)
