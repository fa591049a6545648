"""Nodule segmentation around a U-Net: training patches, whole-scan inference, candidates.

- :func:`sample_patches` cuts training patches from a volume: positives centred (with jitter) on
  nodules, negatives centred on random lung voxels -- or, with ``hard_fraction``, on bright lung
  voxels away from the nodules (vessels: the look-alikes a model must learn to reject). With
  ``context`` a 2D patch carries its neighbouring slices as channels ("2.5D").
- :func:`predict_volume` slides a 2D (per slice, optionally 2.5D) or 3D patch model over the
  bounding box of the lung mask and averages the overlapping windows into a probability map.
- :func:`find_candidates` turns a probability map into a table of nodule candidates with
  volume, equivalent diameter, centroid (voxel and mm) and peak probability;
  :func:`candidate_mask` keeps the voxels of the candidates above a minimum volume.

The model is anything with a Keras-style ``predict(batch, batch_size=..., verbose=0)`` that
maps ``(n, *patch_shape, channels)`` to probabilities of shape ``(n, *patch_shape, 1)``; this
module imports no TensorFlow. Work in one voxel grid throughout: the probability map, masks and
geometry given to :func:`find_candidates` must all describe the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import measure

from lunglib.preprocess.steps import check_patch_shape as _check_shape
from lunglib.preprocess.steps import extract_patch

CANDIDATE_COLUMNS = [
    "candidate", "peak_prob", "mean_prob", "volume_mm3", "diameter_mm", "n_voxels",
    "centroid_z", "centroid_y", "centroid_x", "x_mm", "y_mm", "z_mm",
]


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
        Model-ready intensities (e.g. :func:`lunglib.preprocess.steps.window` output).
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
        Use :func:`context_step_for` to keep the context a fixed distance in mm whatever the
        slice thickness, so a model trained on 2.5 mm slices sees the same geometry on 1.25 mm
        ones.
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
    context = int(context)
    if context < 0 or (context and not planar):
        raise ValueError(
            f"context={context}: neighbouring slices as channels need in-plane (h, w) patches of "
            "a 3D image and context >= 0"
        )
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    step = _check_step(context_step)
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

    Run a first model over a *training* scan (:func:`predict_volume`), then cut ``n`` patches
    centred on random voxels with ``prob > threshold`` that lie at least ``margin`` voxels from
    every nodule -- the model's own false positives, the way
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
    context = int(context)
    if context < 0 or (context and not planar):
        raise ValueError(f"context={context} needs in-plane (h, w) patches and context >= 0")
    step = _check_step(context_step)
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


def _check_step(context_step: int) -> int:
    if int(context_step) != context_step or context_step < 1:
        raise ValueError(f"context_step must be a positive integer, got {context_step!r}")
    return int(context_step)


def context_step_for(slice_spacing_mm: float, context_mm: float | None) -> int:
    """Slices between the channels of a 2.5D input so that they lie about ``context_mm`` apart.

    ``max(1, round(context_mm / slice_spacing_mm))``: 2 for 1.25 mm slices and 2.5 mm, 1 for
    2-3 mm slices; 1 when ``context_mm`` is None or 0 (neighbouring slices, whatever their
    spacing). Pass the result as ``context_step`` to :func:`sample_patches` and
    :func:`predict_volume`, scan by scan.
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
    found = np.argwhere(lung_mask > 0)
    if len(found) == 0:
        raise ValueError("lung_mask is empty; pass lung_mask=None to search the whole volume")
    margin = np.broadcast_to(np.asarray(margin, dtype=int), (len(shape),))
    lo = np.maximum(found.min(axis=0) - margin, 0)
    hi = np.minimum(found.max(axis=0) + 1 + margin, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


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
        Slices between neighbouring channels, as given to :func:`sample_patches` for training.
    flip : bool, default False
        Test-time augmentation: also predict every window mirrored left-right and average the
        two probabilities (twice the inference time). A false positive that the model fires on
        only one of the two views is halved, while a nodule, found in both, keeps its
        probability.

    Returns
    -------
    ndarray of float32, shape of ``image``
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be a (z, y, x) volume, got shape {image.shape}")
    patch = tuple(int(s) for s in patch_shape)
    context = int(context)
    if context < 0 or (context and len(patch) != 2):
        raise ValueError(f"context={context} needs a 2D patch_shape (h, w) and context >= 0")
    reach = int(context) * _check_step(context_step)
    if len(patch) == 2:
        window = (1, *patch)
    elif len(patch) == 3:
        window = patch
    else:
        raise ValueError(f"patch_shape {patch_shape} must be (h, w) for 2D or (d, h, w) for 3D")
    if stride is None:
        stride = tuple(max(1, s // 2) for s in patch)
    stride = tuple(int(s) for s in np.broadcast_to(np.asarray(stride), (len(patch),)))
    if len(patch) == 2:
        stride = (1, *stride)
    if min(stride) < 1:
        raise ValueError(f"stride must be >= 1 on every axis, got {stride}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fill = float(image.min()) if fill is None else fill

    box = lung_box(lung_mask, image.shape, margin if len(patch) == 3 else (0, margin, margin))
    region = image[box]
    pad = [(0, max(0, w - n)) for w, n in zip(window, region.shape, strict=True)]
    region = np.pad(region, pad, mode="constant", constant_values=fill)
    if context:  # neighbouring slices, from the image itself where they exist
        z0, z1 = box[0].start, box[0].stop
        below = image[max(z0 - reach, 0):z0, box[1], box[2]]
        above = image[z1:z1 + reach, box[1], box[2]]
        sides = [(0, 0), (0, region.shape[1] - below.shape[1]),
                 (0, region.shape[2] - below.shape[2])]
        below = np.pad(below, sides, mode="constant", constant_values=fill)
        above = np.pad(above, sides, mode="constant", constant_values=fill)
        stacked = np.concatenate([below, region[: z1 - z0], above])
        stacked = np.pad(stacked, [(reach - len(below), reach - len(above)), (0, 0), (0, 0)],
                         mode="constant", constant_values=fill)
    else:
        stacked = region
    corners = [
        (z, y, x)
        for z in _starts(region.shape[0], window[0], stride[0])
        for y in _starts(region.shape[1], window[1], stride[1])
        for x in _starts(region.shape[2], window[2], stride[2])
    ]
    total = np.zeros(region.shape, dtype=np.float32)
    count = np.zeros(region.shape, dtype=np.float32)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first:first + batch_size]
        if context:
            batch = np.stack([
                np.moveaxis(stacked[z:z + 1 + 2 * reach:context_step, y:y + window[1],
                                    x:x + window[2]], 0, -1)
                for z, y, x in chunk
            ])
        else:
            batch = np.stack([
                region[z:z + window[0], y:y + window[1], x:x + window[2]] for z, y, x in chunk
            ])[..., None]
            if len(patch) == 2:
                batch = batch[:, 0]
        prob = np.asarray(model.predict(batch, batch_size=batch_size, verbose=0))
        if flip:  # axis -2 of a (n, ..., w, channels) batch is left-right
            mirrored = np.asarray(model.predict(np.flip(batch, axis=-2), batch_size=batch_size,
                                                verbose=0))
            prob = (prob + np.flip(mirrored, axis=-2)) / 2.0
        prob = prob.reshape(len(chunk), *window)
        for (z, y, x), p in zip(chunk, prob, strict=True):
            total[z:z + window[0], y:y + window[1], x:x + window[2]] += p
            count[z:z + window[0], y:y + window[1], x:x + window[2]] += 1
    averaged = total / np.maximum(count, 1)
    out = np.zeros(image.shape, dtype=np.float32)
    out[box] = averaged[tuple(slice(0, n) for n in image[box].shape)]
    if clip_to_lung and lung_mask is not None:
        grow = int(np.max(margin))
        keep = lung_mask > 0
        if grow:
            structure = ndimage.generate_binary_structure(3, 1)
            if len(patch) == 2:  # per-slice models search no extra slices: grow in-plane only
                structure[0] = structure[2] = False
            keep = ndimage.binary_dilation(keep, structure, iterations=grow)
        out[~keep] = 0.0
    return out


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
            "diameter_mm": float(np.cbrt(6.0 * volume / np.pi)),
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
    :func:`lunglib.evaluation.segmentation.choose_postprocessing` agree on them.
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
    peaks = (np.asarray(ndimage.maximum(prob, labels, index=np.arange(n + 1)))
             if min_peak > 0 else None)
    keep = kept_components(counts, peaks, float(np.prod(spacing)), min_volume_mm3, min_peak)
    return keep[labels]


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
