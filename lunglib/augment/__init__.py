"""Augmentation: random rotation, flipping, scaling and translation of images and their masks.

Every transform takes an image (and optionally its mask) and a random generator, so the same
draw moves an image and its outline together.
"""

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
