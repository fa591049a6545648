"""Grad-CAM points at the evidence a trained model uses."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lunglib.viz.explain import grad_cam, last_conv_layer


def _blob_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """24x24 noise images; class 1 has a bright 5x5 blob at a random place."""
    x = rng.normal(0, 0.1, (n, 24, 24, 1)).astype(np.float32)
    y = np.arange(n) % 2
    centres = rng.integers(4, 20, (n, 2))
    for i in np.flatnonzero(y):
        r, c = centres[i]
        x[i, r - 2:r + 3, c - 2:c + 3, 0] += 1.0
    return x, y, centres


@pytest.mark.slow
def test_grad_cam_peaks_on_the_blob_that_decides_the_class() -> None:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y, centres = _blob_images(256, rng)
    model = keras.Sequential([
        keras.Input((24, 24, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    x_test, y_test, c_test = _blob_images(20, np.random.default_rng(1))
    assert model.evaluate(x_test, y_test, verbose=0)[1] >= 0.9
    assert last_conv_layer(model) == "last_conv"
    hits = 0
    for i in np.flatnonzero(y_test):
        cam = grad_cam(model, x_test[i, ..., 0])
        assert cam.shape == (24, 24) and 0.0 <= cam.min() and cam.max() <= 1.0
        r, c = c_test[i]
        inside = np.zeros((24, 24), bool)
        inside[r - 3:r + 4, c - 3:c + 4] = True
        hits += cam[inside].mean() > 2 * cam[~inside].mean()
    assert hits >= 8  # of 10 positive test images


def test_grad_cam_rejects_a_wrong_shape_and_a_model_without_convolutions() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    with pytest.raises(ValueError, match="no Conv2D/Conv3D"):
        last_conv_layer(model)
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                             keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="does not fit the model input"):
        grad_cam(conv, np.zeros((9, 8)))
