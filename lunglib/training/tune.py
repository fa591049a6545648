"""Grid Search and Random Search over CNN hyperparameters with keras-tuner.

The search space is data -- a dict ``{hyperparameter: [candidate values]}`` (:data:`SEARCH_SPACE`
is the course default). :class:`CNNHyperModel` turns every list into a ``hp.Choice``, and a
:class:`LogUniform` range (e.g. for ``learning_rate``) into ``hp.Float(..., sampling="log")``:
Random Search draws from it, Grid Search refuses it (a grid needs listed values). Entries that
:func:`lunglib.models.cnn.build_cnn` takes shape the model, ``batch_size`` and ``epochs`` shape
``fit`` (that is how keras-tuner tunes them). Configurations whose convolutions and poolings
do not fit the input are never tried: Grid Search refuses a grid that holds one, Random Search
draws again. :func:`run_search` runs ``keras_tuner.GridSearch`` or ``keras_tuner.RandomSearch``,
scores every trial on the validation split only, and returns a tidy DataFrame with one row per
trial.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_tuner as kt
import numpy as np
import pandas as pd

from lunglib.io import write_text_atomic
from lunglib.models import build_cnn, feature_size
from lunglib.training.distribute import replicas
from lunglib.training.fit import class_weights

SEARCH_SPACE: dict[str, list] = {
    "n_conv_layers": [2, 3],
    "filters": [8, 16],
    "kernel_size": [3, 5],
    "pool_size": [2],
    "learning_rate": [1e-3, 3e-4],
    "batch_size": [8, 16],
    "epochs": [5, 10],
}
"""The course's default search space: 2 x 2 x 2 x 1 x 2 x 2 x 2 = 64 configurations."""

FIT_KEYS = ("batch_size", "epochs")
_BUILD_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(build_cnn).parameters.items()
    if name not in ("input_shape", "name")
}
BUILD_KEYS = tuple(_BUILD_DEFAULTS)
DEFAULT_FIT = {"batch_size": 16, "epochs": 10}
LOG_UNIFORM_KEYS = ("learning_rate", "l2")
"""Hyperparameters that may be given as a :class:`LogUniform` range (positive floats)."""


@dataclass(frozen=True)
class LogUniform:
    """A continuous range searched on a log scale: ``log(value)`` is uniform in
    ``[log(low), log(high)]``.

    A learning rate matters by its order of magnitude: between 1e-4 and 1e-2 a uniform draw
    would land above 1e-3 nine times in ten, a log-uniform draw half the time. Random Search
    draws from the range (keras-tuner's ``hp.Float(..., sampling="log")``); Grid Search cannot
    enumerate a range and refuses it.
    """

    low: float
    high: float

    def __post_init__(self):
        if not 0 < self.low < self.high:
            raise ValueError(f"LogUniform needs 0 < low < high, got low={self.low}, "
                             f"high={self.high}")

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high


Space = Mapping[str, "Sequence | LogUniform"]


def validate_space(space: Space) -> dict[str, list | LogUniform]:
    """Check a search space and return it as ``{name: list of values or LogUniform}``."""
    if not space:
        raise ValueError("the search space is empty; give {hyperparameter: [values]}")
    clean: dict[str, list | LogUniform] = {}
    for name, values in space.items():
        if name not in BUILD_KEYS and name not in FIT_KEYS:
            raise ValueError(
                f"unknown hyperparameter {name!r}; tune any of {', '.join(BUILD_KEYS + FIT_KEYS)}"
            )
        if isinstance(values, LogUniform):
            if name not in LOG_UNIFORM_KEYS:
                raise ValueError(f"{name!r} takes listed values; a LogUniform range is for "
                                 f"{' or '.join(LOG_UNIFORM_KEYS)}")
            clean[name] = values
            continue
        values = list(values) if isinstance(values, list | tuple) else [values]
        if not values:
            raise ValueError(f"hyperparameter {name!r} has no candidate values")
        if len(set(values)) != len(values):
            raise ValueError(f"hyperparameter {name!r} repeats a value: {values}")
        clean[name] = [v.item() if isinstance(v, np.generic) else v for v in values]
    return clean


def _listed(space: Space) -> dict[str, list]:
    """The space, refusing ranges: only listed values make a grid."""
    space = validate_space(space)
    for name, values in space.items():
        if isinstance(values, LogUniform):
            raise ValueError(
                f"{name!r} is a range, {values}: a grid needs listed values, e.g. "
                f"[{values.low:g}, {values.high:g}]; Random Search draws from ranges"
            )
    return space


