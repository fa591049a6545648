"""train_model: early stopping restores the best epoch, logs and checkpoints, class weights, and
a small seeded CNN learns a synthetic nodule task clearly above chance."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from lunglib.augment import dihedral_patches
from lunglib.models.cnn import build_cnn
from lunglib.training import (
    EpochAugmented,
    class_weights,
    predict_proba,
    set_seed,
    to_dataset,
    train_model,
)


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


def _patches_with_masks(n=20, size=8, seed=0):
    """Random 2-channel patches; each mask marks where channel 0 is bright."""
    x = np.random.default_rng(seed).random((n, size, size, 2)).astype(np.float32)
    return x, (x[..., :1] > 0.7).astype(np.float32)


def _epoch(batches):
    parts = [batches[i] for i in range(len(batches))]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def test_epoch_augmented_serves_every_example_once_per_epoch_in_a_fresh_order():
    x, y = _patches_with_masks(n=20)
    batches = EpochAugmented(x, y, lambda a, b, rng: (a, b), batch_size=6, seed=1)
    assert len(batches) == 4 and len(batches[3][0]) == 2  # 6 + 6 + 6 + 2
    orders = []
    for _ in range(2):
        batches.on_epoch_begin()
        xe, ye = _epoch(batches)
        order = [int(np.flatnonzero((x == row).all(axis=(1, 2, 3)))[0]) for row in xe]
        assert sorted(order) == list(range(20))
        np.testing.assert_array_equal(ye, y[order])  # each target stays with its input
        orders.append(order)
    assert orders[0] != orders[1]
    with pytest.raises(IndexError):
        batches[4]


def test_epoch_augmented_turns_masks_with_their_patches_afresh_each_epoch():
    x, y = _patches_with_masks(n=40)
    batches = EpochAugmented(x, y, dihedral_patches, batch_size=16, seed=2)
    epochs = []
    for _ in range(2):
        batches.on_epoch_begin()
        xe, ye = _epoch(batches)
        np.testing.assert_array_equal(ye, (xe[..., :1] > 0.7).astype(np.float32))
        epochs.append(xe)
    assert not np.array_equal(epochs[0], epochs[1])
    # every served patch is one of the 8 rotations/mirrorings of a training patch
    views = {np.rot90(v, k, axes=(0, 1)).tobytes() for v in (*x, *x[:, :, ::-1])
             for k in range(4)}
    assert all(row.tobytes() in views for row in epochs[0])
    again = EpochAugmented(x, y, dihedral_patches, batch_size=16, seed=2)
    again.on_epoch_begin()
    np.testing.assert_array_equal(_epoch(again)[0], epochs[0])  # seeded: the same draw


def test_epoch_augmented_is_redrawn_by_fit_each_epoch():
    x, y = _patches_with_masks(n=16)
    draws = []

    def counting(a, b, rng):
        draws.append(1)
        return dihedral_patches(a, b, rng)

    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same",
                                                    activation="sigmoid")(inputs))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(EpochAugmented(x, y, counting, batch_size=8, seed=0), epochs=3,
                        verbose=0)
    assert len(history.history["loss"]) == 3
    assert 3 <= len(draws) <= 4  # one per epoch (plus one if Keras reads a batch first)


def test_epoch_augmented_checks_its_inputs():
    x, y = _patches_with_masks(n=4)
    with pytest.raises(ValueError, match="4 inputs but 3 targets"):
        EpochAugmented(x, y[:3], dihedral_patches)
    with pytest.raises(ValueError, match="batch_size"):
        EpochAugmented(x, y, dihedral_patches, batch_size=0)
    shrinking = EpochAugmented(x, y, lambda a, b, rng: (a[:2], b[:2]))
    with pytest.raises(ValueError, match="augment changed the shapes"):
        shrinking.on_epoch_begin()


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


@pytest.fixture(scope="module")
def synthetic_cohort(tmp_path_factory) -> Path:
    """The default-difficulty synthetic cohort (small), written as DICOM."""
    from lunglib.synthetic import write_cohort

    root = tmp_path_factory.mktemp("learn")
    return write_cohort(root / "cohort", n_patients=48, seed=11, matrix=64, progress=False)


@pytest.fixture(scope="module")
def synthetic_cache(synthetic_cohort: Path):
    """:func:`synthetic_cohort` prepared like the course's notebook 04."""
    from lunglib.datasets import open_dataset
    from lunglib.preprocess.cache import cache_dataset
    from lunglib.settings import Settings

    settings = Settings(size=64, n_slices=32, cache_dir=synthetic_cohort.parent / "cache")
    return cache_dataset(open_dataset("synthetic", synthetic_cohort), settings, workers=2,
                         progress=False)


