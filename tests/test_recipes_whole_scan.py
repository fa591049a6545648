"""The whole-scan segmentation recipe (lunglib.recipes.whole_scan) on a tiny in-memory cohort:
validation alone chooses, the ensemble is the mean of its members, hard negatives come from the
training patients only."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lunglib.evaluation import Split
from lunglib.recipes import whole_scan
from lunglib.recipes.whole_scan import (
    WholeScanConfig,
    evaluate_variants,
    load_cases,
    run_whole_scan_recipe,
    train_whole_scan_segmenter,
)
from lunglib.recipes.whole_scan_scoring import LEVELS

SPACING = (2.5, 1.5, 1.5)
TINY = WholeScanConfig(patch=16, context=1, context_mm=None, n_pos=24, n_neg=24, depth=2,
                       filters=4, epochs=1, n_hard=6, hard_epochs=1, batch_size=16)


class TinyCohort:
    """Eight small scans: a lung box with two vessels running through every slice and 0-2
    ball-shaped nodules; ``synth-0003`` has none. The dataset interface the recipe reads."""

    def __init__(self, n: int = 8, seed: int = 0) -> None:
        self.scans = {}
        for i in range(n):
            rng = np.random.default_rng(seed + i)
            shape = (12, 40, 40)
            hu = np.full(shape, -100.0)
            lung = np.zeros(shape, np.uint8)
            lung[1:11, 4:36, 4:36] = 1
            hu[lung > 0] = -850.0
            zz, yy, xx = np.indices(shape)
            for y, x in rng.integers(10, 30, size=(2, 2)):  # vessels: bright in every slice
                hu[((yy - y) ** 2 + (xx - x) ** 2 <= 2) & (lung > 0)] = 40.0
            labels = np.zeros(shape, np.int16)
            for k in range(1, (0 if i == 3 else 1 + i % 2) + 1):
                z, y, x = rng.integers(4, 8), *rng.integers(10, 30, size=2)
                ball = ((zz - z) * 2.5) ** 2 + ((yy - y) * 1.5) ** 2 + ((xx - x) * 1.5) ** 2 <= 25
                hu[ball] = 40.0
                labels[ball] = k
            hu += rng.normal(0, 20, shape)
            self.scans[f"synth-{i:04d}"] = (hu.astype(np.float32), labels, lung)

    def patient_ids(self) -> list[str]:
        return list(self.scans)

    def labels(self) -> dict[str, int]:
        return {p: int(s[1].max() > 0) for p, s in self.scans.items()}

    def load_scan(self, pid: str) -> SimpleNamespace:
        return SimpleNamespace(hu=self.scans[pid][0], spacing=SPACING, direction=np.eye(3))

    def nodule_mask(self, pid: str, scan) -> np.ndarray:
        return self.scans[pid][1]

    def lung_mask(self, pid: str, scan) -> np.ndarray:
        return self.scans[pid][2]


@pytest.fixture(scope="module")
def cohort() -> TinyCohort:
    return TinyCohort()


@pytest.fixture(scope="module")
def split(cohort) -> Split:
    ids = cohort.patient_ids()
    return Split(train=ids[:4], val=ids[4:6], test=ids[6:])


def spy(monkeypatch, name: str) -> list:
    """Replace ``whole_scan.<name>`` by a wrapper that records each call's arguments and result."""
    calls = []
    real = getattr(whole_scan, name)

    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out

    monkeypatch.setattr(whole_scan, name, wrapper)
    return calls


def test_load_cases_windows_the_scan_and_keeps_only_patients_with_masks(cohort):
    class SomeMissing(TinyCohort):
        def nodule_mask(self, pid, scan):
            return None if pid == "synth-0001" else super().nodule_mask(pid, scan)

    cases = load_cases(SomeMissing(n=3), ["synth-0000", "synth-0001", "synth-0002"], 2.5)
    assert list(cases) == ["synth-0000", "synth-0002"]
    case = cases["synth-0000"]
    assert 0.0 <= case.image.min() and case.image.max() <= 1.0
    assert case.step == 1 and case.scan is None  # 2.5 mm slices: the neighbours are 2.5 mm away
    assert load_cases(cohort, ["synth-0000"], 5.0)["synth-0000"].step == 2


def test_the_variant_is_chosen_on_validation_patients_only(cohort, split, monkeypatch):
    cases = load_cases(cohort, [*split.train, *split.val, *split.test], None)
    parts = {"train": split.train, "val": split.val, "test": split.test}
    truth = {p: (c.nodules > 0).astype(np.float32) for p, c in cases.items()}
    # "val" is exact on the validation patients and wrong on the test ones; "test" the reverse.
    maps = {
        "val": {**{p: truth[p] for p in split.val}, **{p: 1 - truth[p] for p in split.test}},
        "test": {**{p: 1 - truth[p] for p in split.val}, **{p: truth[p] for p in split.test}},
    }
    calls = spy(monkeypatch, "choose_variant")
    table, choice = evaluate_variants(maps, cases, parts, thresholds=(0.5,),
                                      min_volumes_mm3=(0.0,), min_peaks=(0.0,))
    assert choice.chosen == "val"
    (variants, truths, spacings), _, _ = calls[0]
    assert len(calls) == 1 and [len(v) for v in variants.values()] == [2, 2]
    assert all(t is cases[p].nodules for t, p in zip(truths, split.val, strict=True))
    assert all(v is maps[name][p] for name, vs in variants.items()
               for v, p in zip(vs, split.val, strict=True))
    rows = table.set_index("variant")
    assert rows.loc["val", "val_dice"] == 1.0 and rows.loc["test", "test_dice"] == 1.0
    assert rows.loc["val", "test_dice"] < 0.1  # what the test patients would have preferred