def space_size(space: Space) -> int:
    """Number of configurations in the grid (a space with a range has no grid: ValueError)."""
    return math.prod(len(v) for v in _listed(space).values())


def grid(space: Space) -> list[dict]:
    """Every configuration of the space, as dicts."""
    space = _listed(space)
    return [dict(zip(space, combo, strict=True)) for combo in itertools.product(*space.values())]


def fits(input_shape: Sequence[int], config: Mapping) -> bool:
    """Whether :func:`build_cnn` can build ``config`` for ``input_shape``: every block's
    convolution and pooling must leave at least one voxel on every axis (``n - k + 1`` with
    ``padding="valid"``, then ``// pool_size``). Missing arguments take ``build_cnn``'s defaults.
    """
    args = {**_BUILD_DEFAULTS, **{k: v for k, v in config.items() if k in BUILD_KEYS}}
    sizes = feature_size(input_shape, args["n_conv_layers"], args["kernel_size"],
                         args["pool_size"], args["padding"])
    return min(sizes) >= 1


class CNNHyperModel(kt.HyperModel):
    """:func:`lunglib.models.cnn.build_cnn` with hyperparameters drawn from a declared space.

    Parameters
    ----------
    input_shape
        Model input shape (see :func:`build_cnn`).
    space
        ``{hyperparameter: [values] or LogUniform(low, high)}``; keys are ``build_cnn``
        arguments, ``batch_size`` or ``epochs``.
    fixed
        ``build_cnn`` arguments held constant (e.g. ``{"dropout": 0.3}``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        space: Space | None = None,
        fixed: Mapping | None = None,
        name: str = "cnn_hypermodel",
    ):
        super().__init__(name=name, tunable=True)
        self.input_shape = tuple(input_shape)
        self.space = validate_space(SEARCH_SPACE if space is None else space)
        self.fixed = dict(fixed or {})
        overlap = set(self.fixed) & set(self.space)
        if overlap:
            raise ValueError(f"{sorted(overlap)} are both fixed and searched; pick one")
        unknown = set(self.fixed) - set(BUILD_KEYS) - set(FIT_KEYS)
        if unknown:
            raise ValueError(f"unknown fixed argument(s) {sorted(unknown)}")
        self.seconds: dict[str, float] = {}
        self.replicas = 1  # set by run_search under a tf.distribute strategy

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        # every hyperparameter is declared here, fit-time ones too, so the grid sees the full space
        values = {
            name: hp.Float(name, choices.low, choices.high, sampling="log")
            if isinstance(choices, LogUniform) else hp.Choice(name, choices)
            for name, choices in self.space.items()
        }
        kwargs = {k: v for k, v in {**self.fixed, **values}.items() if k in BUILD_KEYS}
        return build_cnn(self.input_shape, **kwargs)

    def fits(self, values: Mapping) -> bool:
        """Whether the configuration ``values`` (with the fixed arguments) fits the input."""
        return fits(self.input_shape, {**self.fixed, **values})

    def _fit_value(self, hp: kt.HyperParameters, key: str):
        if key in self.space:
            return hp.get(key)
        return self.fixed.get(key, DEFAULT_FIT[key])

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):
        # the searched batch size is per replica (lunglib.training.distribute)
        kwargs["batch_size"] = self._fit_value(hp, "batch_size") * self.replicas
        kwargs["epochs"] = self._fit_value(hp, "epochs")
        return model.fit(*args, **kwargs)


class _Timed:
    """Mixin for keras-tuner tuners: seconds per trial and an overall time budget."""

    def _setup_budget(self, max_seconds: float | None) -> None:
        self.max_seconds = max_seconds
        self.trial_seconds: dict[str, float] = {}
        self._trial_start: dict[str, float] = {}
        self._search_start = time.perf_counter()

    def on_search_begin(self):
        self._search_start = time.perf_counter()
        super().on_search_begin()

    def pre_create_trial(self):
        # Over budget: cap max_trials at the trials already made, and the oracle stops the search.
        elapsed = time.perf_counter() - self._search_start
        if self.max_seconds is not None and elapsed > self.max_seconds:
            self.oracle.max_trials = len(self.oracle.trials)
        super().pre_create_trial()

    def on_trial_begin(self, trial):
        self._trial_start[trial.trial_id] = time.perf_counter()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        self.trial_seconds[trial.trial_id] = time.perf_counter() - self._trial_start[trial.trial_id]
        super().on_trial_end(trial)


class TimedGridSearch(_Timed, kt.GridSearch):
    """``keras_tuner.GridSearch`` that records seconds per trial and honours ``max_seconds``."""

    def __init__(self, *args, max_seconds: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_budget(max_seconds)


class FittingRandomSearchOracle(kt.oracles.RandomSearchOracle):
    """Random Search's oracle, drawing again when a configuration does not fit the input.

    keras-tuner redraws a configuration it has tried before (up to its collision limit); a
    configuration that :meth:`CNNHyperModel.fits` rejects is redrawn the same way, so no
    trial of the budget is spent on a network that cannot be built.
    """

    def __init__(self, *args, hypermodel: CNNHyperModel | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hypermodel = hypermodel

    def _duplicate(self, values):
        if self.hypermodel is not None and not self.hypermodel.fits(values):
            return True
        return super()._duplicate(values)


class TimedRandomSearch(_Timed, kt.Tuner):
    """``keras_tuner.RandomSearch`` that records seconds per trial, honours ``max_seconds`` and
    draws only configurations that fit (:class:`FittingRandomSearchOracle`)."""

    def __init__(self, hypermodel: CNNHyperModel, objective, max_trials: int, seed: int,
                 max_consecutive_failed_trials: int = 3, max_seconds: float | None = None,
                 **kwargs):
        oracle = FittingRandomSearchOracle(
            objective=objective, max_trials=max_trials, seed=seed, hypermodel=hypermodel,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        super().__init__(oracle, hypermodel, **kwargs)
        self._setup_budget(max_seconds)


def make_tuner(
    kind: str,
    hypermodel: CNNHyperModel,
    directory: str | os.PathLike,
    max_trials: int | None = None,
    max_seconds: float | None = None,
    objective: str = "val_auc",
    seed: int = 42,
    project_name: str | None = None,
    strategy=None,
):
    """A fresh (``overwrite=True``) grid or random tuner scoring trials on ``objective``.

    With a ``tf.distribute`` ``strategy``, keras-tuner builds and fits every trial under it
    (its ``distribution_strategy``); the searched ``batch_size`` is per replica. For a search
    over several hosts, keras-tuner's own chief/worker mode runs one oracle (the chief, with the
    ``KERASTUNER_TUNER_ID=chief``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``
    environment variables) and any number of workers that each train trials.

    Grid Search refuses a space with a :class:`LogUniform` range and a grid holding a
    configuration that does not fit the model's input (it would fail mid-search).
    """
    if kind not in ("grid", "random"):
        raise ValueError(f"kind must be 'grid' or 'random', got {kind!r}")
    if kind == "random" and not max_trials:
        raise ValueError("random search needs max_trials (its budget)")
    if kind == "grid":
        misfit = [c for c in grid(hypermodel.space) if not hypermodel.fits(c)]
        if misfit:
            raise ValueError(
                f"{len(misfit)} configuration(s) of the grid do not fit input "
                f"{hypermodel.input_shape}, e.g. {misfit[0]}: each block leaves (n - k + 1) // "
                "pool_size voxels per axis; use smaller kernels or pools, fewer layers, or "
                "padding='same'"
            )
    direction = "min" if "loss" in objective else "max"
    cls = TimedGridSearch if kind == "grid" else TimedRandomSearch
    return cls(
        hypermodel=hypermodel,
        objective=kt.Objective(objective, direction=direction),
        max_trials=max_trials,
        seed=seed,
        directory=str(directory),
        project_name=project_name or f"{kind}_search",
        overwrite=True,
        max_seconds=max_seconds,
        max_consecutive_failed_trials=1,
        distribution_strategy=strategy,
    )


def results_frame(tuner, objective: str = "val_auc") -> pd.DataFrame:
    """One row per trial: trial id, every hyperparameter, validation metrics, seconds."""
    rows = []
    names = list(tuner.hypermodel.space)
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        row: dict = {"trial": trial_id, "status": str(trial.status)}
        row.update({n: trial.hyperparameters.values.get(n) for n in names})
        for metric in sorted(trial.metrics.metrics):
            if metric.startswith("val_"):
                row[metric] = trial.metrics.get_best_value(metric)
        row["score"] = trial.score
        row["seconds"] = tuner.trial_seconds.get(trial_id, np.nan)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["objective"] = objective
    return frame


def run_search(
    kind: str,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    space: Space | None = None,
    max_trials: int | None = None,
    max_seconds: float | None = None,
    directory: str | os.PathLike | None = None,
    seed: int = 42,
    objective: str = "val_auc",
    fixed: Mapping | None = None,
    class_weight: str | dict | None = "balanced",
    patience: int | None = None,
    strategy=None,
) -> pd.DataFrame:
    """Run Grid Search or Random Search; every trial is scored on the validation split.

    Parameters
    ----------
    kind
        ``"grid"`` (every configuration, up to ``max_trials``) or ``"random"`` (``max_trials``
        configurations drawn from the space).
    train, val
        ``(x, y)`` arrays of the training and validation splits (patient-level).
    space
        ``{hyperparameter: [values] or LogUniform(low, high)}`` (ranges for ``"random"``
        only); default :data:`SEARCH_SPACE`.
    max_trials, max_seconds
        Budget: stop after this many trials or once this many seconds have passed (the running
        trial finishes).
    directory
        Where keras-tuner keeps its trial files; a temporary folder by default.
    seed
        Seeds the random search and the weights of every trial.
    objective
        Validation metric to optimise, e.g. ``"val_auc"`` or ``"val_loss"``.
    fixed
        ``build_cnn`` arguments held constant.
    class_weight
        ``"balanced"``, a dict or None (as in :func:`lunglib.training.train_model`).
    patience
        Early stopping on ``objective`` inside each trial; None trains every epoch.
    strategy
        A ``tf.distribute`` strategy for every trial (:func:`make_tuner`); None: one device.

    Returns
    -------
    pandas.DataFrame
        One row per trial, sorted best first; ``frame.attrs["tuner"]`` holds the tuner.
    """
    if not objective.startswith("val_"):
        raise ValueError(f"trials are scored on the validation split: objective must start with "
                         f"'val_', got {objective!r}")
    x_train, y_train = train
    x_val, y_val = val
    if directory is None:
        directory = tempfile.mkdtemp(prefix="lunglib_tune_")
    keras.utils.set_random_seed(seed)
    hypermodel = CNNHyperModel(x_train.shape[1:], space, fixed)
    hypermodel.replicas = replicas(strategy)
    tuner = make_tuner(kind, hypermodel, directory, max_trials, max_seconds, objective, seed,
                       strategy=strategy)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be 'balanced', a dict or None, got {class_weight}")
        class_weight = class_weights(y_train)
    callbacks = []
    if patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=objective,
                mode="min" if "loss" in objective else "max",
                patience=patience,
                restore_best_weights=True,
            )
        )
    tuner.search(
        np.asarray(x_train, dtype=np.float32),
        np.asarray(y_train, dtype=np.float32),
        validation_data=(np.asarray(x_val, np.float32), np.asarray(y_val, np.float32)),
        class_weight=class_weight,
        callbacks=callbacks,
        verbose=0,
    )
    frame = results_frame(tuner, objective)
    ascending = "loss" in objective
    frame = frame.sort_values("score", ascending=ascending, na_position="last")
    frame = frame.reset_index(drop=True)
    frame.attrs["tuner"] = tuner
    frame.attrs["kind"] = kind
    return frame


def best_config(results: pd.DataFrame) -> dict:
    """The hyperparameters of the best-scoring trial (first row of :func:`run_search`)."""
    done = results.dropna(subset=["score"])
    if done.empty:
        raise ValueError("no trial finished with a score; check the search's data and budget")
    objective = results.attrs.get("objective", "val_auc")
    best = done.sort_values("score", ascending="loss" in objective).iloc[0]
    names = [c for c in results.columns if c in BUILD_KEYS or c in FIT_KEYS]
    return {n: (best[n].item() if isinstance(best[n], np.generic) else best[n]) for n in names}


def save_best_config(config: Mapping, path: str | os.PathLike, **extra) -> Path:
    """Write a configuration (plus e.g. ``score=...``) as JSON, atomically."""
    payload = {"config": dict(config), **extra}
    return write_text_atomic(path, json.dumps(payload, indent=1, default=float))


def load_best_config(path: str | os.PathLike) -> dict:
    """Read the configuration written by :func:`save_best_config`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist; run notebook 05_tune (or run_search) first")
    try:
        payload = json.loads(path.read_text())
        config = payload["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a saved configuration: {err}") from err
    validate_space({k: [v] for k, v in config.items()})
    return config


def best_so_far(results: pd.DataFrame) -> pd.Series:
    """Best validation score after 1, 2, ... trials (in the order they ran)."""
    ordered = results.sort_values("trial")["score"].astype(float)
    if "loss" in results.attrs.get("objective", "val_auc"):
        return ordered.cummin().reset_index(drop=True)
    return ordered.cummax().reset_index(drop=True)
