"""A whole-scan cancer classifier trained on nodule cubes and hard negatives (notebook 04's recipe).

A whole scan is mostly healthy lung and its label hangs on a few voxels, so the classifier is
learned on small cubes: a ``padding="valid"`` patch CNN is trained on the cube around each
training patient's largest nodule (the patient's label) and on healthy-lung cubes (label 0), then
on the windows it finds most suspicious in the healthy training scans, and finally slid over the
whole scan (:func:`lunglib.models.convolutionalize`): the scan's score is its most suspicious
window. Importing this module is cheap; TensorFlow loads when the recipe runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

    from lunglib.preprocess import CacheIndex


def fit_scan_classifier(
    index: CacheIndex,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    cube: Sequence[int] = (10, 18, 18),
    hard_per_scan: int = 3,
    epochs: int = 20,
    patience: int = 6,
    batch_size: int = 8,
    seed: int = 42,
    augment: Callable | None | str = "flips",
    **build_kwargs,
) -> tuple[keras.Model, keras.Model]:
    """Train a whole-scan cancer classifier from nodule cubes, in one call.

    1. :func:`lunglib.training.nodule_cubes` of the training and validation patients;
    2. a ``padding="valid"`` patch CNN (:func:`lunglib.models.build_cnn`, two blocks by default)
       trained with flips (``augment``) and early stopping on the validation cubes;
    3. :func:`lunglib.training.hard_negatives` from the healthy training scans, then
       ``epochs // 2`` more epochs on the cubes and the hard negatives together;
    4. :func:`lunglib.models.convolutionalize` to the cached volume shape.

    Parameters
    ----------
    index : lunglib.preprocess.CacheIndex
        Prepared volumes with nodule masks.
    train_ids, val_ids : sequence of str
        Patients of the training and validation splits (the test split is never touched).
    cube : sequence of int
        Cube (and patch model input) size ``(z, y, x)``.
    hard_per_scan : int
        Hard negatives mined per healthy training scan; 0 skips the second round.
    epochs, patience, batch_size
        As in :func:`lunglib.training.train_model` (the second round runs ``epochs // 2``).
    seed : int
        Seeds the cubes, the weights and the shuffles (validation cubes use ``seed + 1``).
    augment : "flips", callable or None
        Augmentation of each training cube, as ``train_model``'s ``augment``: ``"flips"``
        (:func:`lunglib.augment.flip_augment`, random left-right and front-back flips), any
        ``(x, y) -> (x, y)`` function on one example, or None for none.
    **build_kwargs
        Overrides for :func:`lunglib.models.build_cnn` (defaults: 2 blocks, 8 filters, dense 16,
        dropout 0.3, L2 1e-4; ``padding`` is always ``"valid"`` so the model can be slid).

    Returns
    -------
    classifier, patch_model
        Whole scan in, probability out; and the cube model it was made from.
    """
    from lunglib.augment import flip_augment
    from lunglib.models import build_cnn, convolutionalize
    from lunglib.training import (
        cache_arrays,
        class_weights,
        hard_negatives,
        nodule_cubes,
        set_seed,
        train_model,
    )

    x_fit, y_fit, _ = nodule_cubes(index, train_ids, cube, seed=seed)
    val = nodule_cubes(index, val_ids, cube, seed=seed + 1)[:2]
    config = {"n_conv_layers": 2, "filters": 8, "dense_units": 16, "dropout": 0.3, "l2": 1e-4,
              **build_kwargs, "padding": "valid"}
    set_seed(seed)
    model = build_cnn(x_fit.shape[1:], **config)
    augment = flip_augment if augment == "flips" else augment
    fit = {"patience": patience, "batch_size": batch_size, "augment": augment, "seed": seed}
    train_model(model, (x_fit, y_fit), val, epochs=epochs, class_weight=class_weights(y_fit), **fit)
    volumes, labels = cache_arrays(index, list(train_ids))
    if hard_per_scan > 0 and (labels == 0).any():
        hard = hard_negatives(model, volumes[labels == 0], per_volume=hard_per_scan)
        x_fit = np.concatenate([x_fit, hard])
        y_fit = np.concatenate([y_fit, np.zeros(len(hard), np.int64)])
        train_model(model, (x_fit, y_fit), val, epochs=max(1, epochs // 2),
                    class_weight=class_weights(y_fit), **fit)
    return convolutionalize(model, volumes.shape[1:]), model
