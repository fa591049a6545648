"""Hard-negative mining: the windows a patch classifier finds most suspicious in healthy scans.

:func:`hard_negatives` slides a patch model over label-0 training volumes -- by its
convolutionalized map where the strides allow, window by window otherwise -- and keeps each
volume's highest-scoring windows, to be added to the training data with label 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import keras
import numpy as np

from lunglib.models import convolutionalize, output_stride
from lunglib.training.fit import predict_proba


def hard_negatives(
    model: keras.Model,
    volumes: np.ndarray,
    per_volume: int = 3,
    stride: Sequence[int] = (2, 4, 4),
) -> np.ndarray:
    """The windows a patch classifier finds most suspicious in volumes known to be healthy.

    Random negatives are mostly easy (plain lung). Sliding the patch model over scans of
    patients **without** cancer and keeping its highest-scoring windows collects the look-alikes
    it still confuses (vessel branchings, benign nodules, the hilum): "hard negative mining".
    Training on them as well sharpens the model where the whole-scan maximum is decided.

    Parameters
    ----------
    model : keras.Model
        A patch classifier whose input shape sets the window size, e.g. ``(10, 18, 18, 1)``.
    volumes : ndarray
        ``(n, z, y, x, 1)`` volumes of label-0 patients from the **training** split only.
    per_volume : int
        Windows kept per volume.
    stride : sequence of int
        Step between windows along ``(z, y, x)``.

    Returns
    -------
    ndarray
        ``(n * per_volume, *window, 1)`` float32 windows, to be labelled 0.
    """
    window = tuple(int(s) for s in model.input_shape[1:-1])
    volumes = np.asarray(volumes, dtype=np.float32)
    if volumes.ndim != len(window) + 2:
        raise ValueError(f"volumes {volumes.shape} must be (n, *spatial, 1) for windows {window}")
    if len(stride) != len(window) or min(stride) < 1:
        raise ValueError(f"stride {tuple(stride)} must give {len(window)} steps >= 1")
    if per_volume < 1:
        raise ValueError(f"per_volume must be >= 1, got {per_volume}")
    scores, origins = _window_scores(model, volumes, tuple(int(s) for s in stride))
    picked = []
    for volume, volume_scores in zip(volumes, scores, strict=True):
        for k in np.argsort(volume_scores, kind="stable")[-per_volume:]:
            corner = origins[k]
            picked.append(volume[tuple(slice(c, c + w) for c, w in zip(corner, window,
                                                                        strict=True))])
    return np.stack(picked).astype(np.float32)


def _window_scores(
    model: keras.Model, volumes: np.ndarray, stride: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The patch model's score of every window at ``stride`` in each volume.

    Returns ``(n_volumes, n_windows)`` scores and the windows' ``(n_windows, ndim)`` corners.
    Where ``stride`` divides the model's own output stride the convolutionalized model scores
    whole volumes at once (one pass per offset); otherwise each window is cut and scored.
    """
    window = tuple(int(s) for s in model.input_shape[1:-1])
    positions = [np.arange(0, n - w + 1, s)
                 for n, w, s in zip(volumes.shape[1:-1], window, stride, strict=True)]
    origins = np.stack(np.meshgrid(*positions, indexing="ij"), axis=-1).reshape(-1, len(window))
    net = output_stride(model)
    slidable = (
        "flatten" in {layer.name for layer in model.layers}
        and model.output_shape[-1] == 1
        and all(getattr(layer, "padding", "valid") == "valid" for layer in model.layers)
    )
    if not slidable or any(n % s for n, s in zip(net, stride, strict=True)):
        from numpy.lib.stride_tricks import sliding_window_view

        scores = []
        for volume in volumes:
            views = sliding_window_view(volume[..., 0], window)
            views = views[tuple(slice(None, None, s) for s in stride)].reshape(-1, *window)
            scores.append(predict_proba(model, views[..., None], batch_size=256))
        return np.stack(scores), origins
    # Window j along an axis starts at j * stride; the map of the volume cut at `offset` holds
    # the windows starting at offset + i * net, i.e. j = offset / stride + i * net / stride.
    grid = np.full((len(volumes), *(len(p) for p in positions)), np.nan, np.float32)
    for offset in itertools.product(*(range(0, n, s) for n, s in zip(net, stride, strict=True))):
        if any(o + w > n for o, w, n in zip(offset, window, volumes.shape[1:-1], strict=True)):
            continue
        part = volumes[(slice(None), *(slice(o, None) for o in offset))]
        maps = convolutionalize(model, part.shape[1:], reduce="none").predict(
            part, batch_size=8, verbose=0)[..., 0]
        target = (slice(None), *(slice(o // s, None, n // s)
                                 for o, s, n in zip(offset, stride, net, strict=True)))
        if grid[target].shape != maps.shape:  # cannot happen with valid padding; a guard
            raise RuntimeError(f"map {maps.shape} does not match windows {grid[target].shape}")
        grid[target] = maps
    if np.isnan(grid).any():
        raise RuntimeError(f"{int(np.isnan(grid).sum())} windows were not scored by the map")
    return grid.reshape(len(volumes), -1), origins
