"""Fit a compiled Keras classifier with the course's safeguards against overfitting, and predict.

:func:`train_model` takes numpy arrays or ``tf.data`` datasets, augments the training split only
(when given an augmentation function), weights classes for imbalanced labels, stops early on the
validation split and restores the best weights, and writes a checkpoint, a CSV log and
(optionally) TensorBoard logs to ``output_dir``. Call :func:`set_seed` first for a reproducible
run. :func:`predict_proba` gives the fitted model's probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from lunglib.training.data import Data, to_dataset
from lunglib.training.distribute import check_built_under, global_batch_size


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and TensorFlow; make TensorFlow ops deterministic where it can.

    ``deterministic=True`` calls ``tf.config.experimental.enable_op_determinism()``; ops without
    a deterministic implementation (a few GPU kernels) then raise instead of varying silently.
    """
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def class_weights(labels: Sequence) -> dict[int, float]:
    """``{class: weight}`` inversely proportional to class frequency (sklearn's "balanced")."""
    y = np.asarray(labels).astype(int).ravel()
    classes = np.unique(y)
    weights = compute_class_weight("balanced", classes=classes, y=y)
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}


def _labels_of(dataset: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([np.asarray(y).ravel() for _, y in dataset.as_numpy_iterator()])


def _mode_for(monitor: str) -> str:
    return "max" if any(k in monitor for k in ("auc", "acc", "precision", "recall")) else "min"


def train_model(
    model: keras.Model,
    train_data: Data,
    val_data: Data,
    epochs: int = 20,
    patience: int | None = 5,
    output_dir: str | os.PathLike | None = None,
    class_weight: str | dict | None = "balanced",
    batch_size: int = 16,
    monitor: str = "val_loss",
    augment: Callable | None = None,
    tensorboard: bool = False,
    seed: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
    strategy: tf.distribute.Strategy | None = None,
) -> keras.callbacks.History:
    """Fit ``model`` with early stopping on the validation split, restoring the best weights.

    Parameters
    ----------
    model
        A compiled model, e.g. from :func:`lunglib.models.build_cnn`.
    train_data, val_data
        ``(x, y)`` arrays or batched ``tf.data.Dataset`` of ``(x, y)``. Arrays are batched with
        ``batch_size`` per replica; the training arrays are shuffled (seeded) and augmented.
        Datasets are used as given (batch them by the global batch size).
    epochs, patience
        At most ``epochs`` passes; stop after ``patience`` epochs without improvement of
        ``monitor``. The best epoch's weights are put back at the end, whether training stopped
        early or ran all ``epochs``. ``patience=None`` switches early stopping off: every epoch
        runs and the model keeps the last epoch's weights (a baseline to compare against).
    output_dir
        Where ``best.keras`` (checkpoint), ``history.csv`` and ``tensorboard/`` go; None writes
        nothing.
    class_weight
        ``"balanced"`` (weights from the training labels), a ``{class: weight}`` dict or None.
    monitor
        Validation quantity for early stopping and checkpointing, e.g. ``"val_loss"`` or
        ``"val_auc"``.
    augment
        Function ``(x, y) -> (x, y)`` on single examples, applied to training arrays only.
    tensorboard
        Also write TensorBoard logs.
    seed
        Shuffle seed for training arrays.
    callbacks
        Extra Keras callbacks.
    strategy
        A ``tf.distribute`` strategy the model was built and compiled under
        (:func:`lunglib.training.distribute.get_strategy`); each step then takes ``batch_size``
        examples per replica. None: TensorFlow's default strategy.

    Returns
    -------
    keras.callbacks.History
        ``history.history`` holds per-epoch metrics; the model holds the best weights. Two
        attributes say what early stopping did, as 0-based epoch indices like ``history.epoch``
        (add 1 for Keras' "Epoch N" counting): ``history.stopped_epoch``, the last epoch run when
        early stopping ended training, None when every epoch ran; ``history.best_epoch``, the
        epoch whose weights the model holds at the end (the best by ``monitor``), None with
        ``patience=None`` (then the last epoch's weights are kept).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if patience is not None and patience < 0:
        raise ValueError(f"patience must be >= 0 or None, got {patience}")
    if isinstance(train_data, tf.data.Dataset) and augment is not None:
        raise ValueError(
            "augment applies to training arrays only; map it into your training dataset instead"
        )
    check_built_under(model, strategy)
    batch_size = global_batch_size(batch_size, strategy)
    train_ds = to_dataset(train_data, batch_size, shuffle=True, augment=augment, seed=seed)
    val_ds = to_dataset(val_data, batch_size)

    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be 'balanced', a dict or None, got {class_weight}")
        y_train = train_data[1] if isinstance(train_data, tuple) else _labels_of(train_ds)
        class_weight = class_weights(y_train)

    cbs: list[keras.callbacks.Callback] = []
    stopper = None
    if patience is not None:
        stopper = keras.callbacks.EarlyStopping(
            monitor=monitor,
            mode=_mode_for(monitor),
            patience=patience,
            restore_best_weights=True,
        )
        cbs.append(stopper)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        cbs.append(
            keras.callbacks.ModelCheckpoint(
                out / "best.keras", monitor=monitor, mode=_mode_for(monitor), save_best_only=True
            )
        )
        cbs.append(keras.callbacks.CSVLogger(str(out / "history.csv")))
        if tensorboard:
            cbs.append(keras.callbacks.TensorBoard(log_dir=str(out / "tensorboard")))
    cbs.extend(callbacks)
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        class_weight=class_weight,
        callbacks=cbs,
        shuffle=False,  # the training dataset is already shuffled (seeded) above
        verbose=verbose,
    )
    # Keras keeps these on the callback (stopped_epoch 0 = "did not stop"); put them where the
    # caller looks, on the History it gets back
    stopped = stopper is not None and stopper.stopped_epoch > 0
    history.stopped_epoch = int(stopper.stopped_epoch) if stopped else None
    history.best_epoch = int(stopper.best_epoch) if stopper is not None else None
    return history


def predict_proba(model: keras.Model, data: Data, batch_size: int = 64) -> np.ndarray:
    """Predicted probability of the positive class (sigmoid) or of every class (softmax).

    ``data`` is an ``(n, ...)`` input array, ``(x, y)`` arrays (``y`` is ignored) or a batched
    ``tf.data.Dataset``. It lives with training, not inference, because
    :func:`lunglib.training.hard_negatives` scores windows with it while training.
    """
    ds = to_dataset(data, batch_size) if isinstance(data, tuple) else data
    if isinstance(data, np.ndarray):
        ds = tf.data.Dataset.from_tensor_slices(data.astype(np.float32)).batch(batch_size)
    p = model.predict(ds, verbose=0)
    return p[:, 0] if p.shape[-1] == 1 else p
