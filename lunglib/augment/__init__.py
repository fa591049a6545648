"""Augmentation: random rotation, flipping, scaling and translation of images and their masks,
and the eight exact in-plane orientations for training and test-time augmentation.

:mod:`~lunglib.augment.transforms` -- every transform takes an image (and optionally its mask)
and a random generator, so the same draw moves an image and its outline together.
:mod:`~lunglib.augment.dihedral` -- exact rotations by 90 degrees and mirrorings: random ones
for training (NumPy and ``tf.data``) and :func:`predict_tta` to average a model over them.
"""

from lunglib.augment.dihedral import (
    VIEWS,
    apply_view,
    dihedral_augment,
    dihedral_patches,
    flip_augment,
    predict_tta,
    undo_view,
)
from lunglib.augment.transforms import (
    Compose,
    RandomFlip,
    RandomRotate,
    RandomScale,
    RandomTranslate,
    Transform,
    default_augmentation,
    random_flip,
    random_rotate,
    random_scale,
    random_translate,
    tf_augment,
)

__all__ = [
    "VIEWS",
    "apply_view",
    "dihedral_augment",
    "dihedral_patches",
    "flip_augment",
    "predict_tta",
    "undo_view",
    "Compose",
    "RandomFlip",
    "RandomRotate",
    "RandomScale",
    "RandomTranslate",
    "Transform",
    "default_augmentation",
    "random_flip",
    "random_rotate",
    "random_scale",
    "random_translate",
    "tf_augment",
]
