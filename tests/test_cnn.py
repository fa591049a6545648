"""build_cnn: 2D and 3D models, the layers asked for, and clear errors for bad arguments."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lunglib.models.cnn import build_cnn, max_conv_layers


def _layers(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_3d_model_from_volume_shape():
    model = build_cnn((32, 64, 64, 1), n_conv_layers=3, filters=4, dense_units=8)
    convs = _layers(model, keras.layers.Conv3D)
    assert len(convs) == 3
    assert len(_layers(model, keras.layers.MaxPooling3D)) == 3
    assert not _layers(model, keras.layers.Conv2D)
    assert [c.filters for c in convs] == [4, 8, 16]  # an int doubles after every block
    assert model.output_shape == (None, 1)
    assert model.layers[-1].activation.__name__ == "sigmoid"
    assert len(_layers(model, keras.layers.Flatten)) == 1


def test_2d_model_with_filter_list_and_softmax():
    model = build_cnn((48, 48, 2), n_conv_layers=2, filters=[6, 10], kernel_size=5, n_classes=3)
    convs = _layers(model, keras.layers.Conv2D)
    assert [c.filters for c in convs] == [6, 10]
    assert all(c.kernel_size == (5, 5) for c in convs)
    assert model.output_shape == (None, 3)
    assert model.layers[-1].activation.__name__ == "softmax"
    probs = model.predict(np.zeros((2, 48, 48, 2), np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_dropout_and_l2_are_in_the_model():
    model = build_cnn((16, 16, 1), n_conv_layers=2, filters=4, dropout=0.37, l2=0.01)
    rates = [layer.rate for layer in _layers(model, keras.layers.Dropout)]
    assert rates and all(r == pytest.approx(0.37) for r in rates)
    weighted = _layers(model, keras.layers.Conv2D) + _layers(model, keras.layers.Dense)
    for layer in weighted:
        assert layer.kernel_regularizer is not None
        assert float(layer.kernel_regularizer.l2) == pytest.approx(0.01)
    # the penalty Keras adds to the loss is l2 * sum of squared kernel weights
    expected = sum(0.01 * float(np.sum(np.square(layer.kernel.numpy()))) for layer in weighted)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_no_dropout_no_l2_when_zero():
    model = build_cnn((16, 16, 1), n_conv_layers=2, filters=4, dropout=0.0, l2=0.0)
    assert not _layers(model, keras.layers.Dropout)
    assert not model.losses


def test_batch_norm_optional():
    with_bn = build_cnn((16, 16, 1), n_conv_layers=2, filters=4, batch_norm=True)
    without = build_cnn((16, 16, 1), n_conv_layers=2, filters=4)
    assert len(_layers(with_bn, keras.layers.BatchNormalization)) == 2
    assert not _layers(without, keras.layers.BatchNormalization)


def test_compiled_with_learning_rate_and_metrics():
    model = build_cnn((16, 16, 1), n_conv_layers=1, filters=2, learning_rate=3e-4)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 1)).astype(np.float32)
    result = model.evaluate(x, np.array([0, 1] * 4), verbose=0, return_dict=True)
    assert {"loss", "auc", "accuracy"} <= set(result)


def test_too_many_pooling_layers_names_the_maximum():
    assert max_conv_layers((32, 64, 64, 1), 2) == 5
    with pytest.raises(ValueError, match="at most n_conv_layers=5"):
        build_cnn((32, 64, 64, 1), n_conv_layers=6)
    with pytest.raises(ValueError, match="at most n_conv_layers=2"):
        build_cnn((9, 9, 1), n_conv_layers=3, pool_size=3)


@pytest.mark.parametrize(
    "head, layer",
    [("global_max", "GlobalMaxPooling3D"), ("global_avg", "GlobalAveragePooling3D")],
)
def test_global_pooling_head_is_translation_invariant(head, layer):
    model = build_cnn((8, 16, 16, 1), n_conv_layers=2, filters=4, dense_units=4, dropout=0.0,
                      head=head)
    assert not _layers(model, keras.layers.Flatten)
    assert len(_layers(model, getattr(keras.layers, layer))) == 1
    # a bright blob gives the same output wherever it sits (shifted by whole pooling cells, away
    # from the border); a flatten head weighs each position differently
    blob = np.zeros((2, 8, 16, 16, 1), np.float32)
    blob[0, 2:4, 4:6, 4:6] = 1.0
    blob[1, 2:4, 8:10, 8:10] = 1.0
    out = model.predict(blob, verbose=0)
    assert out[0, 0] == pytest.approx(out[1, 0], abs=1e-6)
    keras.utils.set_random_seed(0)
    flat = build_cnn((8, 16, 16, 1), n_conv_layers=2, filters=4, dense_units=4, dropout=0.0)
    out_flat = flat.predict(blob, verbose=0)
    assert abs(out_flat[0, 0] - out_flat[1, 0]) > 1e-6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (64, 64)}, "channel"),
        ({"filters": [8, 16]}, "one value per convolution layer"),
        ({"dropout": 1.0}, "dropout"),
        ({"l2": -1.0}, "l2"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"n_classes": 1}, "n_classes"),
        ({"n_conv_layers": 0}, "n_conv_layers"),
        ({"head": "flat"}, "head must be one of flatten, global_max, global_avg"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    args = {"input_shape": (32, 32, 1), "n_conv_layers": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_cnn(**args)


def _sliding_max(model, image, stride):
    from numpy.lib.stride_tricks import sliding_window_view

    window = tuple(model.input_shape[1:])
    views = sliding_window_view(image, window)  # (..positions.., 1, *window)
    views = views[tuple(slice(None, None, s) for s in stride)].reshape(-1, *window)
    return model.predict(views, verbose=0).max()


@pytest.mark.parametrize("patch, whole", [((10, 18, 18, 1), (20, 34, 30, 1)),
                                          ((18, 18, 2), (40, 26, 2))])
def test_convolutionalize_equals_the_sliding_window_maximum(patch, whole):
    from lunglib.models.cnn import convolutionalize

    keras.utils.set_random_seed(1)
    model = build_cnn(patch, n_conv_layers=2, filters=4, dense_units=6, padding="valid")
    sliding = convolutionalize(model, whole)
    assert sliding.output_shape == (None, 1)
    image = np.random.default_rng(0).random(whole, dtype=np.float32)
    expected = _sliding_max(model, image, stride=(4,) * (len(whole) - 1))
    assert sliding.predict(image[None], verbose=0)[0, 0] == pytest.approx(expected, abs=1e-5)
    # the same patch on its own gives the patch model's own answer
    crop = image[tuple(slice(0, p) for p in patch[:-1])]
    assert convolutionalize(model, patch).predict(crop[None], verbose=0)[0, 0] == pytest.approx(
        model.predict(crop[None], verbose=0)[0, 0], abs=1e-5)


def test_convolutionalize_refuses_models_it_cannot_slide():
    from lunglib.models.cnn import convolutionalize

    same = build_cnn((10, 18, 18, 1), n_conv_layers=2, filters=4, dense_units=6)
    with pytest.raises(ValueError, match="padding='valid'"):
        convolutionalize(same, (20, 36, 36, 1))
    pooled = build_cnn((10, 18, 18, 1), n_conv_layers=2, filters=4, head="global_max",
                       padding="valid")
    with pytest.raises(ValueError, match="head='flatten'"):
        convolutionalize(pooled, (20, 36, 36, 1))
    valid = build_cnn((10, 18, 18, 1), n_conv_layers=2, filters=4, padding="valid")
    with pytest.raises(ValueError, match="smaller than the patch"):
        convolutionalize(valid, (8, 36, 36, 1))


def test_valid_padding_that_leaves_nothing_names_the_problem():
    with pytest.raises(ValueError, match="padding='valid'"):
        build_cnn((8, 16, 16, 1), n_conv_layers=2, padding="valid")


def _inline_cube_cnn(input_shape, l2=1e-4, dropout=0.3):
    """Notebook 04's teaching copy of the network, written out layer by layer as it is there."""
    from keras import layers, regularizers

    penalty = regularizers.L2(l2)
    return keras.Sequential([
        keras.Input(shape=input_shape),
        layers.Conv3D(8, 3, padding="valid", kernel_regularizer=penalty),
        layers.Activation("relu"),
        layers.MaxPooling3D(2),
        layers.Conv3D(16, 3, padding="valid", kernel_regularizer=penalty),
        layers.Activation("relu"),
        layers.MaxPooling3D(2),
        layers.Flatten(),
        layers.Dropout(dropout),
        layers.Dense(16, activation="relu", kernel_regularizer=penalty),
        layers.Dropout(dropout),
        layers.Dense(1, activation="sigmoid", kernel_regularizer=penalty),
    ])


