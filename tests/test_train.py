"""train_model: early stopping restores the best epoch, logs and checkpoints, class weights, and
a small seeded CNN learns a synthetic nodule task clearly above chance."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from lunglib.cnn import build_cnn  # noqa: E402
from lunglib.train import class_weights, predict_proba, set_seed, to_dataset, train_model  # noqa: E402, I001


class RecordWeights(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([w.copy() for w in self.model.get_weights()])


def _contradicting_task(seed=0):
    """Validation labels are the training rule inverted: the more it learns, the worse val gets."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.float32)
    return (x, y), (x[:32], 1.0 - y[:32])


def test_early_stopping_stops_and_restores_best_weights(tmp_path):
    set_seed(0)
    train, val = _contradicting_task()
    model = build_cnn((8, 8, 1), n_conv_layers=1, filters=4, dense_units=8, dropout=0.0, l2=0.0,
                      learning_rate=1e-2)
    recorder = RecordWeights()
    history = train_model(model, train, val, epochs=30, patience=2, output_dir=tmp_path,
                          callbacks=[recorder], seed=0)
    val_loss = history.history["val_loss"]
    assert len(val_loss) < 30, "early stopping never stopped"
    best = int(np.argmin(val_loss))
    assert len(val_loss) == best + 3  # stopped `patience` epochs after the best one
    for restored, recorded in zip(model.get_weights(), recorder.weights[best], strict=True):
        np.testing.assert_array_equal(restored, recorded)
    loss_now = model.evaluate(*val, verbose=0, return_dict=True)["loss"]
    assert loss_now == pytest.approx(val_loss[best], rel=1e-4)
    # checkpoint and CSV log written
    assert (tmp_path / "best.keras").is_file()
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert len(rows) == len(val_loss) + 1 and "val_loss" in rows[0]
    saved = keras.models.load_model(tmp_path / "best.keras")
    np.testing.assert_allclose(predict_proba(saved, val[0]), predict_proba(model, val[0]),
                               rtol=1e-5)


def test_class_weights_balance_the_classes():
    weights = class_weights([0, 0, 0, 1])
    assert weights[0] == pytest.approx(4 / (2 * 3))
    assert weights[1] == pytest.approx(4 / (2 * 1))
    # each class then carries the same total weight
    assert 3 * weights[0] == pytest.approx(1 * weights[1])


def test_augment_is_for_training_arrays_only():
    train, val = _contradicting_task()
    ds = to_dataset(train, batch_size=8)
    model = build_cnn((8, 8, 1), n_conv_layers=1, filters=2)
    with pytest.raises(ValueError, match="training arrays only"):
        train_model(model, ds, val, epochs=1, augment=lambda x, y: (x, y))
    flipped = to_dataset(train, batch_size=64, augment=lambda x, y: (-x, y))
    x_aug, _ = next(iter(flipped))
    np.testing.assert_array_equal(x_aug.numpy(), -train[0])


def test_mismatched_arrays_raise():
    with pytest.raises(ValueError, match="one label per input"):
        to_dataset((np.zeros((4, 8, 8, 1)), np.zeros(3)))


def _blob_volumes(n, seed):
    """16^3 noisy volumes; label 1 holds a faint bright sphere somewhere inside."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:16, :16, :16]
    x = rng.normal(0.0, 1.0, size=(n, 16, 16, 16)).astype(np.float32)
    y = np.arange(n) % 2
    for i in np.flatnonzero(y):
        c = rng.integers(4, 12, size=3)
        r = rng.uniform(3.0, 4.5)
        x[i][(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r**2] += 2.0
    return x[..., None], y


@pytest.mark.slow
def test_small_seeded_3d_cnn_learns_blob_task():
    from sklearn.metrics import roc_auc_score

    set_seed(1)
    train, val = _blob_volumes(96, seed=1), _blob_volumes(48, seed=2)
    model = build_cnn((16, 16, 16, 1), n_conv_layers=2, filters=4, dense_units=16,
                      dropout=0.2, learning_rate=3e-3)
    train_model(model, train, val, epochs=8, patience=4, batch_size=16, seed=1)
    auc = roc_auc_score(val[1], predict_proba(model, val[0]))
    assert auc > 0.7


@pytest.mark.slow
def test_same_seed_same_weights():
    train, val = _contradicting_task(seed=3)
    runs = []
    for _ in range(2):
        set_seed(5)
        model = build_cnn((8, 8, 1), n_conv_layers=1, filters=4, dense_units=8)
        train_model(model, train, val, epochs=2, patience=5, seed=5)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def _nodule_cubes(index, shape=(8, 16, 16)):
    """A cube around each patient's largest nodule (the lung centre when it has none)."""
    from scipy import ndimage

    cubes, labels = [], []
    half = np.array(shape) // 2
    for pid, arrays in index.iter_volumes():
        image, nodules = arrays["image"], arrays.get("nodule_mask")
        centre = np.array(image.shape) // 2
        if nodules is not None and nodules.any():
            sizes = ndimage.sum_labels(nodules > 0, nodules, index=np.unique(nodules[nodules > 0]))
            largest = np.unique(nodules[nodules > 0])[int(np.argmax(sizes))]
            centre = np.round(ndimage.center_of_mass(nodules == largest)).astype(int)
        padded = np.pad(image, [(h, h) for h in half], mode="edge")
        cube = padded[tuple(slice(c, c + 2 * h) for c, h in zip(centre, half, strict=True))]
        cubes.append(cube[..., None].astype(np.float32))
        labels.append(index.labels([pid])[pid])
    return np.stack(cubes), np.array(labels)


@pytest.mark.slow
def test_learns_the_synthetic_cohort_above_chance(tmp_path):
    """Synthetic DICOM -> cache -> patient split -> a small 3D CNN on nodule-centred cubes."""
    from sklearn.metrics import roc_auc_score

    from lunglib.cache import cache_dataset
    from lunglib.datasets import open_dataset
    from lunglib.settings import Settings
    from lunglib.splits import patient_split
    from lunglib.synthetic import write_cohort

    cohort = write_cohort(tmp_path / "cohort", n_patients=24, seed=11, matrix=64, difficulty=0.0,
                          progress=False)
    settings = Settings(size=64, n_slices=32, cache_dir=tmp_path / "cache")
    index = cache_dataset(open_dataset("synthetic", cohort), settings, workers=2, progress=False)
    x, y = _nodule_cubes(index)
    groups = np.array(index.ids)
    assert set(y) == {0, 1}
    split = patient_split(groups, y, val_fraction=0.4, test_fraction=0.0, seed=0)
    masks = split.masks(groups)
    set_seed(0)
    model = build_cnn(x.shape[1:], n_conv_layers=2, filters=8, dense_units=16, dropout=0.2)
    train_model(model, (x[masks["train"]], y[masks["train"]]), (x[masks["val"]], y[masks["val"]]),
                epochs=15, patience=6, batch_size=4, seed=0)
    auc = roc_auc_score(y[masks["val"]], predict_proba(model, x[masks["val"]]))
    assert auc > 0.7
