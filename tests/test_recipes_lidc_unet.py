"""The LIDC 2D U-Net recipe on a small real subset of the LIDC nodule patches."""

from __future__ import annotations

import numpy as np
import pytest

from lunglib.datasets import load_patch_set
from lunglib.evaluation.segmentation import choose_binarization, dice
from lunglib.evaluation.splits import patient_shuffle_split
from lunglib.recipes.lidc_unet import (
    INPUT_SIZE,
    PATCH_SIZE,
    add_windows,
    evaluate_lidc_unet,
    lidc_unet_inputs,
    lidc_unet_targets,
    predict_lidc_unet,
    summary_table,
    threshold_baseline,
    train_lidc_unet,
)


@pytest.fixture(scope="module")
def patches(lidc_patches_npz):
    return load_patch_set(lidc_patches_npz)


@pytest.fixture(scope="module")
def subset(patches):
    """The patches of the first 40 patients (sorted ids): about 100 real patches."""
    keep = np.isin(patches.patient_ids, np.unique(patches.patient_ids)[:40])
    return patches.subset(keep)


def test_split_of_all_patches_is_the_benchmarks_split(patches) -> None:
    pids = patches.patient_groups()
    split = patient_shuffle_split(pids, seed=42)
    rows = split.indices(pids)
    # the patch and patient counts of every published seed-42 run of the benchmark
    assert {k: len(v) for k, v in rows.items()} == {"train": 1223, "val": 242, "test": 297}
    assert (len(split.train), len(split.val), len(split.test)) == (393, 85, 85)
    assert split.test[:3] == ["LIDC-IDRI-0008", "LIDC-IDRI-0014", "LIDC-IDRI-0017"]


def test_split_keeps_every_patient_on_one_side(subset) -> None:
    pids = subset.patient_groups()
    rows = patient_shuffle_split(pids, seed=3).indices(pids)
    sides = {k: set(pids[v]) for k, v in rows.items()}
    assert not sides["train"] & sides["val"]
    assert not sides["train"] & sides["test"]
    assert not sides["val"] & sides["test"]
    assert np.array_equal(np.sort(np.concatenate(list(rows.values()))), np.arange(len(pids)))
    for name, part in rows.items():  # every patch of a patient of this side is on it
        assert np.array_equal(part, np.flatnonzero(np.isin(pids, list(sides[name]))))


