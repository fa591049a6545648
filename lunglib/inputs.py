"""The ``tf.data`` input pipeline: prepared volumes streamed from the cache, one file at a time.

Training never needs every volume in memory: the pipeline reads ``<id>.npz`` files from a
:class:`lunglib.cache.CacheIndex` as it goes, optionally augments them in a parallel ``map``
(training split only), batches and prefetches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lunglib.augment import Transform, tf_augment
from lunglib.cache import CacheIndex

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
        From :func:`lunglib.cache.cache_dataset`.
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
