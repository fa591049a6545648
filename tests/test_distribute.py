"""tf.distribute: a MirroredStrategy over two replicas trains like one device.

The two replicas are this CPU split into two logical devices, which TensorFlow allows only
before it first touches its devices -- hence a fresh Python process per comparison. Dropout and
batch normalisation are off (per-replica random draws and statistics would differ by design;
see lunglib.training.distribute); everything else is the course's CNN and U-Net.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lunglib.training.distribute import (
    get_strategy,
    global_batch_size,
    replicas,
    scaled_learning_rate,
)

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from lunglib.models import build_cnn, build_unet
    from lunglib.training import get_strategy, run_search, set_seed, train_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16, 16, 1)).astype(np.float32)
    y = (x[:, 6:10, 6:10, 0].mean(axis=(1, 2)) > 0).astype(np.float32)
    masks = (x > 0.5).astype(np.float32)
    mirrored = get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    out = {"replicas": mirrored.num_replicas_in_sync}

    class Steps(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

    def run(builder, target, strategy, per_replica, arrays):
        set_seed(7)
        with (strategy or tf.distribute.get_strategy()).scope():
            model = builder()
        if arrays:  # train_model batches arrays by per_replica x replicas (and shuffles them)
            train, val = (x[:48], target[:48]), (x[48:], target[48:])
        else:  # the same global batches, unshuffled, for a step-by-step comparison
            train = tf.data.Dataset.from_tensor_slices((x[:48], target[:48])).batch(16)
            val = tf.data.Dataset.from_tensor_slices((x[48:], target[48:])).batch(16)
        steps = Steps()
        history = train_model(model, train, val, epochs=3, patience=None,
                              batch_size=per_replica, class_weight=None, seed=7,
                              strategy=strategy, callbacks=[steps])
        return history.history["loss"], steps.steps

    cnn = lambda: build_cnn((16, 16, 1), n_conv_layers=2, filters=4, dense_units=8, dropout=0.0)
    unet = lambda: build_unet((16, 16, 1), depth=2, filters=4, dropout=0.0, batch_norm=False)
    for name, builder, target in (("cnn", cnn, y), ("unet", unet, masks)):
        out[name + "_single"], _ = run(builder, target, None, 16, False)
        out[name + "_mirrored"], _ = run(builder, target, mirrored, 16, False)
    out["array_loss"], out["array_steps"] = run(cnn, y, mirrored, 8, True)
    frame = run_search("grid", (x[:48], y[:48]), (x[48:], y[48:]),
                       space={"n_conv_layers": [1], "learning_rate": [1e-3]},
                       fixed={"filters": 4, "dense_units": 8, "dropout": 0.0, "epochs": 1,
                              "batch_size": 8}, seed=7, strategy=mirrored)
    from lunglib.recipes.malignancy import train_malignancy_classifier

    labels = y.astype(int)
    for aux in (None, rng.uniform(size=(64, 2)).astype(np.float32)):  # plain and multitask
        classifier = train_malignancy_classifier(
            x, y, labels, np.arange(48), np.arange(48, 64), seeds=(7,), epochs=2, patience=2,
            config={"n_conv_layers": 1, "filters": 4, "dense_units": 8, "dropout": 0.1},
            aux=aux, batch_size=8, tta=False, strategy=mirrored)
        key = "malignancy_" + ("plain" if aux is None else "multitask")
        out[key] = [float(v) for v in classifier.val_pred]
    from lunglib.recipes.whole_scan import WholeScanConfig, train_whole_scan_segmenter

    config = WholeScanConfig(patch=16, context=0, filters=4, dropout=0.0, batch_size=8,
                             epochs=3, hard_round=False, learning_rate=1e-2)
    patches = (x[:48], masks[:48])
    segmenter = train_whole_scan_segmenter({}, [], config, seed=7, patches=patches,
                                           validation=(x[48:], masks[48:]), strategy=mirrored)
    out["whole_scan_loss"] = segmenter.history["loss"].tolist()
    out["whole_scan_replicas"] = segmenter.final.distribute_strategy.num_replicas_in_sync
    out["search_trials"] = len(frame)
    out["search_score"] = float(frame["score"].iloc[0])
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def mirrored_run():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(v for v in run.stdout.splitlines() if v.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.parametrize("model", ["cnn", "unet"])
def test_two_replicas_follow_the_single_device_loss(mirrored_run, model):
    assert mirrored_run["replicas"] == 2
    single = np.array(mirrored_run[f"{model}_single"])
    mirrored = np.array(mirrored_run[f"{model}_mirrored"])
    assert single[-1] < single[0]  # it trains
    # the same global batches, each split over two replicas whose gradients are summed: the
    # same losses up to the order of floating-point sums
    np.testing.assert_allclose(mirrored, single, rtol=1e-5)


def test_arrays_are_batched_per_replica(mirrored_run):
    # 48 training examples, 8 per replica on 2 replicas: 3 steps of 16 per epoch, 3 epochs
    assert mirrored_run["array_steps"] == 9
    assert mirrored_run["array_loss"][-1] < mirrored_run["array_loss"][0]


def test_a_search_and_the_malignancy_recipe_run_under_the_strategy(mirrored_run):
    assert mirrored_run["search_trials"] == 1 and 0.0 <= mirrored_run["search_score"] <= 1.0
    for key in ("malignancy_plain", "malignancy_multitask"):
        pred = np.array(mirrored_run[key])
        assert pred.shape == (16,) and np.all((pred >= 0) & (pred <= 1)), key


def test_the_whole_scan_segmenter_trains_on_both_replicas(mirrored_run):
    loss = mirrored_run["whole_scan_loss"]
    assert mirrored_run["whole_scan_replicas"] == 2 and len(loss) == 3
    assert loss[-1] < loss[0]


def test_batch_and_learning_rate_rules_and_refusals(monkeypatch):
    import tensorflow as tf

    from lunglib.models import build_cnn
    from lunglib.training import train_model

    default = get_strategy("default")
    assert replicas(default) == 1 and replicas(None) == 1
    assert global_batch_size(16, None) == 16
    one = get_strategy("mirrored", devices=["/cpu:0"])
    assert global_batch_size(16, one) == 16 and scaled_learning_rate(1e-3, one) == 1e-3
    with pytest.raises(ValueError, match="kind must be"):
        get_strategy("parameter_server")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        get_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not JSON"):
        get_strategy("multiworker")
    model = build_cnn((16, 16, 1), n_conv_layers=1, filters=4, dense_units=8)  # outside
    x = np.zeros((8, 16, 16, 1), np.float32)
    y = np.array([0, 1] * 4, np.float32)
    with pytest.raises(ValueError, match="strategy.scope"):
        train_model(model, (x, y), (x, y), epochs=1, strategy=one)
    assert isinstance(default, tf.distribute.Strategy)
