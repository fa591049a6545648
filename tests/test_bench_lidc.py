"""The LIDC malignancy benchmark's evaluation levels on a hand-made fold (no training, no data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_lidc_malignancy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_lidc_malignancy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def saved() -> dict[str, np.ndarray]:
    # six outlines of five nodules; nodule "a" has two outlines, the second rated 3 (y = -1)
    return {
        "y": np.array([1, -1, 0, 0, 1, -1]),
        "nodule": np.array(["a", "a", "b", "c", "d", "e"]),
        "reader_mean": np.array([4.5, 4.5, 1.5, 3.0, 4.0, 2.0]),
        "patient": np.array(["p1", "p1", "p2", "p3", "p4", "p5"]),
        "fold0/test_all_index": np.arange(6),
        "fold0/test_index": np.array([0, 2, 3, 4]),
        "m/fold0/test_all": np.array([0.9, 0.5, 0.2, 0.4, 0.7, 0.3]),
        "m/fold0/test": np.array([0.9, 0.2, 0.4, 0.7]),
    }


def test_outline_level_is_the_saved_rated_predictions(bench, saved) -> None:
    y, p, patients = bench.split_view(saved, "m", "fold0", "test", "outline")
    np.testing.assert_array_equal(y, [1, 0, 0, 1])
    np.testing.assert_allclose(p, [0.9, 0.2, 0.4, 0.7])
    np.testing.assert_array_equal(patients, ["p1", "p2", "p3", "p4"])


def test_aggregated_outline_gets_its_nodule_mean_including_rating_3_views(bench, saved) -> None:
    y, p, _ = bench.split_view(saved, "m", "fold0", "test", "outline-agg")
    np.testing.assert_array_equal(y, [1, 0, 0, 1])  # the reader's own labels are kept
    np.testing.assert_allclose(p, [(0.9 + 0.5) / 2, 0.2, 0.4, 0.7])


def test_nodule_level_one_row_per_nodule_with_the_consensus_label(bench, saved) -> None:
    y, p, patients = bench.split_view(saved, "m", "fold0", "test", "nodule")
    # nodule "c" (readers' mean 3.0) is left out; "e" (mean 2.0) is benign although its only
    # outline was rated 3; "d" (mean 4.0) is malignant
    np.testing.assert_array_equal(y, [1, 0, 1, 0])
    np.testing.assert_allclose(p, [0.7, 0.2, 0.7, 0.3])
    np.testing.assert_array_equal(patients, ["p1", "p2", "p4", "p5"])


def test_consensus_label_bounds(bench) -> None:
    np.testing.assert_array_equal(
        bench.consensus_label(np.array([1.0, 2.0, 2.5, 3.5, 4.0, 5.0])), [0, 0, -1, -1, 1, 1]
    )
