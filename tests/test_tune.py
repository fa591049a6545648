"""Grid and Random Search with keras-tuner: only the declared space, the whole grid, tidy results,
log-uniform learning-rate ranges for Random Search (refused by Grid Search), only configurations
that fit the input, and the best configuration saved and read back as JSON."""

from __future__ import annotations

import itertools

import keras_tuner as kt
import numpy as np
import pytest

from lunglib.training.tune import (
    SEARCH_SPACE,
    CNNHyperModel,
    LogUniform,
    best_config,
    best_so_far,
    fits,
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


def test_learning_rate_batch_size_and_epochs_reach_the_optimizer_and_fit():
    # not only recorded: the chosen learning rate is the optimizer's, and fit runs the chosen
    # number of epochs with the chosen batch size (16 samples / 4 per batch = 4 steps)
    space = {"n_conv_layers": [1], "filters": [2], "learning_rate": [0.0123],
             "batch_size": [4], "epochs": [3]}
    hm = CNNHyperModel((8, 8, 1), space)
    hp = kt.HyperParameters()
    model = hm.build(hp)
    rate = model.optimizer.learning_rate
    assert float(np.asarray(rate.value if hasattr(rate, "value") else rate)) == \
        pytest.approx(0.0123)
    (x, y), _ = _tiny_data()
    history = hm.fit(hp, model, x, y, verbose=0)
    assert len(history.epoch) == 3 and history.params["steps"] == 4
    # and what is not searched comes from fixed, then the defaults
    fixed = CNNHyperModel((8, 8, 1), {"filters": [2]}, fixed={"epochs": 2})
    hp2 = kt.HyperParameters()
    history = fixed.fit(hp2, fixed.build(hp2), x, y, verbose=0)
    assert len(history.epoch) == 2 and history.params["steps"] == 1  # default batch 16


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


def test_log_uniform_range_is_validated_and_refused_by_the_grid():
    rate = LogUniform(1e-4, 1e-2)
    assert 1e-3 in rate and 1e-4 in rate and 2e-2 not in rate and "x" not in rate
    for low, high in ((1e-2, 1e-4), (0.0, 1e-2), (1e-3, 1e-3)):
        with pytest.raises(ValueError, match="0 < low < high"):
            LogUniform(low, high)
    with pytest.raises(ValueError, match="'filters' takes listed values"):
        validate_space({"filters": LogUniform(4, 16)})
    space = {"filters": [2, 4], "learning_rate": rate}
    assert validate_space(space)["learning_rate"] is rate
    for count in (space_size, grid):
        with pytest.raises(ValueError, match="'learning_rate' is a range.*Random Search draws"):
            count(space)
    train, val = _tiny_data()
    with pytest.raises(ValueError, match="a grid needs listed values"):
        run_search("grid", train, val, space=space)


def test_hypermodel_declares_the_range_as_a_log_float():
    hm = CNNHyperModel((8, 8, 1), {"n_conv_layers": [1], "learning_rate": LogUniform(1e-4, 1e-2)})
    hp = kt.HyperParameters()
    model = hm.build(hp)
    (rate,) = [h for h in hp.space if h.name == "learning_rate"]
    assert isinstance(rate, kt.engine.hyperparameters.Float)
    assert (rate.min_value, rate.max_value, rate.sampling) == (1e-4, 1e-2, "log")
    draws = np.array([rate.random_sample(seed) for seed in range(2000)])
    assert draws.min() >= 1e-4 and draws.max() <= 1e-2
    # log-uniform: half the draws below the geometric mean 1e-3 (uniform would give about 9 %)
    assert 0.45 < np.mean(draws < 1e-3) < 0.55
    assert float(model.optimizer.learning_rate) == pytest.approx(rate.default)


def test_fits_follows_the_n_minus_k_plus_one_rule():
    cube = (10, 18, 18, 1)
    assert fits(cube, {"n_conv_layers": 2, "kernel_size": 3, "pool_size": 2, "padding": "valid"})
    # z: 10 - 5 + 1 = 6, // 2 = 3, 3 - 5 + 1 < 1: the second block does not fit
    assert not fits(cube, {"n_conv_layers": 2, "kernel_size": 5, "pool_size": 2,
                           "padding": "valid"})
    assert fits(cube, {"n_conv_layers": 1, "kernel_size": 5, "pool_size": 3, "padding": "valid"})
    assert not fits(cube, {"n_conv_layers": 2, "kernel_size": 3, "pool_size": 3,
                           "padding": "valid"})
    assert fits(cube, {"n_conv_layers": 2, "kernel_size": 5, "pool_size": 2, "padding": "same"})
    assert not fits(cube, {"n_conv_layers": 4, "padding": "same"})  # 10 // 2**4 = 0
    hm = CNNHyperModel(cube, {"kernel_size": [3, 5], "n_conv_layers": [2]},
                       fixed={"padding": "valid"})
    assert [hm.fits(c) for c in grid(hm.space)] == [True, False]
    train, val = _tiny_data()
    # 8 x 8: kernel 3 leaves 6, pooled 3, then 1, pooled 0; kernel 5 leaves 4, 2, then nothing
    with pytest.raises(ValueError, match="2 configuration.*do not fit input \\(8, 8, 1\\)"):
        run_search("grid", train, val, space={"kernel_size": [3, 5], "n_conv_layers": [1, 2]},
                   fixed={"padding": "valid", "filters": 2})


@pytest.mark.slow
def test_random_search_draws_the_range_and_only_configurations_that_fit(tmp_path):
    train, val = _tiny_data(3)
    # on 8 x 8 inputs with "valid" padding two blocks never fit, and kernel 5 fits only one block
    space = {"n_conv_layers": [1, 2], "kernel_size": [3, 5],
             "learning_rate": LogUniform(1e-4, 1e-2), "epochs": [1]}
    results = run_search("random", train, val, space=space, max_trials=3, seed=1,
                         fixed={"padding": "valid", "filters": 2}, directory=tmp_path)
    assert len(results) == 3 and results["score"].notna().all()
    assert set(results["n_conv_layers"]) == {1}
    assert all(rate in space["learning_rate"] for rate in results["learning_rate"])
    assert results["learning_rate"].nunique() == 3