def test_the_ensemble_map_is_the_mean_of_the_members_maps(cohort, split):
    cases = load_cases(cohort, split.val, None)
    models = [whole_scan.build_segmenter(TINY, seed) for seed in (1, 2)]
    for tta in (False, True):
        alone = [whole_scan.segment_scans([m], cases, split.val, TINY, tta=tta) for m in models]
        both = whole_scan.segment_scans(models, cases, split.val, TINY, tta=tta)
        for pid in split.val:
            assert not np.allclose(alone[0][pid], alone[1][pid])  # the members differ
            np.testing.assert_allclose(both[pid], (alone[0][pid] + alone[1][pid]) / 2,
                                       rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="at least one model"):
        whole_scan.segment_scans([], cases, split.val, TINY)


@pytest.mark.slow
def test_the_hard_negative_round_adds_patches_from_training_patients_only(cohort, split,
                                                                          monkeypatch):
    cases = load_cases(cohort, [*split.train, *split.val, *split.test], None)
    segmented = []

    def bright_everywhere(model, case, config, flip=False):  # a first model that fires on
        segmented.append(case)  # every bright voxel: vessels, nodules and the chest wall
        return case.image

    monkeypatch.setattr(whole_scan, "segment_scan", bright_everywhere)
    mined = spy(monkeypatch, "false_positive_patches")
    rounds = []  # per fit: the number of training patches and the weights it left
    real_fit = whole_scan.fit_segmenter

    def fit_and_keep(model, x, *args, **kwargs):
        out = real_fit(model, x, *args, **kwargs)
        rounds.append((len(x), model.get_weights()))
        return out

    monkeypatch.setattr(whole_scan, "fit_segmenter", fit_and_keep)
    trained = train_whole_scan_segmenter(cases, split.train, TINY, seed=3)
    # every segmented and mined scan is a training patient's, each once
    assert len(segmented) == len(split.train)
    assert all(c is cases[p] for c, p in zip(segmented, split.train, strict=True))
    assert all(args[1] is cases[p].image for (args, _, _), p in zip(mined, split.train,
                                                                     strict=True))
    assert len(mined) == trained.hard_patients == len(split.train)
    assert trained.hard_patches == sum(len(x) for _, _, (x, _) in mined) == \
        TINY.n_hard * len(split.train)
    # round 2 trains on every round-1 patch plus the mined ones; round 1 keeps its own weights
    (n_first, first), (n_second, _) = rounds
    assert n_first == TINY.n_pos * sum(cases[p].nodules.any() for p in split.train) + \
        TINY.n_neg * len(split.train)
    assert n_second == n_first + trained.hard_patches
    assert len(trained.history) == TINY.epochs and len(trained.hard_history) == TINY.hard_epochs
    for kept, weights in zip(trained.round1.get_weights(), first, strict=True):
        np.testing.assert_array_equal(kept, weights)
    assert any(not np.array_equal(a, b)
               for a, b in zip(trained.round2.get_weights(), first, strict=True))


@pytest.mark.slow
def test_the_recipe_chooses_on_validation_and_scores_the_ensemble_on_test(cohort, split,
                                                                          monkeypatch):
    chooser = spy(monkeypatch, "choose_variant")
    members = spy(monkeypatch, "variant_maps")
    result = run_whole_scan_recipe(cohort, split, TINY, members=2, tta=True, seed=5,
                                   thresholds=(0.3, 0.5), min_peaks=(0.0, 0.9), keep_maps=True)
    assert result.parts == {"train": split.train, "val": split.val, "test": split.test}
    # three choices (each member alone, then the ensemble), every one from validation masks
    assert len(chooser) == 3
    val_masks = [c.nodules for c in load_cases(cohort, split.val, None).values()]
    for (_, truths, _), _, _ in chooser:
        assert len(truths) == len(split.val)
        assert all(np.array_equal(t, m) for t, m in zip(truths, val_masks, strict=True))
    # the ensemble's map of every variant and patient is the mean of the two members' maps
    first, second = (out for _, _, out in members)
    assert list(result.maps) == ["round 1", "round 1 + flip", "round 2", "round 2 + flip"]
    for name, probs in result.maps.items():
        assert sorted(probs) == sorted(split.val + split.test)
        for pid, prob in probs.items():
            np.testing.assert_allclose(prob, (first[name][pid] + second[name][pid]) / 2,
                                       rtol=0, atol=1e-7)
    assert result.members.model_seed.tolist() == [5] * 4 + [6] * 4
    assert result.choice.chosen == result.variants.sort_values(
        "val_dice", ascending=False, kind="stable").variant.iloc[0]
    assert list(result.levels.index) == LEVELS and result.levels.n.iloc[0] == len(split.test)
    assert sorted(result.scores.masks) == split.test
    assert result.training.hard_patches.ge(0).all() and len(result.training) == 2


