"""Train a compiled Keras classifier with the course's safeguards against overfitting.

:func:`train_model` takes numpy arrays or ``tf.data`` datasets, augments the training split only
(when given an augmentation function), weights classes for imbalanced labels, stops early on the
validation split and restores the best weights, and writes a checkpoint, a CSV log and
(optionally) TensorBoard logs to ``output_dir``. Call :func:`set_seed` first for a reproducible
run.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from lunglib.augment.dihedral import flip_augment
from lunglib.datasets import PatchSet

Data = tf.data.Dataset | tuple[np.ndarray, np.ndarray]


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and TensorFlow; make TensorFlow ops deterministic where it can.

    ``deterministic=True`` calls ``tf.config.experimental.enable_op_determinism()``; ops without
    a deterministic implementation (a few GPU kernels) then raise instead of varying silently.
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def class_weights(labels: Sequence) -> dict[int, float]:
    """``{class: weight}`` inversely proportional to class frequency (sklearn's "balanced")."""
    y = np.asarray(labels).astype(int).ravel()
    classes = np.unique(y)
    weights = compute_class_weight("balanced", classes=classes, y=y)
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}


def cache_arrays(index, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stack cached volumes and labels: ``x`` (n, z, y, x, 1) float32, ``y`` (n,) int.

    For small cohorts and for keras-tuner, which takes arrays; training itself can stream from
    the cache with :func:`lunglib.training.inputs.make_dataset` instead.
    """
    labels = index.labels(ids)
    missing = [pid for pid in ids if pid not in labels]
    if missing:
        raise ValueError(f"{len(missing)} patient(s) have no label in {index.folder}, e.g. "
                         f"{missing[0]}; give a labels CSV or leave them out of the split")
    x = np.stack([index.load(pid)["image"].astype(np.float32) for pid in ids])[..., None]
    return x, np.array([labels[pid] for pid in ids], dtype=np.int64)


def training_arrays(source, size: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, groups)`` for a classifier from a cache or a nodule patch set.

    Parameters
    ----------
    source
        A :class:`lunglib.preprocess.CacheIndex` (one prepared volume and label per patient) or a
        :class:`lunglib.datasets.PatchSet` (LIDC format: benign <= 2 vs malignant >= 4, rating 3
        left out, patches made by :func:`patch_inputs` with the outline as second channel).
    size
        Patch input size (patch sets only).

    Returns
    -------
    x, y, groups
        Inputs, integer labels and the patient of every sample (split on ``groups``).
    """
    if isinstance(source, PatchSet):
        patches, y = source.binary_labels()
        groups = patches.patient_groups()  # raises for files without patient ids (MedMNIST)
        if patches.units != "HU" or patches.images.ndim != 3:
            raise ValueError(f"{patches.source}: expected 2D HU patches, got {patches.units} "
                             f"{patches.images.shape[1:]}")
        spacing = patches.extra.get("pixel_spacing_mm")
        x = patch_inputs(patches.images, patches.masks, spacing, size=size)
        return x, y.astype(np.int64), groups
    ids = list(source.labels())
    x, y = cache_arrays(source, ids)
    return x, y, np.asarray(ids)


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


class EpochAugmented(keras.utils.PyDataset):
    """Training batches from ``(x, y)`` arrays, shuffled and augmented afresh every epoch.

    For augmentations written in NumPy over whole arrays, such as
    :func:`lunglib.augment.dihedral_patches`, which turns image patches and their masks
    together. Give it to ``model.fit`` in place of the training arrays; validation data stays
    as it is.

    Parameters
    ----------
    x, y : ndarray
        Training inputs and targets, one row of ``y`` per row of ``x`` (for segmentation, a
        mask per patch).
    augment : callable
        ``augment(x, y, rng) -> (x, y)``: new arrays of the same shapes, row ``i`` of both
        under the same transform; ``rng`` is a ``numpy.random.Generator``.
    batch_size : int
        Examples per batch; the last batch of an epoch may be smaller.
    seed : int, optional
        Seeds the shuffle and the augmentation, so a seeded run draws the same epochs.

    Examples
    --------
    >>> from lunglib.augment import dihedral_patches
    >>> batches = EpochAugmented(x_train, y_train, dihedral_patches, seed=42)  # doctest: +SKIP
    >>> history = model.fit(batches, validation_data=(x_val, y_val), epochs=20)  # doctest: +SKIP
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        augment: Callable[..., tuple[np.ndarray, np.ndarray]],
        batch_size: int = 32,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} targets; give one per input")
        if x.shape[0] == 0:
            raise ValueError("no training examples: x and y are empty")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._x, self._y, self._augment = x, y, augment
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed)
        self._epoch: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return -(-self._x.shape[0] // self._batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        if self._epoch is None:  # Keras may read a batch before the first epoch begins
            self.on_epoch_begin()
        part = slice(index * self._batch_size, (index + 1) * self._batch_size)
        return self._epoch[0][part], self._epoch[1][part]

    def on_epoch_begin(self) -> None:
        """Draw this epoch's order and augmentation."""
        order = self._rng.permutation(self._x.shape[0])
        x, y = self._augment(self._x[order], self._y[order], self._rng)
        if x.shape != self._x.shape or y.shape != self._y.shape:
            raise ValueError(
                f"augment changed the shapes: {self._x.shape}, {self._y.shape} became "
                f"{x.shape}, {y.shape}; it must return arrays of the shapes it was given"
            )
        self._epoch = (np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32))


