"""Preprocessing: HU volumes to model-ready arrays, and the cache of prepared volumes.

:mod:`~lunglib.preprocess.steps` holds the named steps (resampling, lung segmentation,
windowing, zero-centring, cropping to a box, patches) and :func:`prepare`, which chains them;
:mod:`~lunglib.preprocess.cache` prepares a whole dataset once, atomically and resumably.
"""

from lunglib.preprocess.cache import QC_COLUMNS, CacheIndex, cache_dataset, cache_key, prepare_one
from lunglib.preprocess.steps import (
    PREPROCESS_VERSION,
    OutputGrid,
    PreparedVolume,
    PrepareOptions,
    box_grid,
    check_patch_shape,
    extract_patch,
    fit_zero_center,
    lung_bbox,
    lung_volume_ml,
    prepare,
    resample_box,
    resample_isotropic,
    segment_lungs,
    shrink_to,
    window,
    zero_center,
)

__all__ = [
    "PREPROCESS_VERSION",
    "QC_COLUMNS",
    "CacheIndex",
    "OutputGrid",
    "PrepareOptions",
    "PreparedVolume",
    "box_grid",
    "cache_dataset",
    "cache_key",
    "check_patch_shape",
    "extract_patch",
    "fit_zero_center",
    "lung_bbox",
    "lung_volume_ml",
    "prepare",
    "prepare_one",
    "resample_box",
    "resample_isotropic",
    "segment_lungs",
    "shrink_to",
    "window",
    "zero_center",
]
