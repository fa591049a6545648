"""A plain convolutional classifier for volumes (3D) and slices or patches (2D).

:func:`build_cnn` stacks ``n_conv_layers`` blocks of convolution + ReLU (+ optional batch
normalisation), each followed by max pooling, then flattens, adds one fully connected ReLU layer
with dropout and L2, and ends in a sigmoid unit (two classes) or a softmax layer (more classes).
The number of spatial axes in ``input_shape`` chooses Conv2D/MaxPooling2D or Conv3D/MaxPooling3D,
so the same call builds the course's 3D volume model and a 2D patch model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers, regularizers

HEADS = ("flatten", "global_max", "global_avg")


def _as_filters(filters: int | Sequence[int], n_conv_layers: int) -> list[int]:
    if isinstance(filters, int):
        if filters < 1:
            raise ValueError(f"filters must be >= 1, got {filters}")
        return [filters * 2**i for i in range(n_conv_layers)]
    filters = [int(f) for f in filters]
    if len(filters) != n_conv_layers:
        raise ValueError(
            f"filters lists {len(filters)} values but n_conv_layers is {n_conv_layers}; give one "
            "value per convolution layer, or a single int (doubled after every layer)"
        )
    if min(filters) < 1:
        raise ValueError(f"every entry of filters must be >= 1, got {filters}")
    return filters


def max_conv_layers(input_shape: Sequence[int], pool_size: int = 2) -> int:
    """How many conv + pooling blocks fit: every spatial axis must keep at least one voxel."""
    smallest = min(int(s) for s in input_shape[:-1])
    if pool_size < 2:
        raise ValueError(f"pool_size must be >= 2, got {pool_size}")
    return int(math.floor(math.log(smallest, pool_size) + 1e-9))


def feature_size(
    input_shape: Sequence[int], n_conv_layers: int, kernel_size: int, pool_size: int, padding: str
) -> list[int]:
    """Spatial size after the convolution + pooling blocks of :func:`build_cnn`.

    Along each axis a block leaves ``(n - k + 1) // p`` voxels with ``padding="valid"`` and
    ``n // p`` with ``"same"``; a size below 1 means the network does not fit the input.
    """
    sizes = [int(s) for s in input_shape[:-1]]
    for _ in range(n_conv_layers):
        sizes = [(s - kernel_size + 1 if padding == "valid" else s) // pool_size for s in sizes]
    return sizes


def build_cnn(
    input_shape: Sequence[int],
    n_conv_layers: int = 3,
    filters: int | Sequence[int] = 16,
    kernel_size: int = 3,
    pool_size: int = 2,
    dense_units: int = 64,
    dropout: float = 0.3,
    l2: float = 1e-4,
    learning_rate: float = 1e-3,
    n_classes: int = 2,
    batch_norm: bool = False,
    head: str = "flatten",
    padding: str = "same",
    name: str = "cnn",
) -> keras.Model:
    """Build and compile a CNN classifier.

    Parameters
    ----------
    input_shape
        Spatial axes then channels: ``(z, y, x, channels)`` for a 3D model, ``(y, x, channels)``
        for a 2D model, e.g. ``(32, 64, 64, 1)`` or ``(64, 64, 2)``.
    n_conv_layers
        Convolution + pooling blocks. At most ``log_pool_size(smallest spatial axis)``.
    filters
        Filters of the first convolution layer (doubled after every block), or one value per
        block.
    kernel_size, pool_size
        Edge length of the convolution kernel and of the max-pooling window.
    dense_units
        Units of the fully connected layer after ``Flatten``.
    dropout
        Dropout rate before the fully connected layer and before the output, in ``[0, 1)``;
        0 leaves the Dropout layers out.
    l2
        L2 penalty on every convolution and dense kernel; 0 leaves it out.
    learning_rate
        Adam learning rate.
    n_classes
        2 gives one sigmoid unit (binary cross-entropy, AUC and accuracy metrics, reported as
        ``auc`` and ``accuracy``); more gives a softmax layer (sparse categorical cross-entropy,
        ``accuracy``).
    batch_norm
        Insert BatchNormalization between every convolution and its ReLU.
    head
        How the last feature maps become one vector: ``"flatten"`` keeps every position (the
        classic CNN; the dense layer learns *where* a feature is), ``"global_max"`` keeps each
        filter's strongest response anywhere (translation invariant: a nodule counts wherever it
        is, which matters when a few dozen scans must teach the model), ``"global_avg"`` its mean.
    padding
        ``"same"`` keeps each convolution's output the size of its input (zeros beyond the
        border); ``"valid"`` uses only real voxels, so the border shrinks by ``kernel_size - 1``
        per convolution. A patch model meant for :func:`convolutionalize` needs ``"valid"``:
        then sliding it over a larger image gives exactly the patch model's answers.
    name
        Model name.

    Returns
    -------
    keras.Model
        Compiled, ready for :func:`lunglib.training.train_model`.
    """
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (3, 4):
        raise ValueError(
            f"input_shape {input_shape} must be (y, x, channels) for a 2D model or "
            "(z, y, x, channels) for a 3D model; add a trailing channel axis of 1 for grey images"
        )
    if min(input_shape) < 1:
        raise ValueError(f"input_shape {input_shape} has an empty axis")
    if n_conv_layers < 1:
        raise ValueError(f"n_conv_layers must be >= 1, got {n_conv_layers}")
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
    limit = max_conv_layers(input_shape, pool_size)
    if n_conv_layers > limit:
        raise ValueError(
            f"{n_conv_layers} conv + pooling blocks with pool_size {pool_size} shrink the "
            f"smallest spatial axis of {input_shape[:-1]} below one voxel; use at most "
            f"n_conv_layers={limit} (or a smaller pool_size / larger input)"
        )
    if dense_units < 1:
        raise ValueError(f"dense_units must be >= 1, got {dense_units}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}; got {head!r}")
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
    if padding == "valid":
        sizes = feature_size(input_shape, n_conv_layers, kernel_size, pool_size, padding)
        if min(sizes) < 1:
            raise ValueError(
                f"with padding='valid', {n_conv_layers} blocks of kernel {kernel_size} and pooling "
                f"{pool_size} leave nothing of input {input_shape[:-1]}; use a larger input, "
                "fewer blocks or padding='same'"
            )
    filter_list = _as_filters(filters, n_conv_layers)

    three_d = len(input_shape) == 4
    conv = layers.Conv3D if three_d else layers.Conv2D
    pool = layers.MaxPooling3D if three_d else layers.MaxPooling2D
    reg = regularizers.L2(l2) if l2 > 0 else None

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for i, n_filters in enumerate(filter_list, start=1):
        x = conv(
            n_filters,
            kernel_size,
            padding=padding,
            use_bias=not batch_norm,
            kernel_regularizer=reg,
            name=f"conv{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        x = pool(pool_size, name=f"pool{i}")(x)
    if head == "flatten":
        x = layers.Flatten(name="flatten")(x)
    else:
        global_pool = {
            ("global_max", True): layers.GlobalMaxPooling3D,
            ("global_max", False): layers.GlobalMaxPooling2D,
            ("global_avg", True): layers.GlobalAveragePooling3D,
            ("global_avg", False): layers.GlobalAveragePooling2D,
        }[head, three_d]
        x = global_pool(name=head)(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout_flat")(x)
    x = layers.Dense(dense_units, activation="relu", kernel_regularizer=reg, name="dense")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout_dense")(x)

    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if n_classes == 2:
        # float32 head: under mixed precision a float16 sigmoid rounds small probabilities away
        outputs = layers.Dense(1, activation="sigmoid", kernel_regularizer=reg, dtype="float32",
                               name="output")(x)
        model = keras.Model(inputs, outputs, name=name)
        model.compile(
            optimizer=optimizer,
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
        )
    else:
        outputs = layers.Dense(
            n_classes, activation="softmax", kernel_regularizer=reg, dtype="float32",
            name="output"
        )(x)
        model = keras.Model(inputs, outputs, name=name)
        model.compile(
            optimizer=optimizer,
            loss="sparse_categorical_crossentropy",
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    return model


def output_stride(model: keras.Model) -> tuple[int, ...]:
    """Voxels between neighbouring outputs of a convolutionalized ``model``, per spatial axis.

    The product of the pooling layers' strides: the step between the patches that the positions
    of :func:`convolutionalize`'s probability map stand for.
    """
    stride = [1] * (len(model.input_shape) - 2)
    for layer in model.layers:
        if isinstance(layer, (layers.MaxPooling2D, layers.MaxPooling3D,
                              layers.AveragePooling2D, layers.AveragePooling3D)):
            stride = [s * int(t) for s, t in zip(stride, layer.strides, strict=True)]
    return tuple(stride)


def convolutionalize(
    model: keras.Model, input_shape: Sequence[int], reduce: str = "max"
) -> keras.Model:
    """Slide a patch classifier over a whole image: the "fully convolutional" trick.

    A :func:`build_cnn` model with a ``flatten`` head, trained on small patches or cubes, is
    rebuilt for the larger ``input_shape``: the convolution blocks are reused as they are, the
    fully connected layer becomes a convolution whose kernel covers exactly the feature map one
    patch produced, and the output layer becomes a 1x1 convolution. The result is the patch
    classifier's probability at every position (a stride of ``pool_size ** n_conv_layers``
    voxels), and the new model returns the **maximum** of that map: "is there a suspicious patch
    anywhere in this scan?". The weights are copied: later training of ``model`` does not change
    the returned model.

    Parameters
    ----------
    model : keras.Model
        A two-class (sigmoid) :func:`build_cnn` model with ``head="flatten"``.
    input_shape : sequence of int
        Spatial axes then channels of the whole input, e.g. ``(32, 64, 64, 1)``; at least as
        large as the patch on every axis.
    reduce : {"max", "none"}
        ``"max"`` returns the scan's most suspicious patch; ``"none"`` the whole probability map,
        whose position ``i`` is the patch starting at voxel ``i * output_stride(model)``.

    Returns
    -------
    keras.Model
        Whole image in, one probability out (uncompiled; for ``predict`` and Grad-CAM), or the
        ``(n, *positions, 1)`` probability map with ``reduce="none"``.
    """
    if reduce not in ("max", "none"):
        raise ValueError(f"reduce must be 'max' or 'none', got {reduce!r}")
    input_shape = tuple(int(s) for s in input_shape)
    patch_shape = tuple(model.input_shape[1:])
    if len(input_shape) != len(patch_shape) or input_shape[-1] != patch_shape[-1]:
        raise ValueError(f"input_shape {input_shape} must have the rank and channels of the "
                         f"patch model's input {patch_shape}")
    small = [s for s, p in zip(input_shape[:-1], patch_shape[:-1], strict=True) if s < p]
    if small:
        raise ValueError(f"input_shape {input_shape} is smaller than the patch {patch_shape}")
    names = {layer.name for layer in model.layers}
    if "flatten" not in names or model.output_shape[-1] != 1:
        raise ValueError("convolutionalize needs a two-class build_cnn model with "
                         "head='flatten' (a global-pooling head already takes any input size)")
    if any(getattr(layer, "padding", "valid") != "valid" for layer in model.layers):
        raise ValueError("convolutionalize needs a model built with padding='valid': with "
                         "'same' the patch borders see zeros that the whole image does not have")
    three_d = len(input_shape) == 4
    conv = layers.Conv3D if three_d else layers.Conv2D
    global_max = layers.GlobalMaxPooling3D if three_d else layers.GlobalMaxPooling2D

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for layer in model.layers[1:]:
        if layer.name == "flatten":
            break
        twin = layer.__class__.from_config(layer.get_config())
        x = twin(x)
        twin.set_weights(layer.get_weights())
    feature_shape = tuple(model.get_layer("flatten").input.shape[1:])
    dense, output = model.get_layer("dense"), model.get_layer("output")
    kernel, bias = dense.get_weights()
    fc = conv(dense.units, feature_shape[:-1], activation="relu", name="dense_as_conv")
    x = fc(x)
    fc.set_weights([kernel.reshape(*feature_shape, dense.units), bias])
    out_kernel, out_bias = output.get_weights()
    out = conv(1, 1, activation="sigmoid", dtype="float32", name="output_as_conv")
    probability_map = out(x)
    out.set_weights([out_kernel.reshape((1,) * len(feature_shape[:-1]) + out_kernel.shape),
                     out_bias])
    if reduce == "none":
        return keras.Model(inputs, probability_map, name=f"{model.name}_map")
    outputs = global_max(dtype="float32", name="most_suspicious_patch")(probability_map)
    return keras.Model(inputs, outputs, name=f"{model.name}_sliding")
