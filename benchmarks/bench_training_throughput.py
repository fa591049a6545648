"""Training throughput per replica: examples per second of lunglib's models on this machine.

For the paper estimate of training at scale in ``docs/scaling.md``. Three models, on random
inputs of their real shapes (the arithmetic does not depend on the values):

cnn-cube     notebook 04's 3D CNN on (10, 18, 18, 1) nodule cubes (2 blocks of 8 filters)
unet-2.5d    notebook 06's 2.5D U-Net on (32, 32, 5) patches (depth 2, 8 filters)
lidc-unet    the shipped LIDC U-Net recipe on (48, 48, 2) crops (depth 3, 16 filters)

Each runs ``train_model`` for ``--epochs`` epochs (the first, which traces and compiles, is left
out) with the default strategy, and again under a ``MirroredStrategy`` over this CPU split into
two logical devices -- the test setup of ``tests/test_distribute.py``. On a CPU the two replicas
share the same cores, so the second row shows the strategy's overhead, not a speed-up; on a
multi-GPU host each replica has its own device. With ``--precision mixed_float16`` on a GPU the
rows run under mixed precision.

Usage: ``python benchmarks/bench_training_throughput.py [--epochs 4] [--examples 1024]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

MODELS = {
    "cnn-cube": ((10, 18, 18, 1), 16, "cnn"),
    "unet-2.5d": ((32, 32, 5), 32, "unet"),
    "lidc-unet": ((48, 48, 2), 32, "unet"),
}


def build(name: str):
    from lunglib.models import build_cnn, build_unet

    shape, _, kind = MODELS[name]
    if kind == "cnn":
        return build_cnn(shape, n_conv_layers=2, filters=8, dense_units=16, padding="valid",
                         name="cnn")
    depth, filters = (2, 8) if name == "unet-2.5d" else (3, 16)
    return build_unet(shape, depth=depth, filters=filters, dropout=0.1)


def throughput(name: str, strategy, per_replica: int, epochs: int, examples: int) -> float:
    """Training examples per second over epochs 2..``epochs`` (epoch 1 traces and compiles;
    each epoch also scores 32 validation examples)."""
    import keras
    import tensorflow as tf

    from lunglib.training import set_seed, train_model

    shape, _, kind = MODELS[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, *shape)).astype(np.float32)
    if kind == "cnn":
        y = rng.integers(0, 2, examples).astype(np.float32)
    else:
        y = (rng.random((examples, *shape[:-1], 1)) > 0.9).astype(np.float32)
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    set_seed(0)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build(name)
    train_model(model, (x, y), (x[:32], y[:32]), epochs=epochs, patience=None,
                batch_size=per_replica, class_weight=None, seed=0, strategy=strategy,
                callbacks=[Clock()], verbose=0)
    return examples / float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--examples", type=int, default=1024)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_float16"])
    args = parser.parse_args()

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:  # two logical CPUs for the mirrored rows; must happen before TF starts
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from lunglib.training import get_strategy, set_precision

    set_precision(args.precision, allow_cpu=False)
    devices = None if gpus else ["/cpu:0", "/cpu:1"]
    mirrored = get_strategy("mirrored", devices=devices)
    where = f"{len(gpus)} GPU(s)" if gpus else f"CPU ({os.cpu_count()} cores)"
    print(f"training throughput on {where}, {args.precision}, TensorFlow {tf.__version__}; "
          f"{args.examples} examples, median epoch of {args.epochs - 1} after the first")
    print(f"{'model':<11}{'input':<16}{'batch/replica':>14}{'1 replica ex/s':>16}"
          f"{'2 replicas ex/s':>17}{'per replica':>13}")
    for name, (shape, per_replica, _) in MODELS.items():
        one = throughput(name, None, per_replica, args.epochs, args.examples)
        two = throughput(name, mirrored, per_replica, args.epochs, args.examples)
        print(f"{name:<11}{str(shape):<16}{per_replica:>14}{one:>16.0f}{two:>17.0f}"
              f"{two / mirrored.num_replicas_in_sync:>13.0f}")


if __name__ == "__main__":
    main()
