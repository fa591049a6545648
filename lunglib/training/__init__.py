"""Training: data for a model, fitting with early stopping, hard-negative mining and tuning.

Importing this package is cheap; TensorFlow loads when a training function is first used.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "inputs": ["make_dataset", "nodule_cubes"],
        "train": [
            "EpochAugmented",
            "cache_arrays",
            "class_weights",
            "fit_scan_classifier",
            "hard_negatives",
            "patch_inputs",
            "predict_proba",
            "set_seed",
            "to_dataset",
            "train_model",
            "training_arrays",
        ],
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