def test_nodule_cubes_sit_on_the_largest_nodule_and_in_healthy_lung(synthetic_cache):
    from scipy import ndimage

    from lunglib.training import nodule_cubes

    ids = synthetic_cache.ids[:8]
    x, y, groups = nodule_cubes(synthetic_cache, ids, shape=(10, 18, 18), n_negatives=3,
                                jitter=0, seed=0)
    labels = synthetic_cache.labels(ids)
    centre = (5, 9, 9)
    i = 0
    for pid in ids:
        arrays = synthetic_cache.load(pid)
        nodules = arrays["nodule_mask"] > 0
        n_pos = 2 if nodules.any() else 0
        assert list(groups[i:i + n_pos + 3]) == [pid] * (n_pos + 3)
        assert list(y[i:i + n_pos]) == [labels[pid]] * n_pos  # the patient's label
        assert list(y[i + n_pos:i + n_pos + 3]) == [0, 0, 0]
        if n_pos:
            # the positive cube's centre is the brightest-blob region: the largest nodule
            components, n = ndimage.label(nodules)
            sizes = ndimage.sum_labels(nodules, components, range(1, n + 1))
            largest = components == 1 + int(np.argmax(sizes))
            zc, yc, xc = np.round(ndimage.center_of_mass(largest)).astype(int)
            assert x[i][centre] == pytest.approx(arrays["image"][zc, yc, xc])
        i += n_pos + 3
    assert i == len(y) == len(x) and x.shape[1:] == (10, 18, 18, 1)


def test_nodule_cubes_need_nodule_masks(synthetic_cache, monkeypatch):
    from lunglib.training import nodule_cubes

    real_load = synthetic_cache.load

    def without_masks(pid):
        return {k: v for k, v in real_load(pid).items() if k != "nodule_mask"}

    monkeypatch.setattr(synthetic_cache, "load", without_masks)
    with pytest.raises(ValueError, match="no nodule_mask"):
        nodule_cubes(synthetic_cache, synthetic_cache.ids[:1])


