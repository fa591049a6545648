"""Data augmentation for 3-D (and 2-D) volumes: rotation, flipping, scaling, translation.

Every transform is an affine map of the voxel grid. :class:`Compose` multiplies the sampled
matrices and resamples **once** with :func:`scipy.ndimage.affine_transform` -- linear
interpolation for the image, nearest neighbour for the mask -- so the image and its mask always
move together and the image is blurred by one interpolation, not four.

Ranges are explicit and every random draw comes from a seeded :class:`numpy.random.Generator`,
so a run repeats exactly. Augmentation belongs to the training split only:
:func:`lunglib.training.make_dataset` refuses it for validation and test data.

Inside ``tf.data``, :func:`tf_augment` wraps a transform with ``tf.numpy_function`` so that it
runs in a parallel ``map``; TensorFlow is imported only when that function is called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_pair(image: np.ndarray, mask: np.ndarray | None) -> None:
    if image.ndim not in (2, 3):
        raise ValueError(
            f"augmentation works on 2-D (y, x) or 3-D (z, y, x) arrays, got shape {image.shape}; "
            "drop the channel axis first"
        )
    if mask is not None and mask.shape != image.shape:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {image.shape}")


class Transform:
    """A random affine transform: :meth:`matrix` draws one ``(ndim+1, ndim+1)`` matrix in
    centred voxel coordinates (output position -> input position)."""

    def matrix(self, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return Compose([self])(image, mask, rng)


@dataclass
class RandomRotate(Transform):
    """Rotate by an angle drawn uniformly from ``[-max_degrees, max_degrees]``.

    In 3-D the rotation is in the ``plane`` given by two axes (default ``(1, 2)``: the axial
    plane, around the body axis -- slices are thicker than pixels, so tilting out of plane
    smears them).
    """

    max_degrees: float = 15.0
    plane: tuple[int, int] = (1, 2)

    def matrix(self, shape, rng):
        ndim = len(shape)
        angle = np.deg2rad(rng.uniform(-self.max_degrees, self.max_degrees))
        a, b = self.plane if ndim == 3 else (0, 1)
        m = np.eye(ndim + 1)
        cos, sin = np.cos(angle), np.sin(angle)
        m[a, a], m[a, b], m[b, a], m[b, b] = cos, -sin, sin, cos
        return m


@dataclass
class RandomFlip(Transform):
    """Mirror each axis in ``axes`` with probability ``p`` (default: left-right, the x axis)."""

    axes: tuple[int, ...] = (-1,)
    p: float = 0.5

    def matrix(self, shape, rng):
        ndim = len(shape)
        m = np.eye(ndim + 1)
        for axis in self.axes:
            if rng.random() < self.p:
                m[axis % ndim, axis % ndim] = -1.0
        return m


@dataclass
class RandomScale(Transform):
    """Zoom by a factor drawn uniformly from ``scale_range`` (the same on every axis in
    ``axes``, default the in-plane axes y and x; >1 enlarges the anatomy)."""

    scale_range: tuple[float, float] = (0.9, 1.1)
    axes: tuple[int, ...] = (-2, -1)

    def matrix(self, shape, rng):
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(
                f"scale_range must be (lo, hi) with 0 < lo <= hi, got {self.scale_range}"
            )
        factor = rng.uniform(lo, hi)
        ndim = len(shape)
        m = np.eye(ndim + 1)
        for axis in self.axes:
            m[axis % ndim, axis % ndim] = 1.0 / factor
        return m


@dataclass
class RandomTranslate(Transform):
    """Shift by up to ``max_shift`` voxels per axis (uniform in ``[-s, s]``; one value per axis,
    or one for all). Default: 4 voxels in-plane, none across slices (for 3-D)."""

    max_shift: float | tuple[float, ...] = (0.0, 4.0, 4.0)

    def matrix(self, shape, rng):
        ndim = len(shape)
        shift = np.broadcast_to(np.asarray(self.max_shift, dtype=float), (ndim,)) if np.ndim(
            self.max_shift) == 0 else np.asarray(self.max_shift, dtype=float)[-ndim:]
        m = np.eye(ndim + 1)
        m[:ndim, ndim] = rng.uniform(-shift, shift)
        return m


@dataclass
class Compose(Transform):
    """Apply several transforms as one resampling (their matrices multiplied).

    Parameters
    ----------
    transforms : list of Transform
    image_fill : float, default 0.0
        Value outside the original field of view (0 = air after :func:`lunglib.preprocess.window`).
    """

    transforms: list[Transform] = field(default_factory=list)
    image_fill: float = 0.0

    def matrix(self, shape, rng):
        m = np.eye(len(shape) + 1)
        for t in self.transforms:
            m = m @ t.matrix(shape, rng)
        return m

    def __call__(self, image, mask=None, rng=None):
        image = np.asarray(image)
        mask = None if mask is None else np.asarray(mask)
        _check_pair(image, mask)
        rng = _rng(rng)
        ndim = image.ndim
        m = self.matrix(image.shape, rng)
        centre = (np.asarray(image.shape) - 1) / 2.0
        # m maps centred output coordinates to centred input coordinates.
        linear = m[:ndim, :ndim]
        offset = centre + m[:ndim, ndim] - linear @ centre
        out = ndimage.affine_transform(
            image.astype(np.float32, copy=False), linear, offset, order=1, mode="constant",
            cval=self.image_fill,
        )
        out_mask = None
        if mask is not None:
            out_mask = ndimage.affine_transform(
                mask, linear, offset, order=0, mode="constant", cval=0
            ).astype(mask.dtype, copy=False)
        return out, out_mask


def default_augmentation(
    max_degrees: float = 10.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    max_shift: float | tuple[float, ...] = (0.0, 4.0, 4.0),
    flip: bool = True,
) -> Compose:
    """The course's augmentation: small axial rotation, zoom, shift and a left-right flip."""
    steps: list[Transform] = [RandomRotate(max_degrees), RandomScale(scale_range),
                              RandomTranslate(max_shift)]
    if flip:
        steps.append(RandomFlip())
    return Compose(steps)


