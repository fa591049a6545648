"""Patient-level splits: no patient in two splits, stratified, seeded; k-fold; JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lunglib.evaluation.splits import (
    Split,
    SplitOverlapError,
    load_split,
    patient_kfold,
    patient_shuffle_split,
    patient_split,
)


def _cohort(n_patients=120, seed=0):
    """Several samples per patient (like patches); about a third of the patients malignant."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for p in range(n_patients):
        malignant = rng.random() < 0.35
        for _ in range(rng.integers(1, 6)):
            ids.append(f"P{p:03d}")
            labels.append(int(malignant and rng.random() < 0.8))
    return np.array(ids), np.array(labels)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_patient_in_two_splits(seed):
    ids, labels = _cohort(seed=seed)
    split = patient_split(ids, labels, val_fraction=0.2, test_fraction=0.2, seed=seed)
    train, val, test = set(split.train), set(split.val), set(split.test)
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(ids)
    masks = split.masks(ids)
    assert np.all(masks["train"].astype(int) + masks["val"] + masks["test"] == 1)
    for name in ("train", "val", "test"):
        assert set(ids[masks[name]]) == set(getattr(split, name))


def test_fractions_and_stratification_by_patient():
    ids, labels = _cohort(n_patients=200)
    split = patient_split(ids, labels, val_fraction=0.15, test_fraction=0.25, seed=3)
    assert len(split.test) == 50 and len(split.val) == 30 and len(split.train) == 120
    patient_label = {p: labels[ids == p].max() for p in np.unique(ids)}
    overall = np.mean(list(patient_label.values()))
    for part in (split.train, split.val, split.test):
        assert abs(np.mean([patient_label[p] for p in part]) - overall) < 0.05


def test_reproducible_by_seed():
    ids, labels = _cohort()
    a = patient_split(ids, labels, seed=11)
    b = patient_split(ids, labels, seed=11)
    c = patient_split(ids, labels, seed=12)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert a.test != c.test


def test_overlap_raises():
    with pytest.raises(SplitOverlapError, match="both the train and the test split"):
        Split(train=["a", "b"], val=["c"], test=["b"])
    with pytest.raises(SplitOverlapError, match="more than once"):
        Split(train=["a", "a"], val=[], test=[])


def test_save_and_load_round_trip(tmp_path):
    ids, labels = _cohort()
    split = patient_split(ids, labels, seed=5)
    path = split.save(tmp_path / "split.json")
    loaded = load_split(path)
    assert loaded == split
    data = json.loads(path.read_text())
    data["val"].append(data["train"][0])
    path.write_text(json.dumps(data))
    with pytest.raises(SplitOverlapError):
        load_split(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_split(tmp_path / "missing.json")


def test_bad_fractions():
    ids, labels = _cohort()
    with pytest.raises(ValueError, match="below 1"):
        patient_split(ids, labels, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="one per sample"):
        patient_split(ids, labels[:-1])


def test_tiny_cohort_still_splits_every_way():
    ids = np.array([f"P{i}" for i in range(8)])
    labels = np.array([0, 1] * 4)
    split = patient_split(ids, labels, val_fraction=0.25, test_fraction=0.25, seed=0)
    assert len(split.val) == 2 and len(split.test) == 2 and len(split.train) == 4
    assert {labels[ids == p][0] for p in split.test} == {0, 1}


def test_kfold_is_patient_level_and_covers_every_sample():
    ids, labels = _cohort(n_patients=100)
    folds = patient_kfold(ids, labels, k=5, seed=0)
    assert len(folds) == 5
    seen = np.zeros(len(ids), int)
    for train_idx, test_idx in folds:
        assert not set(ids[train_idx]) & set(ids[test_idx])
        assert len(train_idx) + len(test_idx) == len(ids)
        seen[test_idx] += 1
        assert 0.15 < labels[test_idx].mean() < 0.45
    assert np.all(seen == 1)
    again = patient_kfold(ids, labels, k=5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    with pytest.raises(ValueError, match="between 2"):
        patient_kfold(ids, labels, k=1)


@pytest.mark.parametrize("seed", [0, 42])
def test_shuffle_split_is_patient_level_with_rounded_up_sizes(seed):
    ids, _ = _cohort(n_patients=120)
    split = patient_shuffle_split(ids, val_fraction=0.15, test_fraction=0.15, seed=seed)
    # GroupShuffleSplit rounds up: ceil(0.15 * 120) = 18 test, ceil(0.15 / 0.85 * 102) = 18 val
    assert (len(split.train), len(split.val), len(split.test)) == (84, 18, 18)
    assert set(split.train) | set(split.val) | set(split.test) == set(ids)
    rows = split.indices(ids)
    assert np.array_equal(np.sort(np.concatenate(list(rows.values()))), np.arange(len(ids)))
    for name, part in rows.items():
        assert np.all(np.diff(part) > 0)  # sorted sample indices
        assert set(ids[part]) == set(getattr(split, name))
    assert split.meta["method"] == "GroupShuffleSplit"


def test_shuffle_split_is_reproducible_and_not_stratified_split():
    ids, labels = _cohort()
    a = patient_shuffle_split(ids, seed=11)
    b = patient_shuffle_split(ids, seed=11)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert a.test != patient_shuffle_split(ids, seed=12).test
    assert a.test != patient_split(ids, labels, seed=11).test


def test_shuffle_split_bad_fractions():
    ids, _ = _cohort(n_patients=20)
    for kwargs in ({"val_fraction": 0.0}, {"test_fraction": 1.0}, {"val_fraction": 0.5,
                                                                   "test_fraction": 0.5}):
        with pytest.raises(ValueError, match="fraction"):
            patient_shuffle_split(ids, **kwargs)
    with pytest.raises(ValueError, match="no samples"):
        patient_shuffle_split([])


def test_subset_keeps_each_patient_in_its_part():
    split = Split(train=["a", "b", "c", "d"], val=["e", "f"], test=["g", "h"], seed=3)
    sub = split.subset(["a", "c", "e", "h"])
    assert (sub.train, sub.val, sub.test) == (["a", "c"], ["e"], ["h"])
    assert sub.seed == 3 and sub.meta["subset_of"] == 8
    with pytest.raises(ValueError, match="1 of the 2 patients are in no part"):
        split.subset(["a", "z"])
