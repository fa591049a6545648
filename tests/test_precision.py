"""Mixed precision: float16 compute where asked (and possible), float32 at every model head."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import lunglib.training.precision as precision_module
from lunglib.models import build_cnn, build_unet, convolutionalize
from lunglib.recipes.malignancy import build_malignancy_cnn
from lunglib.training import set_precision


@pytest.fixture
def mixed():
    """The mixed_float16 policy for one test (forced on this CPU), float32 again afterwards."""
    assert set_precision("mixed_float16", allow_cpu=True) == "mixed_float16"
    yield
    keras.mixed_precision.set_global_policy("float32")


def _float16_layers(model) -> int:
    return sum(layer.compute_dtype == "float16" for layer in model.layers)


def test_every_head_is_float32_under_mixed_precision_and_a_step_runs(mixed):
    rng = np.random.default_rng(0)
    cnn2d = build_cnn((16, 16, 1), n_conv_layers=2, filters=4, dense_units=8)
    cnn3d = build_cnn((10, 18, 18, 1), n_conv_layers=2, filters=4, dense_units=8,
                      padding="valid")
    softmax = build_cnn((16, 16, 1), n_conv_layers=1, filters=4, dense_units=8, n_classes=3)
    unet = build_unet((16, 16, 1), depth=2, filters=4)
    multitask = build_malignancy_cnn((16, 16, 2), n_aux=3,
                                     config={"n_conv_layers": 2, "filters": 4,
                                             "dense_units": 8})
    for model in (cnn2d, cnn3d, softmax, unet, multitask):
        assert _float16_layers(model) > 0, model.name  # the policy reached the body
        outputs = model.outputs  # symbolic: 3D float16 pooling has no CPU kernel to run on
        assert all(out.dtype == "float32" for out in outputs), model.name
    for model in (cnn2d, softmax, unet, multitask):  # and run the 2D ones
        x = rng.normal(size=(2, *model.input_shape[1:])).astype(np.float32)
        outputs = model(x)
        for out in (outputs.values() if isinstance(outputs, dict) else [outputs]):
            assert out.dtype == "float32", model.name
    heat = convolutionalize(cnn3d, (20, 36, 36, 1))
    assert all(out.dtype == "float32" for out in heat.outputs)
    x = rng.normal(size=(8, 16, 16, 1)).astype(np.float32)
    y = (rng.uniform(size=8) > 0.5).astype(np.float32)
    history = cnn2d.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_mixed_precision_without_a_gpu_is_ignored_with_a_warning(monkeypatch):
    monkeypatch.setattr(precision_module, "gpu_available", lambda: False)
    with pytest.warns(UserWarning, match="needs a GPU"):
        assert set_precision("mixed_float16") == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert _float16_layers(build_cnn((16, 16, 1), n_conv_layers=1, filters=4)) == 0


def test_mixed_precision_is_set_where_a_gpu_is_seen(monkeypatch):
    monkeypatch.setattr(precision_module, "gpu_available", lambda: True)
    try:
        assert set_precision("mixed_float16") == "mixed_float16"
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with pytest.raises(ValueError, match="float32"):
        set_precision("bfloat8")
