"""Mixed precision as a setting: float16 compute on a GPU, float32 everywhere else.

``set_precision("mixed_float16")`` sets Keras' global dtype policy
(:func:`keras.mixed_precision.set_global_policy`) so that layers built afterwards compute in
float16 and keep float32 weights -- about twice the throughput on GPUs with tensor cores. On a
CPU float16 arithmetic is emulated and slower, so the request is ignored there with a warning.
Every model head in lunglib is float32 whatever the policy (the CNN's sigmoid or softmax, the
U-Net's probability, the convolutionalized map, the multitask head): probabilities near 0 or 1
and the loss on them would otherwise lose most of their digits. Keras scales the loss for
float16 gradients itself (``LossScaleOptimizer``, applied by ``compile`` under the policy).
"""

from __future__ import annotations

import warnings

PRECISIONS = ("float32", "mixed_float16")
"""The precision settings :func:`set_precision` accepts."""


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def set_precision(precision: str = "float32", allow_cpu: bool = False) -> str:
    """Set the dtype policy of the models built from now on; return the policy in effect.

    Parameters
    ----------
    precision : {"float32", "mixed_float16"}
        ``"mixed_float16"`` on a GPU computes in float16 with float32 weights and heads.
    allow_cpu : bool, default False
        Use mixed precision even without a GPU (slower; for tests of the float16 path).

    Returns
    -------
    str
        ``"float32"`` or ``"mixed_float16"``: what the models will use.

    Raises
    ------
    ValueError
        For any other ``precision``.
    """
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "mixed_float16" and not allow_cpu and not gpu_available():
        warnings.warn("mixed precision needs a GPU; no GPU is visible, so models stay in "
                      "float32 (float16 on a CPU is emulated and slower)", stacklevel=2)
        precision = "float32"
    keras.mixed_precision.set_global_policy(precision)
    return precision