def test_hard_negatives_are_the_windows_the_model_finds_most_suspicious():
    from lunglib.training import hard_negatives

    # a "model" whose score rises with the mean brightness of its window
    model = keras.Sequential([keras.Input((4, 4, 4, 1)), keras.layers.GlobalAveragePooling3D(),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.layers[-1].set_weights([np.full((1, 1), 10.0, np.float32), np.zeros(1, np.float32)])
    volumes = np.zeros((2, 12, 12, 12, 1), np.float32)
    volumes[0, 4:8, 8:12, 0:4] = 1.0  # one bright block per volume, in different places
    volumes[1, 0:4, 0:4, 4:8] = 1.0
    hard = hard_negatives(model, volumes, per_volume=1, stride=(4, 4, 4))
    assert hard.shape == (2, 4, 4, 4, 1)
    assert np.all(hard == 1.0)  # exactly the bright blocks were picked
    with pytest.raises(ValueError, match="per_volume"):
        hard_negatives(model, volumes, per_volume=0)


@pytest.mark.parametrize("window, shape, stride", [((10, 18, 18), (20, 40, 36), (2, 4, 4)),
                                                    ((18, 18), (40, 30), (2, 4))])
def test_hard_negatives_score_every_window_as_the_patch_model_does(window, shape, stride):
    # A flatten + valid CNN is slid over whole volumes by its convolutionalized map (one pass per
    # offset); the scores must be the patch model's own, window by window.
    from numpy.lib.stride_tricks import sliding_window_view

    from lunglib.models.cnn import build_cnn
    from lunglib.training import hard_negatives
    from lunglib.training.mining import _window_scores

    keras.utils.set_random_seed(2)
    model = build_cnn((*window, 1), n_conv_layers=2, filters=4, dense_units=6, padding="valid")
    volumes = np.random.default_rng(0).random((2, *shape, 1), dtype=np.float32)
    scores, origins = _window_scores(model, volumes, stride)
    for volume, got in zip(volumes, scores, strict=True):
        views = sliding_window_view(volume[..., 0], window)
        views = views[tuple(slice(None, None, s) for s in stride)].reshape(-1, *window)
        expected = model.predict(views[..., None], verbose=0)[:, 0]
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert origins[:, 0].max() + window[0] <= shape[0]
    hard = hard_negatives(model, volumes, per_volume=2, stride=stride)
    assert hard.shape == (4, *window, 1)
    best = origins[np.argmax(scores[1])]
    np.testing.assert_array_equal(
        hard[-1], volumes[1][tuple(slice(o, o + w) for o, w in zip(best, window, strict=True))])


@pytest.mark.slow
def test_learns_the_synthetic_cohort_above_chance(synthetic_cache, synthetic_cohort: Path,
                                                  tmp_path: Path):
    """Whole scans in, cancer yes/no out, judged per patient on the validation split.

    The course's recipe: a patch CNN trained on nodule cubes and hard negatives, then slid
    over the whole scan (``convolutionalize``); the scan's score is its most suspicious window.
    """
    from sklearn.metrics import roc_auc_score

    from lunglib.evaluation.splits import patient_split
    from lunglib.recipes import fit_scan_classifier
    from lunglib.training import cache_arrays

    labels = synthetic_cache.labels()
    ids = sorted(labels)
    split = patient_split(ids, [labels[p] for p in ids], val_fraction=0.35, test_fraction=0.0,
                          seed=0)
    whole, cube_model = fit_scan_classifier(synthetic_cache, split.train, split.val, epochs=15,
                                            seed=0)
    assert cube_model.input_shape == (None, 10, 18, 18, 1)
    assert whole.input_shape == (None, 32, 64, 64, 1)
    x_scans, y_scans = cache_arrays(synthetic_cache, split.val)
    from_cache = predict_proba(whole, x_scans)
    auc = roc_auc_score(y_scans, from_cache)
    print(f"validation AUC per patient {auc:.3f}")
    assert auc > 0.7, f"validation AUC per patient {auc:.3f}"

    # the same trained model through ``lunglib predict``'s path on the held-out patients' DICOM
    # folders: predict must prepare a scan as training did (same probability) and so keep the
    # model's skill on scans it never saw
    from lunglib.models.bundle import save_bundle
    from lunglib.predict import predict_scan

    save_bundle(whole, tmp_path / "run", "classifier", dataset="synthetic", size=64, n_slices=32,
                threshold=0.5)
    from_dicom = np.array([
        predict_scan(synthetic_cohort / pid, tmp_path / "run", tmp_path / "out" / pid,
                     report=False).cancer_probability
        for pid in split.val])
    np.testing.assert_allclose(from_dicom, from_cache, atol=1e-4)
    assert roc_auc_score(y_scans, from_dicom) > 0.7


@pytest.mark.parametrize("given", ["flips", None, "custom"])
def test_scan_classifier_trains_with_the_augmentation_it_is_given(monkeypatch, given):
    """``fit_scan_classifier(augment=...)``: flips by default, None for none, or any function
    (benchmarks/bench_course_inputs.py compares 03's affine augmentation with the flips)."""
    import lunglib.training as training
    from lunglib.augment import flip_augment
    from lunglib.recipes import fit_scan_classifier

    def custom(x, y):
        return x, y

    class Stop(Exception):
        pass

    seen = {}

    def fake_train_model(model, train_data, val_data, **kwargs):
        seen.update(kwargs)
        raise Stop

    cubes = (np.zeros((4, 10, 18, 18, 1), np.float32), np.array([0, 1, 0, 1]), ["a"] * 4)
    monkeypatch.setattr(training, "nodule_cubes", lambda *args, **kwargs: cubes)
    monkeypatch.setattr(training, "train_model", fake_train_model)
    with pytest.raises(Stop):
        fit_scan_classifier(None, ["a"], ["b"], augment=custom if given == "custom" else given)
    assert seen["augment"] is {"flips": flip_augment, None: None, "custom": custom}[given]
