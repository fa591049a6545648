"""The LIDC malignancy evaluation levels and the benchmark's tables on hand-made folds (no
training, no data)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lunglib.recipes.malignancy_report import (
    compare_with_reference,
    consensus_label,
    fold_metrics,
    level_view,
    summarize_malignancy,
)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_lidc_malignancy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lidc_malignancy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def rows() -> pd.DataFrame:
    # six outlines of five nodules; nodule "a" has two outlines, the second rated 3 (y = -1)
    return pd.DataFrame({
        "y": [1, -1, 0, 0, 1, -1],
        "nodule": ["a", "a", "b", "c", "d", "e"],
        "reader_mean": [4.5, 4.5, 1.5, 3.0, 4.0, 2.0],
        "patient": ["p1", "p1", "p2", "p3", "p4", "p5"],
        "p": [0.9, 0.5, 0.2, 0.4, 0.7, 0.3],
    })


def test_outline_level_is_the_rated_predictions(rows) -> None:
    y, p, patients = level_view(rows, "outline")
    np.testing.assert_array_equal(y, [1, 0, 0, 1])
    np.testing.assert_allclose(p, [0.9, 0.2, 0.4, 0.7])
    np.testing.assert_array_equal(patients, ["p1", "p2", "p3", "p4"])


def test_aggregated_outline_gets_its_nodule_mean_including_rating_3_views(rows) -> None:
    y, p, _ = level_view(rows, "outline-agg")
    np.testing.assert_array_equal(y, [1, 0, 0, 1])  # the reader's own labels are kept
    np.testing.assert_allclose(p, [(0.9 + 0.5) / 2, 0.2, 0.4, 0.7])


def test_nodule_level_one_row_per_nodule_with_the_consensus_label(rows) -> None:
    y, p, patients = level_view(rows, "nodule")
    # nodule "c" (readers' mean 3.0) is left out; "e" (mean 2.0) is benign although its only
    # outline was rated 3; "d" (mean 4.0) is malignant
    np.testing.assert_array_equal(y, [1, 0, 1, 0])
    np.testing.assert_allclose(p, [0.7, 0.2, 0.7, 0.3])
    np.testing.assert_array_equal(patients, ["p1", "p2", "p4", "p5"])


def test_consensus_label_bounds() -> None:
    np.testing.assert_array_equal(
        consensus_label(np.array([1.0, 2.0, 2.5, 3.5, 4.0, 5.0])), [0, 0, -1, -1, 1, 1]
    )


def _split(method: str, fold: int, split: str, y: list[int], p: list[float]) -> pd.DataFrame:
    n = len(y)
    return pd.DataFrame({
        "method": method, "fold": fold, "split": split, "row": np.arange(n) + 10 * fold,
        "patient": [f"{split}{fold}-{i}" for i in range(n)],
        "nodule": [f"{split}{fold}-n{i}" for i in range(n)], "y": y,
        "reader_mean": [4.5 if v == 1 else 1.5 for v in y], "p": p, "seconds": 2.0,
    })


@pytest.fixture()
def table() -> pd.DataFrame:
    parts = []
    for fold in (0, 1):
        for m, test_p in (("area-logreg", [0.4, 0.3, 0.8, 0.5]),
                          ("m", [0.25, 0.35, 0.8, 0.5])):
            # validation: 3 of 4 correct at 0.3, 0.5 and 0.9 -> the lowest, 0.3, is chosen
            parts.append(_split(m, fold, "val", [0, 1, 0, 1], [0.2, 0.3, 0.6, 0.9]))
            parts.append(_split(m, fold, "test", [0, 1, 1, 0], test_p))
    return pd.concat(parts, ignore_index=True)


def test_thresholds_from_validation_and_test_metrics_by_hand(table) -> None:
    per_fold = fold_metrics(table).set_index(["method", "fold"])
    assert (per_fold["threshold"] == 0.3).all()
    # m's test predictions at 0.3: 0 1 1 1 against 0 1 1 0; ROC-AUC: 3 of 4 pairs ordered
    m = per_fold.loc[("m", 0)]
    assert (m.accuracy, m.precision, m.recall, m.roc_auc) == pytest.approx((0.75, 2 / 3, 1, 0.75))
    assert m.f1 == pytest.approx(0.8)
    summary = summarize_malignancy(table).set_index("method")
    assert summary.loc["m", "accuracy"] == pytest.approx(0.75)
    assert summary.loc["m", "accuracy_std"] == 0
    assert (summary.loc["m", "n"], summary.loc["m", "folds"]) == (8, 2)
    assert summary.loc["m", "seconds"] == pytest.approx(4.0)


def test_comparison_with_the_size_floor(table) -> None:
    # area-logreg orders the test fold 0.4 0.3 0.8 0.5 for labels 0 1 1 0: 2 of 4 pairs
    paired = compare_with_reference(table, n_boot=50).set_index("method")
    assert list(paired.index) == ["m"]
    assert paired.loc["m", "fold_differences"] == pytest.approx([0.25, 0.25])
    assert (paired.loc["m", "folds_won"], paired.loc["m", "folds"]) == (2, 2)
    assert paired.loc["m", "difference"] == pytest.approx(0.25)
    assert paired.loc["m", "ci_low"] <= 0.25 <= paired.loc["m", "ci_high"]


def test_benchmark_prints_and_writes_the_tables_of_saved_predictions(
        bench, table, tmp_path, capsys) -> None:
    table.to_csv(tmp_path / "preds.csv", index=False)
    bench.main(["--merge", str(tmp_path / "preds.csv"), "--methods", "area-logreg,m",
                "--n-boot", "20", "--json", str(tmp_path / "tables.json")])
    out = capsys.readouterr().out
    assert ("| m | 0.750 +- 0.000 | 0.667 +- 0.000 | 1.000 +- 0.000 | 0.800 +- 0.000 | "
            "0.750 +- 0.000 | 0.750 | 8 | 2 | 4 |") in out
    assert "| m | +0.250 +0.250 | 2/2 | +0.250 [" in out
    report = json.loads((tmp_path / "tables.json").read_text())
    assert set(report) == {"outline", "nodule"}
    assert [r["method"] for r in report["outline"]["summary"]] == ["area-logreg", "m"]
    assert report["outline"]["vs_area_logreg"][0]["difference"] == pytest.approx(0.25)
