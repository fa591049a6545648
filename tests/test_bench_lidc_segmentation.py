"""The LIDC U-Net benchmark's old-beside-new HD95 and its saved test maps, on hand-made masks
(no training, no data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lunglib.evaluation.segmentation import hausdorff95
from lunglib.evaluation.splits import Split
from lunglib.recipes.lidc_unet import LidcUnetResult, score_patches, summary_table

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_lidc_segmentation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lidc_segmentation", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def result() -> tuple[LidcUnetResult, np.ndarray, np.ndarray, np.ndarray]:
    """Three 24 x 24 patches of two patients: a 10 x 10 square, predicted exactly (U-Net) or
    with a 4-pixel stray line 11 pixels away (baseline) on patch 0, exactly elsewhere."""
    truth = np.zeros((3, 24, 24), bool)
    truth[:, 0:10, 0:10] = True
    stray = truth.copy()
    stray[0, 3:7, 20] = True
    spacing = np.array([0.5, 0.5, 0.8])
    patients = np.array(["LIDC-IDRI-0007", "LIDC-IDRI-0007", "LIDC-IDRI-0003"])
    masks = {"U-Net 2D": truth.copy(), "baseline": stray}
    scores = {name: score_patches(truth, m, patients, spacing) for name, m in masks.items()}
    run = LidcUnetResult(
        table=summary_table(scores), scores=scores,
        choices=pd.DataFrame([{"method": "U-Net 2D", "threshold": 0.6, "central": True,
                               "val_dice": 0.9}]),
        split=Split(train=[], val=[], test=sorted(set(patients))), epochs=[1], seconds=[1.0],
        test_probs={"U-Net 2D": truth.astype(np.float32)}, test_masks=masks)
    return run, truth, spacing, patients


def test_table_shows_the_pooled_hd95_beside_the_new_one(bench, result) -> None:
    run, truth, spacing, _ = result
    table = bench.with_pooled_hd95(run, truth, spacing).set_index(["method", "level"])
    cols = list(table.columns)
    assert cols[cols.index("hd95_mm") + 1] == "hd95_pooled_mm" and "nsd" in cols
    # patch 0 of the baseline: the line is 11 px = 5.5 mm off; per direction 5.5, pooled
    # 0.25 x 5.5 (tests/test_surface_metrics.py works both out); the other patches are exact
    assert hausdorff95(truth[0], run.test_masks["baseline"][0], (0.5, 0.5)) == 5.5
    np.testing.assert_allclose(table.loc[("baseline", "per_patch"), "hd95_mm"], 5.5 / 3)
    np.testing.assert_allclose(table.loc[("baseline", "per_patch"), "hd95_pooled_mm"],
                               0.25 * 5.5 / 3)
    # per patient: patient 0007's two patches averaged first, then the two patients
    np.testing.assert_allclose(table.loc[("baseline", "per_patient"), "hd95_pooled_mm"],
                               (0.25 * 5.5 / 2 + 0.0) / 2)
    # nsd at 1 mm: the 36 + 36 square pixels agree, the 4 line pixels do not
    np.testing.assert_allclose(table.loc[("baseline", "per_patch"), "nsd"],
                               (72 / 76 + 1 + 1) / 3)
    assert (table.loc["U-Net 2D", ["hd95_mm", "hd95_pooled_mm"]].to_numpy() == 0).all()


def test_saved_maps_hold_what_was_scored_and_no_patient_id(bench, result, tmp_path) -> None:
    run, truth, spacing, patients = result
    target = tmp_path / "maps" / "test_maps_seed42.npz"
    bench.save_maps(target, run, truth, spacing, patients)
    saved = np.load(target)
    np.testing.assert_array_equal(saved["truth"], truth)
    assert saved["patient"].tolist() == ["P001", "P001", "P002"]
    assert saved["methods"].tolist() == ["U-Net 2D", "baseline"]
    np.testing.assert_array_equal(saved["masks"][1], run.test_masks["baseline"])
    assert saved["prob_methods"].tolist() == ["U-Net 2D"] and saved["probs"].shape == (1, 3, 24, 24)
    assert saved["threshold"].tolist() == [0.6] and saved["central"].tolist() == [True]
    assert not any("LIDC" in str(saved[key]) for key in saved.files)


def test_members_zero_scores_only_the_baseline_on_the_seeds_test_patients(lidc_patches_npz):
    """``members=0`` trains nothing and scores the baseline on the same test split a trained
    run of that seed would use (the split depends on the seed only)."""
    from lunglib.datasets import load_patch_set
    from lunglib.evaluation.splits import patient_shuffle_split
    from lunglib.recipes.lidc_unet import run_lidc_unet, threshold_baseline

    patches = load_patch_set(lidc_patches_npz)
    result = run_lidc_unet(patches, seed=7, members=0)
    assert result.epochs == [] and result.test_probs == {} and len(result.choices) == 0
    assert list(result.test_masks) == ["baseline -400 HU, central component"]
    patients = patches.patient_groups()
    test = patient_shuffle_split(patients, seed=7).indices(patients)["test"]
    assert result.split.test == patient_shuffle_split(patients, seed=7).test
    np.testing.assert_array_equal(result.test_masks["baseline -400 HU, central component"],
                                  threshold_baseline(patches.images[test], -400.0))
    assert set(result.table.method) == {"baseline -400 HU, central component"}
    with pytest.raises(ValueError, match="members must be 0"):
        run_lidc_unet(patches, members=-1)