def _labels_of(dataset: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([np.asarray(y).ravel() for _, y in dataset.as_numpy_iterator()])


def to_dataset(
    data: Data,
    batch_size: int = 16,
    shuffle: bool = False,
    augment: Callable | None = None,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Arrays ``(x, y)`` to a batched, prefetched ``tf.data.Dataset``; datasets pass through.

    ``augment`` maps one ``(x, y)`` example to an augmented one; apply it to training data only.
    """
    if isinstance(data, tf.data.Dataset):
        return data
    x, y = data
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels; give one label per input")
    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    if augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _mode_for(monitor: str) -> str:
    return "max" if any(k in monitor for k in ("auc", "acc", "precision", "recall")) else "min"


def train_model(
    model: keras.Model,
    train_data: Data,
    val_data: Data,
    epochs: int = 20,
    patience: int = 5,
    output_dir: str | os.PathLike | None = None,
    class_weight: str | dict | None = "balanced",
    batch_size: int = 16,
    monitor: str = "val_loss",
    augment: Callable | None = None,
    tensorboard: bool = False,
    seed: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> keras.callbacks.History:
    """Fit ``model`` with early stopping on the validation split, restoring the best weights.

    Parameters
    ----------
    model
        A compiled model, e.g. from :func:`lunglib.models.cnn.build_cnn`.
    train_data, val_data
        ``(x, y)`` arrays or batched ``tf.data.Dataset`` of ``(x, y)``. Arrays are batched with
        ``batch_size``; the training arrays are shuffled (seeded) and augmented.
    epochs, patience
        At most ``epochs`` passes; stop after ``patience`` epochs without improvement of
        ``monitor`` (then the best epoch's weights are put back).
    output_dir
        Where ``best.keras`` (checkpoint), ``history.csv`` and ``tensorboard/`` go; None writes
        nothing.
    class_weight
        ``"balanced"`` (weights from the training labels), a ``{class: weight}`` dict or None.
    monitor
        Validation quantity for early stopping and checkpointing, e.g. ``"val_loss"`` or
        ``"val_auc"``.
    augment
        Function ``(x, y) -> (x, y)`` on single examples, applied to training arrays only.
    tensorboard
        Also write TensorBoard logs.
    seed
        Shuffle seed for training arrays.
    callbacks
        Extra Keras callbacks.

    Returns
    -------
    keras.callbacks.History
        ``history.history`` holds per-epoch metrics; the model holds the best weights.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if patience < 0:
        raise ValueError(f"patience must be >= 0, got {patience}")
    if isinstance(train_data, tf.data.Dataset) and augment is not None:
        raise ValueError(
            "augment applies to training arrays only; map it into your training dataset instead"
        )
    train_ds = to_dataset(train_data, batch_size, shuffle=True, augment=augment, seed=seed)
    val_ds = to_dataset(val_data, batch_size)

    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be 'balanced', a dict or None, got {class_weight}")
        y_train = train_data[1] if isinstance(train_data, tuple) else _labels_of(train_ds)
        class_weight = class_weights(y_train)

    cbs: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(
            monitor=monitor,
            mode=_mode_for(monitor),
            patience=patience,
            restore_best_weights=True,
        )
    ]
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        cbs.append(
            keras.callbacks.ModelCheckpoint(
                out / "best.keras", monitor=monitor, mode=_mode_for(monitor), save_best_only=True
            )
        )
        cbs.append(keras.callbacks.CSVLogger(str(out / "history.csv")))
        if tensorboard:
            cbs.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))
    cbs.extend(callbacks)
    return model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=cbs,
        shuffle=False,  # the training dataset is already shuffled (seeded) above
        verbose=verbose,
    )


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
    from lunglib.models.cnn import convolutionalize, output_stride

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


