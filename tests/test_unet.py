"""The U-Net builder, its loss and metrics, and a small seeded model that must learn nodules."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lunglib.evaluation.segmentation import dice
from lunglib.models.unet import build_unet, dice_bce_loss, dice_coef, iou_coef, resize_unet


def test_2d_and_3d_models_have_matching_output_shapes():
    model2d = build_unet((32, 48, 1), depth=2, filters=4)
    assert model2d.output_shape == (None, 32, 48, 1)
    model3d = build_unet((8, 16, 16, 2), depth=3, filters=2, dropout=0.0, batch_norm=False)
    assert model3d.output_shape == (None, 8, 16, 16, 1)
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in model3d.layers)
    assert any(isinstance(layer, keras.layers.Conv3D) for layer in model3d.layers)
    # deeper and wider means more weights
    assert build_unet((32, 32, 1), depth=3, filters=8).count_params() > \
        build_unet((32, 32, 1), depth=2, filters=4).count_params()


def test_bad_shapes_and_parameters_are_explained():
    with pytest.raises(ValueError, match=r"not divisible by 2\*\*depth = 8.*48 or 56"):
        build_unet((50, 64, 1), depth=3)
    with pytest.raises(ValueError, match="channels"):
        build_unet((64, 64))
    with pytest.raises(ValueError, match="dropout"):
        build_unet((16, 16, 1), depth=1, dropout=1.0)
    with pytest.raises(ValueError, match="depth"):
        build_unet((16, 16, 1), depth=0)


def test_loss_and_metrics_on_known_masks():
    truth = np.zeros((2, 8, 8, 1), np.float32)
    truth[:, 2:6, 2:6] = 1
    perfect = np.clip(truth, 0.001, 0.999)
    inverse = 1.0 - perfect
    loss = np.asarray(dice_bce_loss(truth, perfect))
    assert loss.shape == (2,) and loss.max() < 0.01  # one value per sample, Keras averages them
    assert np.asarray(dice_bce_loss(truth, inverse)).min() > 5.0
    mixed = np.asarray(dice_bce_loss(truth, np.stack([perfect[0], inverse[1]])))
    assert mixed[0] == pytest.approx(loss[0], rel=1e-5) and mixed[1] > 5.0
    half = truth.copy()
    half[:, 2:6, 4:6] = 0  # predicts 8 of the 16 foreground pixels
    assert float(dice_coef(truth, half)) == pytest.approx(2 * 8 / 24, abs=1e-5)
    assert float(iou_coef(truth, half)) == pytest.approx(8 / 16, abs=1e-5)
    empty = np.zeros_like(truth)
    assert float(dice_coef(empty, empty)) == pytest.approx(1.0)


def nodule_images(n: int, size: int, rng: np.random.Generator):
    """Lung-like 2D patches: dark noisy parenchyma, thin bright vessels, a bright disc nodule
    (radius 2-6 pixels) in most of them. Intensities as after a [-1000, 400] HU window."""
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(0.11, 0.03, (n, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(2):  # vessels: lines one to two pixels wide, not nodules
            angle, offset = rng.uniform(0, np.pi), rng.uniform(-size / 3, size / 3)
            dist = np.abs((xx - size / 2) * np.sin(angle) - (yy - size / 2) * np.cos(angle)
                          - offset)
            images[i][dist < rng.uniform(0.5, 1.0)] += 0.45
        if rng.random() < 0.8:
            cy, cx = rng.uniform(8, size - 8, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(2, 6) ** 2
            masks[i][disc] = 1
            images[i][disc] = rng.normal(0.68, 0.03, disc.sum())
    return images[..., None], masks[..., None]


@pytest.mark.slow
def test_small_seeded_unet_learns_synthetic_nodules():
    keras.utils.set_random_seed(7)
    rng = np.random.default_rng(7)
    x_train, y_train = nodule_images(256, 32, rng)
    x_test, y_test = nodule_images(48, 32, rng)
    # without batch norm: with 16-sample batches its moving statistics lag behind for 8 epochs
    model = build_unet((32, 32, 1), depth=2, filters=8, dropout=0.0, batch_norm=False,
                       learning_rate=3e-3)
    untrained = model.predict(x_test, verbose=0) > 0.5
    model.fit(x_train, y_train, batch_size=16, epochs=8, verbose=0)
    pred = model.predict(x_test, verbose=0) > 0.5
    with_nodule = y_test.reshape(len(y_test), -1).any(axis=1)
    scores = [dice(t, p) for t, p in zip(y_test[with_nodule], pred[with_nodule], strict=True)]
    assert np.mean(scores) > 0.7
    assert np.mean(scores) > np.mean(
        [dice(t, p) for t, p in zip(y_test[with_nodule], untrained[with_nodule], strict=True)])
    # patches without a nodule stay (almost) empty: vessels are not nodules
    assert pred[~with_nodule].mean() < 0.01


def test_saved_model_reloads_with_its_loss_and_metrics(tmp_path):
    model = build_unet((16, 16, 1), depth=1, filters=2)
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    path = tmp_path / "unet.keras"
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5)
    assert again.loss is not None


def test_resized_unet_shares_weights_and_agrees_away_from_the_border():
    model = build_unet((16, 16, 1), depth=2, filters=4, dropout=0.0)
    big = resize_unet(model, (32, 48))
    assert big.output_shape == (None, 32, 48, 1)
    for a, b in zip(model.get_weights(), big.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = np.zeros((1, 32, 48, 1), np.float32)
    x[0, 4:12, 20:28] = 1.0
    # a 16x16 window (offset a multiple of 2**depth) predicts what the whole image predicts
    # there, up to the zero padding at the window's edge
    small = model.predict(x[:, 0:16, 16:32], verbose=0)
    whole = big.predict(x, verbose=0)[:, 0:16, 16:32]
    np.testing.assert_allclose(small[:, 6:10, 6:10], whole[:, 6:10, 6:10], atol=1e-3)
    with pytest.raises(ValueError, match="divisible by 4"):
        resize_unet(model, (30, 48))


def tubes_and_balls(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A volume with vertical tubes ("vessels") and flat blobs ("nodules") of the same radius.

    On one axial slice a tube and the middle of a blob are the same bright disc; only the
    neighbouring slices tell them apart (the tube continues, the blob -- 3 slices thick, like a
    nodule in thick slices -- ends).
    """
    shape = (24, 64, 64)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    image = np.zeros(shape, np.float32)
    nodules = np.zeros(shape, np.uint8)
    centres = [(y, x) for y in (12, 32, 52) for x in (12, 32, 52)]
    for i in rng.permutation(len(centres)):
        y, x = centres[i]
        if i % 2:
            image[(yy - y) ** 2 + (xx - x) ** 2 <= 9] = 1.0  # a tube through every slice
        else:
            z = int(rng.integers(6, 18))
            ball = ((zz - z) / 1.5) ** 2 + ((yy - y) ** 2 + (xx - x) ** 2) / 9 <= 1
            image[ball] = 1.0
            nodules[ball] = 1
    image += rng.normal(0, 0.05, shape).astype(np.float32)
    return image, nodules


