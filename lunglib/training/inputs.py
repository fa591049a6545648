"""The ``tf.data`` input pipeline: prepared volumes streamed from the cache, one file at a time.

Training never needs every volume in memory: the pipeline reads ``<id>.npz`` files from a
:class:`lunglib.preprocess.CacheIndex` as it goes, optionally augments them in a parallel ``map``
(training split only), batches and prefetches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lunglib.augment.transforms import Transform, tf_augment
from lunglib.preprocess.cache import CacheIndex
from lunglib.preprocess.steps import extract_patch

TARGETS = ("label", "nodule_mask", "lung_mask")
SPLITS = ("train", "val", "test")


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
        From :func:`lunglib.preprocess.cache.cache_dataset`.
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
        Training-split mean from :func:`lunglib.preprocess.steps.fit_zero_center`, subtracted.
    repeat : bool, default False

    Returns
    -------
    tf.data.Dataset
        Elements ``(image, target)`` with ``image`` of shape ``(batch, z, y, x, 1)``.
    """
    import tensorflow as tf

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
    :func:`lunglib.models.cnn.convolutionalize`.

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
