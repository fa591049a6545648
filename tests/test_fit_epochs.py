"""train_model says at which epoch early stopping ended training and whose weights it kept.

Notebook 04 prints both for every run; these tests hold the two attributes to what the model
really holds at the end.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_train import RecordWeights  # noqa: E402  -- the weights after every epoch

from lunglib.models.cnn import build_cnn
from lunglib.training import set_seed, train_model


def _task(inverted_validation: bool):
    """A learnable rule; with ``inverted_validation`` the validation labels contradict it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 6, 6, 1)).astype(np.float32)
    y = (x[:, :3].mean(axis=(1, 2, 3)) > 0).astype(np.float32)
    y_val = 1.0 - y[:24] if inverted_validation else y[:24]
    return (x, y), (x[:24], y_val)


def _fit(task, epochs, patience):
    set_seed(0)
    model = build_cnn((6, 6, 1), n_conv_layers=1, filters=4, dense_units=8, dropout=0.0,
                      l2=0.0, learning_rate=1e-2)
    recorder = RecordWeights()
    history = train_model(model, *task, epochs=epochs, patience=patience, seed=0,
                          callbacks=[recorder])
    return model, history, recorder


def _holds(model, weights):
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True))


def test_stopped_and_best_epoch_when_early_stopping_acts():
    model, history, recorder = _fit(_task(inverted_validation=True), epochs=30, patience=2)
    val_loss = history.history["val_loss"]
    assert len(val_loss) < 30
    assert history.stopped_epoch == len(val_loss) - 1 == history.epoch[-1]
    assert history.best_epoch == int(np.argmin(val_loss)) == history.stopped_epoch - 2
    assert _holds(model, recorder.weights[history.best_epoch])


def test_no_stop_still_restores_the_best_epoch():
    model, history, recorder = _fit(_task(inverted_validation=False), epochs=4, patience=10)
    val_loss = history.history["val_loss"]
    assert len(val_loss) == 4
    assert history.stopped_epoch is None
    assert history.best_epoch == int(np.argmin(val_loss))
    assert _holds(model, recorder.weights[history.best_epoch])


def test_patience_none_keeps_the_last_epoch():
    model, history, recorder = _fit(_task(inverted_validation=True), epochs=6, patience=None)
    assert len(history.history["val_loss"]) == 6  # the contradicting task would have stopped
    assert history.stopped_epoch is None and history.best_epoch is None
    assert _holds(model, recorder.weights[-1])
    with pytest.raises(ValueError, match="patience"):
        train_model(model, *_task(False), epochs=1, patience=-1)
