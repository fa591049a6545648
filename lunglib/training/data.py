"""Data for a model: arrays and ``tf.data`` datasets from the prepared-volume cache.

* arrays for small cohorts and keras-tuner: :func:`cache_arrays` (whole volumes),
  :func:`training_arrays` (a cache or a 2D nodule patch set), :func:`nodule_cubes` (small cubes
  around nodules and in healthy lung);
* streaming: :func:`make_dataset` reads ``<id>.npz`` files from a
  :class:`lunglib.preprocess.CacheIndex` as it goes (never every volume in memory), augments the
  training split only in a parallel ``map``, batches and prefetches;
* arrays to batches: :func:`to_dataset` (a batched ``tf.data.Dataset``) and
  :class:`EpochAugmented` (batches augmented afresh every epoch by a NumPy function).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from lunglib.augment import Transform, tf_augment
from lunglib.datasets import PatchSet
from lunglib.preprocess import CacheIndex, extract_patch
from lunglib.training.patches import patch_inputs

Data = tf.data.Dataset | tuple[np.ndarray, np.ndarray]
"""Model data: ``(x, y)`` arrays or a batched ``tf.data.Dataset`` of ``(x, y)``."""

TARGETS = ("label", "nodule_mask", "lung_mask")
SPLITS = ("train", "val", "test")


def cache_arrays(index, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stack cached volumes and labels: ``x`` (n, z, y, x, 1) float32, ``y`` (n,) int.

    For small cohorts and for keras-tuner, which takes arrays; training itself can stream from
    the cache with :func:`make_dataset` instead.
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
        left out, patches made by :func:`~lunglib.training.patches.patch_inputs` with the
        outline as second channel).
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


def nodule_cubes(
    index: CacheIndex,
    ids: Sequence[str],
    shape: Sequence[int] = (8, 16, 16),
    n_negatives: int = 3,
    jitter: int = 2,
    seed: int = 42,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Small training cubes cut from cached volumes that carry nodule masks.

    A whole scan is mostly healthy lung; its label hangs on a few voxels. Cubes make the
    search small: per patient, the cube around its **largest nodule** (plus one copy shifted by
    up to ``jitter`` voxels) takes the patient's label -- in a cancer patient the largest nodule
    is the suspicious one, in a healthy one it is a benign look-alike -- and ``n_negatives``
    cubes centred on lung voxels at least four voxels away from every nodule are labelled 0.
    A model trained on them is slid over whole scans with
    :func:`lunglib.models.convolutionalize`.

    Parameters
    ----------
    index : CacheIndex
        Prepared volumes with ``nodule_mask`` (synthetic, LIDC-IDRI, LUNA16 caches).
    ids : sequence of str
        The patients to cut from (one split: cubes never mix splits).
    shape : sequence of int
        Cube size ``(z, y, x)``.
    n_negatives : int
        Lung cubes away from nodules per patient.
    jitter : int
        Largest shift, in voxels, of the second positive cube.
    seed : int
        Seeds the random centres.

    Returns
    -------
    x, y, groups
        Cubes ``(n, z, y, x, 1)`` float32, labels ``(n,)`` int64, and each cube's patient.
    """
    from scipy import ndimage

    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes (z, y, x), got {shape}")
    if n_negatives < 0 or jitter < 0:
        raise ValueError(f"n_negatives and jitter must be >= 0, got {n_negatives}, {jitter}")
    rng = np.random.default_rng(seed)
    labels = index.labels(ids)
    cubes: list[np.ndarray] = []
    targets: list[int] = []
    groups: list[str] = []
    for pid in ids:
        if pid not in labels:
            raise ValueError(f"patient {pid} has no label in {index.folder}")
        arrays = index.load(pid)
        if "nodule_mask" not in arrays:
            raise ValueError(
                f"{index.folder}/{pid}.npz has no nodule_mask: nodule cubes need a dataset with "
                "nodule outlines (synthetic, lidc, luna16); train on whole volumes instead"
            )
        image = arrays["image"].astype(np.float32)
        nodules = arrays["nodule_mask"] > 0
        picked: list[np.ndarray] = []
        if nodules.any():
            components, n = ndimage.label(nodules)
            sizes = ndimage.sum_labels(nodules, components, index=np.arange(1, n + 1))
            largest = components == 1 + int(np.argmax(sizes))
            centre = np.round(ndimage.center_of_mass(largest)).astype(int)
            shifted = centre + rng.integers(-jitter, jitter + 1, size=3)
            picked += [centre, shifted]
            targets += [int(labels[pid])] * 2
        lung = arrays["lung_mask"] > 0
        away = lung & ~ndimage.binary_dilation(nodules, iterations=4)
        candidates = np.argwhere(away if away.any() else np.ones_like(lung))
        chosen = rng.choice(len(candidates), size=n_negatives,
                            replace=len(candidates) < n_negatives)
        picked += list(candidates[chosen])
        targets += [0] * n_negatives
        cubes += [extract_patch(image, c, shape, fill=0.0) for c in picked]  # outside: air
        groups += [pid] * len(picked)
    x = np.stack(cubes)[..., None].astype(np.float32)
    return x, np.asarray(targets, dtype=np.int64), np.asarray(groups)