def test_inputs_are_lung_window_padded_with_edges(subset) -> None:
    hu = subset.images[:8]
    x = lidc_unet_inputs(hu)
    assert x.shape == (8, INPUT_SIZE, INPUT_SIZE, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    inner = x[:, :PATCH_SIZE, :PATCH_SIZE, 0]
    np.testing.assert_allclose(inner, np.clip((hu + 1000.0) / 1400.0, 0, 1), atol=1e-6)
    assert (inner[hu <= -1000] == 0).all() and (inner[hu >= 400] == 1).all()
    np.testing.assert_array_equal(x[:, PATCH_SIZE, :, 0], x[:, PATCH_SIZE - 1, :, 0])
    np.testing.assert_array_equal(x[:, :, PATCH_SIZE, 0], x[:, :, PATCH_SIZE - 1, 0])
    y = lidc_unet_targets(subset.masks[:8])
    assert y.shape == x.shape and y.dtype == bool
    assert not y[:, PATCH_SIZE].any() and not y[:, :, PATCH_SIZE].any()
    assert y[:, :PATCH_SIZE, :PATCH_SIZE, 0].sum() == (subset.masks[:8] > 0).sum()


def test_second_channel_is_the_soft_tissue_window(subset) -> None:
    hu = subset.images[:8].astype(np.float64)
    x = lidc_unet_inputs(subset.images[:8])
    assert add_windows(x, 1) is x
    both = np.asarray(add_windows(x, 2))
    assert both.shape == (8, INPUT_SIZE, INPUT_SIZE, 2)
    np.testing.assert_array_equal(both[..., 0], x[..., 0])
    soft = both[:, :PATCH_SIZE, :PATCH_SIZE, 1]
    np.testing.assert_allclose(soft, np.clip((hu + 160.0) / 400.0, 0, 1), atol=1e-5)
    assert soft.min() >= 0.0 and soft.max() <= 1.0
    with pytest.raises(ValueError, match="channels"):
        add_windows(x, 3)


def _blurry_probs(masks: np.ndarray, inside: float, stray: float) -> np.ndarray:
    """``inside`` on the true nodule, a stray blob of ``stray`` in a corner, 0.05 elsewhere."""
    probs = np.where(masks > 0, inside, 0.05)
    corner = probs[:, 2:8, 2:8]
    corner[corner < inside] = stray  # the blob never covers the nodule itself
    return probs


def test_binarisation_is_chosen_on_validation_only(subset) -> None:
    masks = subset.masks > 0
    val, test = masks[:30], masks[30:60]
    val_prob = _blurry_probs(val, inside=0.62, stray=0.4)
    spacing = subset.extra["pixel_spacing_mm"][30:60]
    patients = subset.patient_ids[30:60]
    # validation: any threshold in [0.4, 0.62) separates the nodule from the stray blob
    choice, scores = evaluate_lidc_unet(val_prob, val, _blurry_probs(test, 0.9, 0.7), test,
                                        patients, spacing)
    assert choice == {"threshold": 0.6, "central": True, "val_dice": 1.0}
    # test maps that would want another threshold do not move the choice...
    again, _ = evaluate_lidc_unet(val_prob, val, _blurry_probs(test, 0.3, 0.25), test,
                                  patients, spacing)
    assert again == choice
    # ...and the test patches are scored with it: 0.9 > 0.6 everywhere on the nodule
    assert len(scores) == 30 and (scores["dice"] == 1.0).all()
    assert list(scores["case_id"]) == list(patients)
    # the chosen pair is the best row of choose_binarization on the validation maps
    table = choose_binarization(val_prob, val)
    assert table.iloc[0][["threshold", "central"]].tolist() == [0.6, True]


def test_threshold_baseline_keeps_one_central_component(subset) -> None:
    hu = subset.images[:20]
    masks = threshold_baseline(hu)
    assert masks.shape == hu.shape and masks.dtype == bool
    from scipy import ndimage

    assert all(ndimage.label(m)[1] <= 1 for m in masks)
    filled = np.stack([ndimage.binary_fill_holes(p > -400) for p in hu])
    assert (masks <= filled).all()  # never outside the filled threshold mask
    scores = np.mean([dice(t, p) for t, p in zip(subset.masks[:20], masks, strict=True)])
    assert 0.1 < scores < 0.9  # a real, imperfect baseline


@pytest.fixture(scope="module")
def tiny_unets():
    import keras

    from lunglib.models import build_unet

    keras.utils.set_random_seed(0)
    return [build_unet((INPUT_SIZE, INPUT_SIZE, c), depth=3, filters=4) for c in (2, 2)]


def test_tta_prediction_is_the_mean_of_the_eight_mapped_back_views(subset, tiny_unets) -> None:
    model = tiny_unets[0]
    x = lidc_unet_inputs(subset.images[:6])
    views = []
    for k in range(4):
        for flip in (False, True):
            v = np.rot90(x, k, axes=(1, 2))
            v = v[:, :, ::-1] if flip else v
            p = model.predict(np.asarray(add_windows(np.ascontiguousarray(v), 2)), verbose=0)
            p = p[:, :, ::-1] if flip else p
            views.append(np.rot90(p, -k, axes=(1, 2))[:, :PATCH_SIZE, :PATCH_SIZE, 0])
    got = predict_lidc_unet(model, x, tta=True)
    assert got.shape == (6, PATCH_SIZE, PATCH_SIZE) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.mean(views, axis=0), atol=1e-6)
    plain = predict_lidc_unet(model, x, tta=False)
    np.testing.assert_allclose(plain, views[0], atol=1e-6)
    assert np.abs(plain - got).max() > 1e-4  # an untrained net is not rotation invariant


def test_ensemble_prediction_is_the_members_mean(subset, tiny_unets) -> None:
    x = lidc_unet_inputs(subset.images[:4])
    each = [predict_lidc_unet(m, x, tta=False) for m in tiny_unets]
    np.testing.assert_allclose(predict_lidc_unet(tiny_unets, x, tta=False),
                               np.mean(each, axis=0), atol=1e-6)


def test_summary_table_has_patch_and_patient_levels(subset) -> None:
    import pandas as pd

    scores = pd.DataFrame({"case_id": ["a", "a", "b"], "dice": [1.0, 0.5, 0.0],
                           "iou": [1.0, 0.4, 0.0], "hd95_mm": [0.0, 2.0, np.nan]})
    table = summary_table({"m": scores})
    assert table["level"].tolist() == ["per_patch", "per_patient"]
    assert table["n"].tolist() == [3, 2]
    np.testing.assert_allclose(table["dice"], [0.5, 0.375])


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_short_training_returns_a_full_patch_model(subset, schedule) -> None:
    pids = subset.patient_groups()
    rows = patient_shuffle_split(pids, seed=1).indices(pids)
    x, y = lidc_unet_inputs(subset.images), lidc_unet_targets(subset.masks)
    run = train_lidc_unet(x, y, rows, epochs=2, channels=2, schedule=schedule, seed=0,
                          filters=4, batch_size=16, verbose=0)
    assert run.epochs == 2 and len(run.history["val_loss"]) == 2
    assert run.model.input_shape == (None, INPUT_SIZE, INPUT_SIZE, 2)
    out = run.model.predict(np.asarray(add_windows(x[rows["val"]], 2)), verbose=0)
    assert out.shape == (len(rows["val"]), INPUT_SIZE, INPUT_SIZE, 1)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    prob = predict_lidc_unet(run.model, x[rows["val"]])
    assert prob.shape == (len(rows["val"]), PATCH_SIZE, PATCH_SIZE)
    if schedule == "cosine":  # decayed from 1e-3 towards 0 over the epochs
        assert run.history["learning_rate"][0] == pytest.approx(1e-3)
        assert run.history["learning_rate"][1] < 1e-3