def test_score_test_levels_carry_hd95_and_surface_dice_per_level():
    """Two test patients on a 1 mm grid: A's 4^3 nodule is predicted one slice too deep (its own
    surfaces meet within 1 mm, the shifted face is 1 mm off), B is healthy and nothing is
    predicted. HD95 and NSD are means over patients and nodules, with no pooled (global) form."""
    from lunglib.evaluation.segmentation import hausdorff95, surface_dice
    from lunglib.recipes.whole_scan import Case
    from lunglib.recipes.whole_scan_scoring import score_test

    shape = (12, 12, 12)
    nodule = np.zeros(shape, np.int32)
    nodule[4:8, 4:8, 4:8] = 1
    shifted = np.roll(nodule > 0, 1, axis=0)
    empty = np.zeros(shape, np.int32)
    blank = np.zeros(shape, np.float32)
    cases = {pid: Case(image=blank, nodules=labels, lung=np.ones(shape, bool),
                       spacing=(1.0, 1.0, 1.0), step=1)
             for pid, labels in (("A", nodule), ("B", empty))}
    probs = {"A": shifted.astype(np.float32), "B": blank}
    scores = score_test(probs, cases, ["A", "B"],
                        {"threshold": 0.5, "min_volume_mm3": 0.0, "min_peak": 0.0})
    hd_a = hausdorff95(nodule > 0, shifted, (1.0, 1.0, 1.0))
    nsd_a = surface_dice(nodule > 0, shifted, 1.0, (1.0, 1.0, 1.0))
    assert hd_a == pytest.approx(1.0) and 0.5 < nsd_a <= 1.0
    levels = scores.levels
    per_patient, pooled, per_nodule = levels.iloc[0], levels.iloc[1], levels.iloc[2]
    assert per_patient["HD95 (mm)"] == pytest.approx((hd_a + 0.0) / 2)  # B: both empty -> 0
    assert per_patient["NSD"] == pytest.approx((nsd_a + 1.0) / 2)  # B: both empty -> 1
    assert np.isnan(pooled["HD95 (mm)"]) and np.isnan(pooled["NSD"])
    assert per_nodule["HD95 (mm)"] == pytest.approx(hd_a)
    assert per_nodule["NSD"] == pytest.approx(nsd_a)


def test_cohort_split_keeps_a_saved_split_of_the_whole_cohort(cohort):
    ids = cohort.patient_ids()
    saved = Split(train=ids[:4], val=ids[4:6], test=ids[6:])
    first, kept = whole_scan.cohort_split(cohort, 6, seed=0, saved=saved)
    assert first == ids[:6]
    # the first 6 patients leave no test patient in the saved split: a new split is drawn
    assert kept == whole_scan.cohort_split(cohort, 6, seed=0)[1]
    assert kept.test and set(kept.train + kept.val + kept.test) == set(ids[:6])
    _, seven = whole_scan.cohort_split(cohort, 7, seed=0, saved=saved)
    assert (seven.train, seven.val, seven.test) == (ids[:4], ids[4:6], ids[6:7])
    _, restricted = whole_scan.cohort_split(cohort, 0, seed=0, saved=saved)
    assert (restricted.train, restricted.val, restricted.test) == (ids[:4], ids[4:6], ids[6:])
    other = Split(train=["x-1"], val=["x-2"], test=["x-3"])  # another cohort's split
    _, drawn = whole_scan.cohort_split(cohort, 0, seed=0, saved=other)
    assert set(drawn.train + drawn.val + drawn.test) == set(ids)
    assert drawn == whole_scan.cohort_split(cohort, 0, seed=0)[1]


@pytest.mark.parametrize("restore_best", [True, False])
def test_restore_best_keeps_the_epoch_of_lowest_validation_loss(restore_best: bool):
    # validation masks are the training masks inverted: the more the network learns, the worse
    # it does on validation, so the best epoch is an early one and the last is not
    from lunglib.models.unet import build_unet
    from lunglib.recipes.whole_scan import WholeScanConfig, fit_segmenter
    from lunglib.training import set_seed

    set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 16, 16, 1)).astype(np.float32)
    y = (x > 0.6).astype(np.float32)
    model = build_unet((16, 16, 1), depth=1, filters=4, batch_norm=False, learning_rate=1e-2)
    config = WholeScanConfig(context=0, batch_size=16, restore_best=restore_best)
    history = fit_segmenter(model, x, y, config, 6, validation=(x[:32], 1.0 - y[:32]))
    final = model.evaluate(x[:32], 1.0 - y[:32], verbose=0, return_dict=True)["loss"]
    best, last = history.val_loss.min(), history.val_loss.iloc[-1]
    assert history.val_loss.idxmin() < len(history) - 1  # the task makes the last epoch worse
    assert final == pytest.approx(best if restore_best else last, rel=1e-4)
