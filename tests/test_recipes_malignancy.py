"""The malignancy recipe on a small real subset of the LIDC nodule patches (skipped if absent)."""

from __future__ import annotations

import numpy as np
import pytest

from lunglib.datasets import load_patch_set
from lunglib.evaluation import choose_threshold
from lunglib.recipes.malignancy import (
    MalignancyData,
    build_malignancy_cnn,
    check_methods,
    cross_validate_malignancy,
    malignancy_data,
    predict_malignancy,
    prepare_malignancy_inputs,
    reader_agreement,
    train_malignancy_classifier,
)
from lunglib.recipes.malignancy_report import fold_metrics, level_view


@pytest.fixture(scope="module")
def patches(lidc_patches_npz):
    full = load_patch_set(lidc_patches_npz)
    # every outline of the first 150 patients: whole nodules, both labels and rating 3
    keep = np.isin(full.patient_ids, np.unique(full.patient_ids)[:150])
    return full.subset(keep)


@pytest.fixture(scope="module")
def data(patches) -> MalignancyData:
    return malignancy_data(patches)


@pytest.fixture(scope="module")
def x(data) -> np.ndarray:
    return prepare_malignancy_inputs(data)


def test_labels_and_reader_means_follow_the_ratings(patches, data) -> None:
    np.testing.assert_array_equal(data.labels[data.rating <= 2], 0)
    np.testing.assert_array_equal(data.labels[data.rating == 3], -1)
    np.testing.assert_array_equal(data.labels[data.rating >= 4], 1)
    by_reader = patches.extra["malignancy_by_reader"]
    for nodule in np.unique(data.nodule_ids)[:40]:
        rows = data.nodule_ids == nodule
        ratings = by_reader[rows][by_reader[rows] > 0]  # the nodule's rows hold disjoint readers
        np.testing.assert_allclose(data.reader_mean[rows], ratings.mean(), rtol=1e-6)
    assert data.characteristics.shape == (len(data), 8)
    assert 0.0 <= data.characteristics.min() and data.characteristics.max() <= 1.0


def test_reader_agreement_uses_the_other_readers_only(patches) -> None:
    auc, n = reader_agreement(patches)
    by_reader = patches.extra["malignancy_by_reader"]
    own, others = [], []
    for i, nodule in enumerate(patches.nodule_ids):
        readers = by_reader[patches.nodule_ids == nodule]
        ratings = list(readers[readers > 0])
        ratings.remove(patches.malignancy[i])  # the outlining reader's own rating
        if ratings and patches.malignancy[i] != 3:
            own.append(patches.malignancy[i] >= 4)
            others.append(np.mean(ratings))
    from sklearn.metrics import roc_auc_score

    assert n == len(own) > 0
    assert auc == pytest.approx(roc_auc_score(own, others))


def test_prepared_inputs_have_the_documented_channels(data, x) -> None:
    assert x.shape == (len(data), 40, 40, 5) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert set(np.unique(x[..., 3])) <= {0.0, 1.0}  # the outline
    # 0.8 mm pixels: an outline of A mm^2 covers about A / 0.64 pixels
    ratio = x[..., 3].sum(axis=(1, 2)) / (data.area_mm2() / 0.64)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.1)
    # the size-normalised view differs from the fixed-scale wide window
    assert not np.allclose(x[..., 4], x[..., 0])


