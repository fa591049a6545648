"""The eight exact in-plane orientations (rotations by 90 degrees and mirrorings), for training
and for test-time augmentation (TTA).

One home for the dihedral group of a square image plane:

- :func:`dihedral_patches` -- NumPy, training: every patch and its mask under a random one of
  the eight orientations, drawn afresh per call (for :class:`lunglib.training.EpochAugmented`).
- :func:`dihedral_augment`, :func:`flip_augment` -- TensorFlow, training: a random orientation
  or random in-plane flips of one example inside a ``tf.data`` pipeline.
- :data:`VIEWS`, :func:`apply_view`, :func:`undo_view`, :func:`predict_tta` -- test time: a
  model's predictions averaged over the views, dense (per-pixel) outputs mapped back first.

The transforms are exact (no resampling), so binary masks stay binary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

View = tuple[int, bool]  # (quarter turns, then mirrored along the second in-plane axis)
VIEWS: dict[str, tuple[View, ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "dihedral": tuple((k, flip) for k in range(4) for flip in (False, True)),
}


def apply_view(x: np.ndarray, view: View, axes: tuple[int, int] = (1, 2)) -> np.ndarray:
    """``x`` turned by ``view[0]`` quarter turns in the plane ``axes``, then mirrored along
    ``axes[1]`` when ``view[1]``."""
    k, flip = view
    out = np.rot90(x, k, axes=axes)
    return np.flip(out, axis=axes[1]) if flip else out


def undo_view(y: np.ndarray, view: View, axes: tuple[int, int] = (1, 2)) -> np.ndarray:
    """The inverse of :func:`apply_view`: maps a dense prediction back to the original frame."""
    k, flip = view
    out = np.flip(y, axis=axes[1]) if flip else y
    return np.rot90(out, -k, axes=axes)


def predict_tta(
    predict: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    views: str | Sequence[View] = "dihedral",
    dense: bool = False,
    axes: tuple[int, int] = (1, 2),
) -> np.ndarray:
    """Mean of ``predict`` over several exact views of a batch ``x`` (test-time augmentation).

    Parameters
    ----------
    predict : callable
        ``predict(batch) -> ndarray``, for example ``lambda b: model.predict(b, verbose=0)``.
    x : ndarray (n, h, w, ...)
        A batch whose in-plane axes are ``axes``; they must have equal sizes for the quarter
        turns.
    views : {"dihedral", "flip", "none"} or sequence of (k, mirrored)
        Which views to average; ``"dihedral"`` is all eight.
    dense : bool, default False
        True when the output is per pixel on the same plane (segmentation): each view's output
        is mapped back before averaging. False for one score per example (classification).
    axes : (int, int), default (1, 2)
        The in-plane axes of ``x`` (and of a dense output).

    Returns
    -------
    ndarray
        The averaged predictions, in the frame of ``x``.
    """
    if isinstance(views, str) and views not in VIEWS:
        raise ValueError(f"views must be one of {sorted(VIEWS)} or (k, flip) pairs; got {views!r}")
    chosen = VIEWS[views] if isinstance(views, str) else tuple(views)
    if any(k % 2 for k, _ in chosen) and x.shape[axes[0]] != x.shape[axes[1]]:
        raise ValueError(f"quarter turns need a square plane; axes {axes} of {x.shape} differ")
    total = None
    for view in chosen:
        out = np.asarray(predict(np.ascontiguousarray(apply_view(x, view, axes))))
        out = undo_view(out, view, axes) if dense else out
        total = out.astype(np.float64) if total is None else total + out
    return total / len(chosen)


def dihedral_patches(
    images: np.ndarray,
    masks: np.ndarray,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each in-plane patch and its mask under one of the 8 in-plane rotations and mirrorings.

    Training-time augmentation for the 2D/2.5D segmenter: draw it afresh every epoch, so the
    model sees every orientation of a nodule and of its surroundings. Exact: no resampling, the
    mask stays binary.

    Parameters
    ----------
    images : ndarray (n, h, w) or (n, h, w, channels)
        Patches, for example from :func:`lunglib.training.sampling.sample_patches`; with
        channels (2.5D context slices) every channel gets the same transform.
    masks : ndarray (n, h, w) or (n, h, w, 1)
        Their masks.
    rng : Generator or int, optional
        Random source.

    Returns
    -------
    images, masks : ndarray
        New arrays, same shapes and dtypes; patch ``i`` of both under the same transform.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim not in (3, 4) or masks.shape[:3] != images.shape[:3]:
        raise ValueError(
            f"images {images.shape} and masks {masks.shape}: expected (n, h, w[, channels]) "
            "patches with one (n, h, w[, 1]) mask each"
        )
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"patches {images.shape[1:3]} are not square: transposing needs h == w")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    flips = rng.random((3, len(images))) < 0.5  # transpose, flip y, flip x
    out = []
    for a in (images, masks):
        a = a.copy()
        a[flips[0]] = np.swapaxes(a[flips[0]], 1, 2)
        a[flips[1]] = a[flips[1], ::-1]
        a[flips[2]] = a[flips[2], :, ::-1]
        out.append(a)
    return out[0], out[1]


def dihedral_augment(x, y):
    """Random 90-degree rotation and left-right flip of one 2D ``(h, w, c)`` example (tf.data)."""
    import tensorflow as tf

    k = tf.random.uniform([], 0, 4, dtype=tf.int32)
    x = tf.image.rot90(x, k)
    return tf.image.random_flip_left_right(x), y


def flip_augment(x, y):
    """Random flips of both in-plane axes of one ``(..., h, w, c)`` example (2D or 3D; tf.data)."""
    import tensorflow as tf

    for axis in (-2, -3):
        x = tf.cond(tf.random.uniform([]) < 0.5, lambda x=x, a=axis: tf.reverse(x, [a]),
                    lambda x=x: x)
    return x, y