def make_dataset(
    index: CacheIndex,
    ids: Sequence[str],
    split: str,
    batch_size: int = 4,
    target: str = "label",
    augment: Transform | None = None,
    shuffle: bool | None = None,
    seed: int = 42,
    mean: float | None = None,
    repeat: bool = False,
):
    """A ``tf.data.Dataset`` of ``(image, target)`` batches read from the cache.

    Parameters
    ----------
    index : CacheIndex
        From :func:`lunglib.preprocess.cache_dataset`.
    ids : sequence of str
        The patients of this split.
    split : {"train", "val", "test"}
        Augmentation is allowed for ``train`` only -- validation and test data must look like
        real data.
    batch_size : int, default 4
    target : {"label", "nodule_mask", "lung_mask"}
        ``label``: the patient label as float32 (classification); a mask: ``(z, y, x, 1)``
        float32 with 1 inside any nodule / the lungs (segmentation).
    augment : Transform, optional
        E.g. :func:`lunglib.augment.default_augmentation`; applied to image and mask together.
    shuffle : bool, optional
        Default: True for ``train``, False otherwise.
    seed : int, default 42
        Seeds the shuffle and the per-volume augmentation draws.
    mean : float, optional
        Training-split mean from :func:`lunglib.preprocess.fit_zero_center`, subtracted.
    repeat : bool, default False

    Returns
    -------
    tf.data.Dataset
        Elements ``(image, target)`` with ``image`` of shape ``(batch, z, y, x, 1)``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if augment is not None and split != "train":
        raise ValueError(
            f"augmentation is for the training split only; got augment=... with split={split!r}. "
            "Validation and test data must not be augmented"
        )
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    ids = list(ids)
    missing = [pid for pid in ids if pid not in set(index.ids)]
    if missing:
        raise ValueError(f"{len(missing)} id(s) are not in the cache {index.folder}: {missing[:5]}")
    if not ids:
        raise ValueError("make_dataset needs at least one patient id")
    first = index.load(ids[0])
    shape = first["image"].shape
    if target == "nodule_mask" and "nodule_mask" not in first:
        raise ValueError(f"the cache {index.folder} has no nodule masks (dataset without them)")
    shuffle = split == "train" if shuffle is None else shuffle

    paths = [str(index.path(pid)) for pid in ids]
    labels = index.labels(ids)

    def _load(path: bytes):
        with np.load(path.decode()) as data:
            image = data["image"].astype(np.float32)
            if mean is not None:
                image = image - np.float32(mean)
            if target == "label":
                mask = np.zeros(shape, np.float32)
                y = np.float32(max(int(data["label"]), 0))
            else:
                mask = (data[target] > 0).astype(np.float32)
                y = np.float32(0)
        return image[..., None], mask[..., None], y

    def _read(path):
        image, mask, y = tf.numpy_function(_load, [path], [tf.float32, tf.float32, tf.float32],
                                           stateful=False)
        image.set_shape((*shape, 1))
        mask.set_shape((*shape, 1))
        y.set_shape(())
        return image, mask, y

    unlabeled = [pid for pid in ids if pid not in labels]
    if target == "label" and unlabeled:
        raise ValueError(f"{len(unlabeled)} patient(s) have no label: {unlabeled[:5]}")

    ds = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(_read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment is not None:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda el, s: (*tf_augment(el[0], el[1], augment, s), el[2]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )
    if target == "label":
        ds = ds.map(lambda image, mask, y: (image, y))
    else:
        ds = ds.map(lambda image, mask, y: (image, mask))
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
