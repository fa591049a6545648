"""U-Net for nodule segmentation, 2D or 3D, with a Dice + binary cross-entropy loss.

``build_unet`` returns a compiled Keras model; it is 2D when ``input_shape`` has three entries
(height, width, channels) and 3D when it has four (depth, height, width, channels). The metrics
here are Keras tensors-in, tensor-out functions for training; for evaluation on numpy masks
(per case, with the Hausdorff distance) use :mod:`lunglib.evaluation`, which needs no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

_SMOOTH = 1.0


@keras.saving.register_keras_serializable(package="lunglib")
def dice_bce_loss(y_true, y_pred, smooth: float = _SMOOTH):
    """Binary cross-entropy plus ``1 - soft Dice`` of each sample (Keras averages the batch).

    The per-sample soft Dice uses additive smoothing ``smooth`` so that a patch with no nodule
    and no predicted foreground scores 1 (no loss) instead of 0/0. One value per sample, not a
    batch mean, so that Keras reduces it -- under a ``tf.distribute`` strategy it then divides by
    the global batch, where a pre-averaged scalar would be summed over the replicas.
    """
    y_true = ops.cast(y_true, y_pred.dtype)
    axes = tuple(range(1, len(y_pred.shape)))
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=axes[:-1])
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    soft_dice = (2.0 * intersection + smooth) / (total + smooth)
    return bce + 1.0 - soft_dice


def _hard_overlap(y_true, y_pred, threshold: float):
    y_true = ops.cast(ops.cast(y_true, "float32") > 0.5, "float32")
    y_pred = ops.cast(y_pred > threshold, "float32")
    intersection = ops.sum(y_true * y_pred)
    return intersection, ops.sum(y_true), ops.sum(y_pred)


@keras.saving.register_keras_serializable(package="lunglib")
def dice_coef(y_true, y_pred, threshold: float = 0.5):
    """Dice of the thresholded prediction over the whole batch (1 when both are empty)."""
    intersection, n_true, n_pred = _hard_overlap(y_true, y_pred, threshold)
    return (2.0 * intersection + 1e-6) / (n_true + n_pred + 1e-6)


@keras.saving.register_keras_serializable(package="lunglib")
def iou_coef(y_true, y_pred, threshold: float = 0.5):
    """Intersection over union of the thresholded prediction over the whole batch."""
    intersection, n_true, n_pred = _hard_overlap(y_true, y_pred, threshold)
    return (intersection + 1e-6) / (n_true + n_pred - intersection + 1e-6)


def _conv_block(x, filters: int, conv, batch_norm: bool, dropout: float, name: str):
    for i in (1, 2):
        x = conv(filters, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        if i == 1 and dropout > 0:
            x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def build_unet(
    input_shape: Sequence[int],
    depth: int = 3,
    filters: int = 16,
    dropout: float = 0.1,
    batch_norm: bool = True,
    learning_rate: float = 1e-3,
) -> keras.Model:
    """A compiled U-Net that maps an image to a per-voxel nodule probability.

    Parameters
    ----------
    input_shape : sequence of int
        ``(height, width, channels)`` for a 2D model or ``(depth, height, width, channels)`` for
        a 3D one. Every spatial size must be divisible by ``2 ** depth``.
    depth : int, default 3
        Number of down-sampling steps (max-pooling by 2).
    filters : int, default 16
        Filters of the first level; each level down doubles them.
    dropout : float, default 0.1
        Dropout rate after the first convolution of each block, in [0, 1).
    batch_norm : bool, default True
        Batch normalisation after each convolution.
    learning_rate : float, default 1e-3
        Adam learning rate.

    Returns
    -------
    keras.Model
        Output shape ``(*spatial, 1)``, sigmoid; compiled with :func:`dice_bce_loss` and the
        ``dice`` and ``iou`` metrics.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (3, 4):
        raise ValueError(
            f"input_shape {input_shape} must be (height, width, channels) for 2D or "
            "(depth, height, width, channels) for 3D"
        )
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    if filters < 1:
        raise ValueError(f"filters must be >= 1, got {filters}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    spatial = input_shape[:-1]
    factor = 2**depth
    bad = [s for s in spatial if s % factor]
    if bad:
        fixes = ", ".join(f"{s} -> {s - s % factor} or {s - s % factor + factor}" for s in bad)
        raise ValueError(
            f"spatial size(s) {bad} of input_shape {input_shape} are not divisible by "
            f"2**depth = {factor}; crop or pad to a multiple of {factor} ({fixes}) or lower depth"
        )

    is_3d = len(spatial) == 3
    conv = layers.Conv3D if is_3d else layers.Conv2D
    pool = layers.MaxPooling3D if is_3d else layers.MaxPooling2D
    up = layers.Conv3DTranspose if is_3d else layers.Conv2DTranspose

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = _conv_block(x, filters * 2**level, conv, batch_norm, dropout, f"down{level}")
        skips.append(x)
        x = pool(2, name=f"pool{level}")(x)
    x = _conv_block(x, filters * 2**depth, conv, batch_norm, dropout, "bottom")
    for level in reversed(range(depth)):
        x = up(filters * 2**level, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, filters * 2**level, conv, batch_norm, dropout, f"dec{level}")
    outputs = conv(1, 1, activation="sigmoid", dtype="float32", name="probability")(x)

    kind = "3d" if is_3d else "2d"
    model = keras.Model(inputs, outputs, name=f"unet{kind}_d{depth}_f{filters}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=dice_bce_loss,
        metrics=[keras.metrics.MeanMetricWrapper(dice_coef, name="dice"),
                 keras.metrics.MeanMetricWrapper(iou_coef, name="iou")],
    )
    return model


def resize_unet(model: keras.Model, spatial_shape: Sequence[int]) -> keras.Model:
    """The same network and weights for another input size, e.g. whole slices for inference.

    A U-Net is fully convolutional, so weights trained on small patches apply to any input
    whose sizes are divisible by ``2 ** depth``. The copy is not compiled (for ``predict``).

    Parameters
    ----------
    model : keras.Model
        A model from :func:`build_unet`.
    spatial_shape : sequence of int
        New spatial size, without the channel axis: ``(h, w)`` or ``(d, h, w)``.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    old = tuple(model.input_shape[1:-1])
    if len(spatial_shape) != len(old):
        raise ValueError(f"spatial_shape {spatial_shape} must have {len(old)} sizes like {old}")
    factor = max(int(round(o / int(s))) for o, s in
                 zip(old, model.get_layer("bottom_conv1").input.shape[1:-1], strict=True))
    bad = [s for s in spatial_shape if s % factor]
    if bad:
        raise ValueError(
            f"spatial size(s) {bad} are not divisible by {factor} (2**depth of this U-Net); "
            f"round up to a multiple of {factor}"
        )
    channels = model.input_shape[-1]
    copy = keras.models.clone_model(model, input_tensors=keras.Input((*spatial_shape, channels)))
    copy.set_weights(model.get_weights())
    return copy


def _block_of(layer_name: str) -> str:
    """The block of a :func:`build_unet` layer: the part of its name before the first ``_``."""
    return layer_name.split("_")[0]


def _part_of(block: str) -> str:
    """Encoder, bottleneck, decoder or output, from a :func:`build_unet` block name."""
    if block == "image":
        return "input"
    if block.startswith(("down", "pool")):
        return "encoder"
    if block == "bottom":
        return "bottleneck"
    if block.startswith(("up", "skip", "dec")):
        return "decoder"
    return "output"


def _inbound_layers(model: keras.Model) -> dict[str, list[str]]:
    """For each layer of a functional model, the names of the layers whose outputs it reads
    (from the model's own saved configuration, so no private attribute is needed)."""

    def histories(node) -> list[str]:
        if isinstance(node, dict):
            if "keras_history" in node.get("config", {}):
                return [node["config"]["keras_history"][0]]
            return [name for value in node.values() for name in histories(value)]
        if isinstance(node, list | tuple):
            return [name for value in node for name in histories(value)]
        return []

    return {layer["name"]: histories(layer.get("inbound_nodes", []))
            for layer in model.get_config()["layers"]}


def unet_layers(model: keras.Model) -> list[dict]:
    """Every layer of a :func:`build_unet` model, in order, with what the diagrams of a U-Net show.

    Read from the built model itself (names, output shapes, weights and connections), so the
    table is right for any ``depth``, ``filters`` or input size.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`build_unet` (or :func:`resize_unet`).

    Returns
    -------
    list of dict
        One dict per layer with ``layer`` (its name), ``type`` (Keras class), ``block`` (e.g.
        ``down0``, ``bottom``, ``up1``, ``skip1``, ``dec1``), ``part`` (``input``, ``encoder``,
        ``bottleneck``, ``decoder``, ``output``), ``shape`` (output shape without the batch
        axis), ``weights`` (trainable and not) and ``inputs`` (names of the layers it reads; two
        for a skip connection's ``Concatenate``: the up-sampled decoder path and the encoder
        block of the same level).
    """
    inbound = _inbound_layers(model)
    rows = []
    for layer in model.layers:
        block = _block_of(layer.name)
        rows.append({"layer": layer.name, "type": type(layer).__name__, "block": block,
                     "part": _part_of(block), "shape": tuple(layer.output.shape[1:]),
                     "weights": int(layer.count_params()), "inputs": inbound.get(layer.name, [])})
    return rows