def predict_proba(model: keras.Model, data: Data, batch_size: int = 64) -> np.ndarray:
    """Predicted probability of the positive class (sigmoid) or of every class (softmax)."""
    ds = to_dataset(data, batch_size) if isinstance(data, tuple) else data
    if isinstance(data, np.ndarray):
        ds = tf.data.Dataset.from_tensor_slices(data.astype(np.float32)).batch(batch_size)
    p = model.predict(ds, verbose=0)
    return p[:, 0] if p.shape[-1] == 1 else p


def fit_scan_classifier(
    index,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    cube: Sequence[int] = (10, 18, 18),
    hard_per_scan: int = 3,
    epochs: int = 20,
    patience: int = 6,
    batch_size: int = 8,
    seed: int = 42,
    **build_kwargs,
) -> tuple[keras.Model, keras.Model]:
    """Notebook 04's recipe in one call: a whole-scan cancer classifier from nodule cubes.

    1. :func:`lunglib.training.inputs.nodule_cubes` of the training and validation patients;
    2. a ``padding="valid"`` patch CNN (:func:`lunglib.models.cnn.build_cnn`, two blocks by default)
       trained with flips and early stopping on the validation cubes;
    3. :func:`hard_negatives` from the healthy training scans, then ``epochs // 2`` more epochs;
    4. :func:`lunglib.models.cnn.convolutionalize` to the cached volume shape.

    Parameters
    ----------
    index : lunglib.preprocess.cache.CacheIndex
        Prepared volumes with nodule masks.
    train_ids, val_ids : sequence of str
        Patients of the training and validation splits (the test split is never touched).
    cube, hard_per_scan, epochs, patience, batch_size, seed
        As in notebook 04's parameters.
    **build_kwargs
        Overrides for :func:`lunglib.models.cnn.build_cnn` (defaults: 2 blocks, 8 filters, dense 16,
        dropout 0.3, L2 1e-4).

    Returns
    -------
    classifier, patch_model
        Whole scan in, probability out; and the cube model it was made from.
    """
    from lunglib.models.cnn import build_cnn, convolutionalize
    from lunglib.training.inputs import nodule_cubes

    x_fit, y_fit, _ = nodule_cubes(index, train_ids, cube, seed=seed)
    val = nodule_cubes(index, val_ids, cube, seed=seed + 1)[:2]
    config = {"n_conv_layers": 2, "filters": 8, "dense_units": 16, "dropout": 0.3, "l2": 1e-4,
              **build_kwargs, "padding": "valid"}
    set_seed(seed)
    model = build_cnn(x_fit.shape[1:], **config)
    fit = {"patience": patience, "batch_size": batch_size, "augment": flip_augment, "seed": seed}
    train_model(model, (x_fit, y_fit), val, epochs=epochs, class_weight=class_weights(y_fit), **fit)
    volumes, labels = cache_arrays(index, list(train_ids))
    if hard_per_scan > 0 and (labels == 0).any():
        hard = hard_negatives(model, volumes[labels == 0], per_volume=hard_per_scan)
        x_fit = np.concatenate([x_fit, hard])
        y_fit = np.concatenate([y_fit, np.zeros(len(hard), np.int64)])
        train_model(model, (x_fit, y_fit), val, epochs=max(1, epochs // 2),
                    class_weight=class_weights(y_fit), **fit)
    return convolutionalize(model, volumes.shape[1:]), model
