"""Grad-CAM: where in the volume did the CNN look when it called a scan cancer?

Selvaraju et al. (2017): the gradient of the class score with respect to the last convolution
layer's feature maps, averaged over space, weights those maps; their weighted sum, passed through
a ReLU and upsampled to the input size, is the heat map. Works for the 2D and 3D models of
:func:`lunglib.models.cnn.build_cnn` and for any Keras model with a convolution layer.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def last_conv_layer(model) -> str:
    """Name of the last convolution layer of a Keras model.

    Fully connected layers that :func:`lunglib.models.cnn.convolutionalize` turned into convolutions
    (names ending in ``_as_conv``) hold no image features and are skipped.
    """
    import keras

    convs = [layer for layer in model.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D))
             and not layer.name.endswith("_as_conv")]
    if not convs:
        raise ValueError(f"model {model.name!r} has no Conv2D/Conv3D layer for Grad-CAM")
    return convs[-1].name


def grad_cam(model, image: np.ndarray, layer_name: str | None = None,
             class_index: int = 0) -> np.ndarray:
    """Grad-CAM heat map for one input.

    Parameters
    ----------
    model : keras.Model
        A trained classifier with a convolution layer.
    image : ndarray
        One input without the batch axis, shaped like ``model.input_shape[1:]`` (a trailing
        channel axis may be left out).
    layer_name : str, optional
        The convolution layer to explain; default the last one.
    class_index : int, default 0
        Output unit to explain (0 for a sigmoid output: the cancer probability).

    Returns
    -------
    ndarray
        The heat map in [0, 1], shaped like the image's spatial axes.
    """
    import keras
    import tensorflow as tf

    expected = tuple(model.input_shape[1:])
    x = np.asarray(image, dtype=np.float32)
    if x.shape == expected[:-1]:
        x = x[..., None]
    if x.shape != expected:
        raise ValueError(f"image shape {image.shape} does not fit the model input {expected}")
    layer = model.get_layer(layer_name or last_conv_layer(model))
    probe = keras.Model(model.inputs[0], [layer.output, model.outputs[0]])
    with tf.GradientTape() as tape:
        features, output = probe(x[None], training=False)
        score = output[:, class_index]
    grads = tape.gradient(score, features)
    spatial_axes = tuple(range(1, len(features.shape) - 1))
    weights = tf.reduce_mean(grads, axis=spatial_axes, keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[0].numpy()
    factors = [s / c for s, c in zip(x.shape[:-1], cam.shape, strict=True)]
    cam = ndimage.zoom(cam, factors, order=1)
    peak = cam.max()
    return (cam / peak).astype(np.float32) if peak > 0 else np.zeros_like(cam, np.float32)