def _architecture(model):
    """(layer type, output shape, weight count) of every layer after the input."""
    return [(type(layer).__name__, tuple(layer.output.shape), layer.count_params())
            for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def test_build_cnn_is_the_inline_network_of_notebook_04():
    cube = (10, 18, 18, 1)  # notebook 04's default training cube
    inline = _inline_cube_cnn(cube)
    built = build_cnn(cube, n_conv_layers=2, filters=8, kernel_size=3, pool_size=2,
                      dense_units=16, dropout=0.3, l2=1e-4, padding="valid")
    assert _architecture(built) == _architecture(inline)
    # the numbers the notebook derives by hand: (n - k + 1) per convolution, // 2 per pooling,
    # (k^3 * c_in + 1) * c_out weights per convolution, (n_in + 1) * n_out per dense layer
    assert [shape for _, shape, _ in _architecture(inline)][:7] == [
        (None, 8, 16, 16, 8), (None, 8, 16, 16, 8), (None, 4, 8, 8, 8),
        (None, 2, 6, 6, 16), (None, 2, 6, 6, 16), (None, 1, 3, 3, 16), (None, 144)]
    assert inline.count_params() == built.count_params() == (
        (27 * 1 + 1) * 8 + (27 * 8 + 1) * 16 + (144 + 1) * 16 + (16 + 1) * 1)
    regularized = [layer for layer in built.layers
                   if isinstance(layer, (keras.layers.Conv3D, keras.layers.Dense))]
    assert all(float(layer.kernel_regularizer.l2) == pytest.approx(1e-4) for layer in regularized)
