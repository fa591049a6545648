"""Grid and Random Search with keras-tuner: only the declared space, the whole grid, tidy results,
and the best configuration saved and read back as JSON."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

kt = pytest.importorskip("keras_tuner")

from lunglib.training.tune import (  # noqa: E402
    SEARCH_SPACE,
    CNNHyperModel,
    best_config,
    best_so_far,
    grid,
    load_best_config,
    run_search,
    save_best_config,
    space_size,
    validate_space,
)

TINY_SPACE = {"filters": [2, 4], "kernel_size": [3, 5], "n_conv_layers": [1], "epochs": [1]}


def _tiny_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(24, 8, 8, 1)).astype(np.float32)
    y = np.arange(24) % 2
    x[y == 1, 2:6, 2:6] += 1.0
    return (x[:16], y[:16]), (x[16:], y[16:])


@pytest.fixture(scope="module")
def grid_results(tmp_path_factory):
    train, val = _tiny_data()
    return run_search("grid", train, val, space=TINY_SPACE, seed=0,
                      directory=tmp_path_factory.mktemp("grid"))


@pytest.mark.slow
def test_grid_visits_every_configuration_once(grid_results):
    visited = {(r.filters, r.kernel_size) for r in grid_results.itertuples()}
    expected = set(itertools.product(TINY_SPACE["filters"], TINY_SPACE["kernel_size"]))
    assert visited == expected
    assert len(grid_results) == space_size(TINY_SPACE) == 4


@pytest.mark.slow
def test_results_are_tidy_and_scored_on_validation(grid_results):
    for column in ("trial", "filters", "kernel_size", "n_conv_layers", "epochs", "val_auc",
                   "val_loss", "score", "seconds"):
        assert column in grid_results.columns
    assert (grid_results["seconds"] > 0).all()
    np.testing.assert_allclose(grid_results["score"], grid_results["val_auc"])
    assert grid_results["score"].is_monotonic_decreasing  # best first
    assert not any(c.startswith("auc") or c == "loss" for c in grid_results.columns)
    curve = best_so_far(grid_results)
    assert len(curve) == 4 and curve.is_monotonic_increasing
    assert curve.iloc[-1] == grid_results["score"].max()


@pytest.mark.slow
def test_random_search_stays_in_the_declared_space(tmp_path):
    train, val = _tiny_data(1)
    space = {"filters": [2, 3, 4], "kernel_size": [3, 5], "learning_rate": [1e-3, 1e-2],
             "batch_size": [4, 8], "epochs": [1]}
    results = run_search("random", train, val, space=space, max_trials=3, seed=3,
                         directory=tmp_path)
    assert len(results) == 3
    for name, values in space.items():
        assert set(results[name]) <= set(values)
    configs = {tuple(r) for r in results[list(space)].itertuples(index=False)}
    assert len(configs) == 3  # no configuration tried twice


@pytest.mark.slow
def test_time_budget_stops_the_grid(tmp_path):
    train, val = _tiny_data(2)
    results = run_search("grid", train, val, space=TINY_SPACE, max_seconds=0.0, seed=0,
                         directory=tmp_path)
    assert len(results) == 1  # the first trial runs, then the budget is spent


def test_hypermodel_maps_choices_into_the_model():
    hm = CNNHyperModel((16, 16, 1), {"n_conv_layers": [2], "filters": [3], "kernel_size": [5]},
                       fixed={"dropout": 0.25})
    hp = kt.HyperParameters()
    model = hm.build(hp)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [3, 6]
    assert all(c.kernel_size == (5, 5) for c in convs)
    assert {layer.rate for layer in model.layers if hasattr(layer, "rate")} == {0.25}
    assert set(hp.values) == {"n_conv_layers", "filters", "kernel_size"}


def test_space_is_data_and_validated():
    assert space_size(SEARCH_SPACE) == len(grid(SEARCH_SPACE)) == 64
    assert all(set(c) == set(SEARCH_SPACE) for c in grid(SEARCH_SPACE))
    with pytest.raises(ValueError, match="unknown hyperparameter 'depth'"):
        validate_space({"depth": [1, 2]})
    with pytest.raises(ValueError, match="no candidate values"):
        validate_space({"filters": []})
    with pytest.raises(ValueError, match="repeats"):
        validate_space({"filters": [8, 8]})
    with pytest.raises(ValueError, match="both fixed and searched"):
        CNNHyperModel((16, 16, 1), {"filters": [8]}, fixed={"filters": 4})
    train, val = _tiny_data()
    with pytest.raises(ValueError, match="validation split"):
        run_search("grid", train, val, space=TINY_SPACE, objective="auc")
    with pytest.raises(ValueError, match="max_trials"):
        run_search("random", train, val, space=TINY_SPACE)


def test_best_config_json_round_trip(tmp_path):
    import pandas as pd

    results = pd.DataFrame({"trial": ["0", "1"], "filters": [8, 16], "kernel_size": [3, 5],
                            "val_auc": [0.6, 0.8], "score": [0.6, 0.8], "seconds": [1.0, 2.0]})
    results.attrs["objective"] = "val_auc"
    config = best_config(results)
    assert config == {"filters": 16, "kernel_size": 5}
    path = save_best_config(config, tmp_path / "best.json", score=0.8)
    assert load_best_config(path) == config
    (tmp_path / "bad.json").write_text('{"config": {"depth": 3}}')
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        load_best_config(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="05_tune"):
        load_best_config(tmp_path / "missing.json")
