"""Training on several devices or hosts with ``tf.distribute``.

A strategy decides where a model's variables live and how each batch is split. lunglib takes one
wherever it trains (:func:`lunglib.training.train_model`, :func:`lunglib.training.run_search`,
:func:`lunglib.recipes.lidc_unet.train_lidc_unet`); without one, TensorFlow's default strategy
(one device) is used and nothing changes.

=====================  ===========================================================================
``get_strategy(kind)`` when
=====================  ===========================================================================
``"default"``          one device (the CPU, or the first GPU)
``"mirrored"``         every GPU of this host (``tf.distribute.MirroredStrategy``): one replica
                       per GPU, gradients summed across them after each step
``"multiworker"``      several hosts (``MultiWorkerMirroredStrategy``), each described by the
                       ``TF_CONFIG`` environment variable: ``{"cluster": {"worker": ["host1:port",
                       "host2:port"]}, "task": {"type": "worker", "index": 0}}``; start the same
                       script on every host, with its own ``index``; worker 0 is the chief and
                       writes the checkpoints and logs
=====================  ===========================================================================

Rules, as TensorFlow's distributed-training guide states them:

- **Build and compile the model inside** ``with strategy.scope():`` -- the variables must be
  created under the strategy. :func:`train_model` refuses a model built under another one.
  keras-tuner builds each trial's model under the strategy itself (``distribution_strategy``).
- **Batch size**: lunglib's ``batch_size`` is *per replica*; each step takes
  :func:`global_batch_size` = ``batch_size`` x replicas examples, so a replica sees what one
  device saw before.
- **Learning rate**: with the per-replica batch fixed, the global batch grows with the replicas;
  the linear scaling rule (Goyal et al. 2017, "Accurate, Large Minibatch SGD") multiplies the
  learning rate by the same factor (:func:`scaled_learning_rate`). lunglib does not apply it
  for you: pass the scaled rate to the model builder.
- Dropout draws differ per replica and batch normalisation uses per-replica statistics, so a
  distributed run matches a single-device run step for step only without them, and only on the
  same batches: Keras iterates a distributed dataset its own way, so a reshuffled training set
  can reach the replicas in another order than on one device (``tests/test_distribute.py``
  compares the two on unshuffled batches; their losses agree to 1e-5).
"""

from __future__ import annotations

import json
import os

STRATEGY_KINDS = ("default", "mirrored", "multiworker")
"""The strategies :func:`get_strategy` makes."""


def get_strategy(kind: str = "default", devices: list[str] | None = None):
    """A ``tf.distribute.Strategy`` of the given kind (see the module docstring).

    Parameters
    ----------
    kind : {"default", "mirrored", "multiworker"}
    devices : list of str, optional
        ``"mirrored"`` only: the devices to mirror over (e.g. ``["/cpu:0", "/cpu:1"]`` on a CPU
        split into logical devices); all GPUs of the host by default.

    Raises
    ------
    ValueError
        For an unknown kind, or ``"multiworker"`` without a valid ``TF_CONFIG``.
    """
    import tensorflow as tf

    if kind not in STRATEGY_KINDS:
        raise ValueError(f"kind must be one of {STRATEGY_KINDS}, got {kind!r}")
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    raw = os.environ.get("TF_CONFIG")
    try:
        config = json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not JSON ({exc}); see lunglib.training.distribute") from exc
    if not config or "cluster" not in config or "task" not in config:
        raise ValueError("a multi-worker strategy needs TF_CONFIG with 'cluster' and 'task' on "
                         "every host; see lunglib.training.distribute for an example")
    return tf.distribute.MultiWorkerMirroredStrategy()


def replicas(strategy=None) -> int:
    """Replicas that share each step (1 without a strategy)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def global_batch_size(per_replica: int, strategy=None) -> int:
    """Examples per step: ``per_replica`` times the strategy's replicas."""
    return int(per_replica) * replicas(strategy)


def scaled_learning_rate(learning_rate: float, strategy=None) -> float:
    """The linear scaling rule: ``learning_rate`` times the replicas (see the module docstring)."""
    return float(learning_rate) * replicas(strategy)


def check_built_under(model, strategy) -> None:
    """Raise ``ValueError`` unless ``model``'s variables were created under ``strategy``."""
    if strategy is not None and model.distribute_strategy is not strategy:
        raise ValueError(
            f"the model was built under {type(model.distribute_strategy).__name__}, not the "
            f"{type(strategy).__name__} given: build and compile it inside "
            "`with strategy.scope():`")
