"""lunglib: classify and segment lung cancer in chest CT with convolutional neural networks.

Subpackages by concern, layered so that data flows one way (a lower layer never imports a higher
one; ``tests/test_architecture.py`` holds the order and checks it):

==============  =================================================================================
layer           subpackage -- what lives there
==============  =================================================================================
foundation      :mod:`lunglib.settings` -- the course's defaults (size, n_slices, data_dir, ...)
I/O             :mod:`lunglib.io` -- DICOM series, NIfTI / DICOM SEG export, QC findings
data            :mod:`lunglib.datasets` (public dataset layouts), :mod:`lunglib.synthetic`
preprocessing   :mod:`lunglib.preprocess` -- HU volumes to model-ready arrays, and their cache
augmentation    :mod:`lunglib.augment` -- rotation, flipping, scaling, translation
models          :mod:`lunglib.models` -- the CNN, the U-Net, saved bundles, shipped real-data models
training        :mod:`lunglib.training` -- data for a model, fitting, mining, tuning
inference       :mod:`lunglib.inference` -- sliding windows over a scan, nodule candidates
evaluation      :mod:`lunglib.evaluation` -- patient splits, classification/segmentation metrics
recipes         :mod:`lunglib.recipes` -- complete experiments: train, choose on validation, test
visualisation   :mod:`lunglib.viz` -- viewers, montages, Grad-CAM
application     :mod:`lunglib.course`, :mod:`lunglib.pipeline`, :mod:`lunglib.predict`,
                :mod:`lunglib.characterize`, :mod:`lunglib.report` (the run report page),
                :mod:`lunglib.cli`
==============  =================================================================================

The names below are the course's main entry points. Importing ``lunglib`` is cheap: each name is
imported on first use (:mod:`lazy_loader`), so TensorFlow loads only when a model is needed.
"""

import lazy_loader

from lunglib._version import __version__

__getattr__, __dir__, _exports = lazy_loader.attach(
    __name__,
    submod_attrs={
        "settings": ["Settings"],
        "io": ["CTScan", "DicomLoadError", "QCFinding", "SeriesInfo", "list_series", "load_scan"],
        "datasets": ["open_dataset", "load_patch_set"],
        "synthetic": ["ensure_cohort"],
        "preprocess": ["prepare", "segment_lungs", "cache_dataset"],
        "augment": ["default_augmentation"],
        "models": ["build_cnn", "build_unet"],
        "training": ["train_model", "run_search"],
        "inference": ["predict_volume", "find_candidates"],
        "evaluation": ["patient_split", "evaluate_binary", "score_cases"],
        "viz": ["SliceViewer", "montage"],
        "pipeline": ["run_course"],
        "report": ["build_report"],
        "predict": ["predict_scan"],
        "characterize": ["characterize_scan"],
    },
)
__all__ = [*_exports, "__version__"]
