"""Training: data for a model, fitting with early stopping, hard-negative mining and tuning.

:mod:`~lunglib.training.data` -- arrays and ``tf.data`` datasets from the cache, nodule cubes,
epoch-wise augmented batches; :mod:`~lunglib.training.patches` -- 2D HU nodule patches to CNN
input; :mod:`~lunglib.training.sampling` -- segmentation patches around nodules and a model's false
positives; :mod:`~lunglib.training.fit` -- seeding, class weights, :func:`train_model` and
:func:`predict_proba`; :mod:`~lunglib.training.mining` -- hard negatives;
:mod:`~lunglib.training.tune` -- Grid and Random Search; :mod:`~lunglib.training.precision` --
mixed precision on a GPU; :mod:`~lunglib.training.distribute` -- ``tf.distribute`` strategies.

Importing this package is cheap; TensorFlow loads when a training function is first used.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "sampling": ["check_context", "false_positive_patches", "sample_patches"],
        "data": [
            "EpochAugmented",
            "cache_arrays",
            "make_dataset",
            "nodule_cubes",
            "to_dataset",
            "training_arrays",
        ],
        "fit": ["class_weights", "predict_proba", "set_seed", "train_model"],
        "mining": ["hard_negatives"],
        "patches": ["patch_inputs"],
        "precision": ["PRECISIONS", "gpu_available", "set_precision"],
        "distribute": ["STRATEGY_KINDS", "get_strategy", "global_batch_size",
                       "scaled_learning_rate"],
        "tune": [
            "CNNHyperModel",
            "best_config",
            "load_best_config",
            "make_tuner",
            "results_frame",
            "run_search",
            "save_best_config",
        ],
    },
)
