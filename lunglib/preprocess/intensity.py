"""Intensities for the network: a HU window scaled to [0, 1], and zero-centring.

The zero-centring mean is fitted on the training split only (:func:`fit_zero_center`), so that
validation and test volumes never shape the input the model is trained on.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def window(hu: np.ndarray, lo: float = -1000.0, hi: float = 400.0) -> np.ndarray:
    """Clip to ``[lo, hi]`` HU and scale linearly to [0, 1] (float32)."""
    if not lo < hi:
        raise ValueError(f"window needs lo < hi, got lo={lo}, hi={hi}")
    out = (np.asarray(hu, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def window_channels(hu: np.ndarray, windows) -> np.ndarray:
    """One channel per HU window: ``hu`` (any shape) -> ``(*hu.shape, len(windows))`` in [0, 1].

    Each channel is :func:`window` with one ``(lo, hi)`` of ``windows``; a model that sees the
    lung and the soft-tissue window at once keeps the contrast of both.
    """
    return np.stack([window(hu, lo, hi) for lo, hi in windows], axis=-1)


def fit_zero_center(*, train: Iterable[np.ndarray]) -> float:
    """Mean intensity of the **training** volumes, for :func:`zero_center`.

    The argument is keyword-only and called ``train`` on purpose: the mean must never see
    validation or test volumes, or their information leaks into the model. Volumes are read one
    at a time (a running sum), so a generator over a cache keeps memory flat.
    """
    total, count = 0.0, 0
    for volume in train:
        arr = np.asarray(volume, dtype=np.float64)
        total += float(arr.sum())
        count += arr.size
    if count == 0:
        raise ValueError("fit_zero_center(train=...) got no training volumes")
    return total / count


def zero_center(images: np.ndarray, mean: float) -> np.ndarray:
    """Subtract the training-split mean from :func:`fit_zero_center` (float32)."""
    return (np.asarray(images, dtype=np.float32) - np.float32(mean)).astype(np.float32)