def test_folds_never_share_a_patient_and_test_every_outline_once(data) -> None:
    methods = ["area-logreg", "features-logreg", "features-logreg+area"]
    table = cross_validate_malignancy(data, methods, folds=3, seed=1)
    assert list(table["method"].unique()) == methods
    test_patients = []
    for _, part in table[table["method"] == "area-logreg"].groupby("fold"):
        val, test = part[part["split"] == "val"], part[part["split"] == "test"]
        assert not set(val["patient"]) & set(test["patient"])
        test_patients.append(set(test["patient"]))
    assert sum(len(s) for s in test_patients) == len(set().union(*test_patients))
    tested = table[(table["method"] == "area-logreg") & (table["split"] == "test")]["row"]
    assert sorted(tested) == list(range(len(data)))
    assert table["p"].between(0, 1).all()
    # the reported threshold of every fold is the accuracy-maximising one on its validation rows
    per_fold = fold_metrics(table, "outline", ["area-logreg"])
    for row in per_fold.itertuples():
        val = table[(table["method"] == "area-logreg") & (table["fold"] == row.fold)
                    & (table["split"] == "val")]
        yv, pv, _ = level_view(val, "outline")
        assert row.threshold == choose_threshold(yv, pv, rule="accuracy")


def test_a_stack_must_follow_what_it_stacks() -> None:
    with pytest.raises(ValueError, match="list them before it"):
        check_methods(["best-cnn+features", "best-cnn", "features-logreg"])
    with pytest.raises(ValueError, match="unknown method"):
        check_methods(["svm"])


def test_tta_is_the_mean_over_the_eight_views(x) -> None:
    x = x[:12]
    model = build_malignancy_cnn(x.shape[1:])
    views = []
    for k in range(4):
        turned = np.rot90(x, k, axes=(1, 2))
        for mirrored in (turned, turned[:, :, ::-1]):
            views.append(model.predict(np.ascontiguousarray(mirrored), verbose=0)[:, 0])
    assert not np.allclose(views[0], views[1])  # an untrained model is not view-invariant
    np.testing.assert_allclose(predict_malignancy([model], x), np.mean(views, axis=0),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(predict_malignancy([model], x, tta=False), views[0], rtol=1e-6)


@pytest.mark.slow
def test_validation_chosen_threshold_sees_no_other_labels(data, x) -> None:
    rng = np.random.default_rng(0)
    patients = np.unique(data.patient_ids)
    val_patients = rng.choice(patients, 30, replace=False)
    test_patients = rng.choice(np.setdiff1d(patients, val_patients), 30, replace=False)
    in_val = np.isin(data.patient_ids, val_patients)
    in_test = np.isin(data.patient_ids, test_patients)
    train_idx, val_idx = np.flatnonzero(~in_val & ~in_test), np.flatnonzero(in_val)
    target = (data.rating - 1) / 4.0

    def train(labels):
        return train_malignancy_classifier(x, target, labels, train_idx, val_idx, seeds=[3],
                                           epochs=1, patience=1)

    clf = train(data.labels)
    rated = data.labels[val_idx] >= 0
    assert clf.threshold == choose_threshold(data.labels[val_idx][rated], clf.val_pred[rated],
                                             rule="accuracy")
    np.testing.assert_allclose(clf.val_pred, clf.predict(x[val_idx]))
    flipped = data.labels.copy()
    flipped[in_test] = np.where(flipped[in_test] >= 0, 1 - flipped[in_test], -1)
    again = train(flipped)  # other test labels: the same model and threshold
    assert again.threshold == clf.threshold
    np.testing.assert_array_equal(again.val_pred, clf.val_pred)


@pytest.mark.slow
def test_every_method_runs_one_short_fold(patches) -> None:
    few = malignancy_data(patches.subset(np.isin(patches.patient_ids,
                                                 np.unique(patches.patient_ids)[:60])))
    methods = ["area-logreg", "features-logreg", "naive-cnn", "best-cnn", "consensus-cnn",
               "multitask-cnn", "consensus-cnn+area", "consensus-cnn+features"]
    lines: list[str] = []
    table = cross_validate_malignancy(few, methods, folds=2, seed=1, n_seeds=1,
                                      only_folds=[1], epochs=1, naive_epochs=1,
                                      log=lines.append)
    assert list(table["method"].unique()) == methods and set(table["fold"]) == {1}
    sizes = table.groupby(["method", "split"]).size().unstack()
    assert (sizes == sizes.iloc[0]).all().all()  # every method predicts the same rows
    assert table["p"].between(0, 1).all() and len(lines) == len(methods)