@pytest.mark.slow
def test_neighbouring_slices_as_channels_tell_vessels_from_nodules():
    """The 2.5D input (context) separates what a single slice cannot."""
    from lunglib.inference import predict_volume
    from lunglib.training.sampling import sample_patches

    rng = np.random.default_rng(3)
    train = [tubes_and_balls(rng) for _ in range(4)]
    image, nodules = tubes_and_balls(rng)
    lung = np.ones(image.shape, np.uint8)
    scores = {}
    for context in (0, 2):
        keras.utils.set_random_seed(3)
        patch_rng = np.random.default_rng(5)  # the same patch centres for both models
        xs, ys = [], []
        for img, nod in train:
            x, y = sample_patches(img, nod, lung, (16, 16), n_pos=48, n_neg=48, rng=patch_rng,
                                  context=context, hard_fraction=0.75, hard_level=0.5)
            xs.append(x if context else x[..., None])
            ys.append(y[..., None].astype(np.float32))
        model = build_unet((16, 16, 2 * context + 1), depth=2, filters=8, dropout=0.0,
                           batch_norm=False, learning_rate=3e-3)
        model.fit(np.concatenate(xs), np.concatenate(ys), batch_size=16, epochs=10, verbose=0)
        prob = predict_volume(resize_unet(model, (64, 64)), image, None, (64, 64),
                              context=context)
        scores[context] = dice(nodules, prob > 0.5)
    assert scores[2] > 0.7, scores
    assert scores[2] > scores[0] + 0.2, scores
