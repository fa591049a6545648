"""Recipes: complete, validated experiments as library functions.

A recipe trains, predicts, chooses its thresholds and post-processing on validation patients and
scores the test patients; benchmarks and notebooks call it and print its tables. Importing this
package is cheap: each recipe loads TensorFlow only when it runs.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "lidc_unet": [
            "LidcUnetResult",
            "TrainedUnet",
            "evaluate_lidc_unet",
            "lidc_unet_inputs",
            "lidc_unet_targets",
            "predict_lidc_unet",
            "run_lidc_unet",
            "train_lidc_unet",
        ],
        "malignancy": [
            "MALIGNANCY_CNN_CONFIG",
            "MalignancyClassifier",
            "MalignancyData",
            "build_malignancy_cnn",
            "cross_validate_malignancy",
            "malignancy_data",
            "predict_malignancy",
            "prepare_malignancy_inputs",
            "train_malignancy_classifier",
        ],
        "malignancy_report": ["summarize_malignancy", "compare_with_reference"],
        "scan_classifier": ["fit_scan_classifier"],
        "whole_scan": [
            "Case",
            "TrainedSegmenter",
            "WholeScanConfig",
            "WholeScanResult",
            "load_cases",
            "run_whole_scan_recipe",
            "segment_scans",
            "train_whole_scan_segmenter",
        ],
        "whole_scan_scoring": ["WholeScanScores", "score_test"],
    },
)