def random_rotate(image, mask=None, max_degrees=15.0, rng=None):
    """Rotate image and mask together (see :class:`RandomRotate`)."""
    return RandomRotate(max_degrees)(image, mask, rng)


def random_flip(image, mask=None, axes=(-1,), p=0.5, rng=None):
    """Flip image and mask together (see :class:`RandomFlip`)."""
    return RandomFlip(tuple(axes), p)(image, mask, rng)


def random_scale(image, mask=None, scale_range=(0.9, 1.1), rng=None):
    """Zoom image and mask together (see :class:`RandomScale`)."""
    return RandomScale(tuple(scale_range))(image, mask, rng)


def random_translate(image, mask=None, max_shift=4.0, rng=None):
    """Shift image and mask together (see :class:`RandomTranslate`)."""
    return RandomTranslate(max_shift)(image, mask, rng)


def tf_augment(image, mask, transform: Transform, seed):
    """Apply ``transform`` inside a ``tf.data`` pipeline (``map(..., num_parallel_calls=...)``).

    Parameters
    ----------
    image, mask : tf.Tensor
        ``(..., 1)`` channel-last tensors of the same spatial shape; ``mask`` may be a dummy of
        the image's shape when only the image matters.
    transform : Transform
    seed : tf.Tensor of int64
        A per-element seed (e.g. from ``tf.data.Dataset.random(seed)``) so runs repeat even
        with parallel calls.

    Returns
    -------
    (tf.Tensor, tf.Tensor)
        Augmented image (float32) and mask (mask dtype), shapes unchanged.
    """
    import tensorflow as tf

    def _apply(img, msk, s):
        out, out_mask = transform(img[..., 0], msk[..., 0], np.random.default_rng(int(s) % 2**63))
        return out[..., None].astype(np.float32), out_mask[..., None]

    out, out_mask = tf.numpy_function(_apply, [image, mask, seed], [tf.float32, mask.dtype],
                                      stateful=False)
    out.set_shape(image.shape)
    out_mask.set_shape(mask.shape)
    return out, out_mask
