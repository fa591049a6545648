"""Preprocessing: HU volumes to model-ready arrays, and the cache of prepared volumes.

========================================  =======================================================
module                                    what it holds
========================================  =======================================================
:mod:`~lunglib.preprocess.resample`       :func:`resample_isotropic`, :func:`shrink_to`, and an
                                          :class:`OutputGrid` around a box (:func:`box_grid`) that
                                          :func:`resample_box` resamples onto
:mod:`~lunglib.preprocess.lungs`          :func:`segment_lungs`, :func:`lung_volume_ml`
:mod:`~lunglib.preprocess.intensity`      :func:`window`, :func:`window_channels`,
                                          :func:`fit_zero_center`, :func:`zero_center`
:mod:`~lunglib.preprocess.boxes`          :func:`mask_bbox` (the bounding box of a mask, as slices),
                                          :func:`extract_patch`, :func:`check_patch_shape`
:mod:`~lunglib.preprocess.axial`          :func:`axial_patch`: a square axial patch around a point
                                          at a chosen pixel size (the shipped models' input)
:mod:`~lunglib.preprocess.volume`         :func:`prepare`, which chains the steps into the model's
                                          input, with :class:`PrepareOptions`,
                                          :class:`PreparedVolume` and :data:`PREPROCESS_VERSION`
:mod:`~lunglib.preprocess.cache`          :func:`cache_dataset`: a whole dataset prepared once,
                                          atomically and resumably
:mod:`~lunglib.preprocess.dask_prepare`   one Dask task per patient, on a LocalCluster or a
                                          cluster given by its scheduler's address
========================================  =======================================================
"""

from lunglib.preprocess.axial import axial_patch
from lunglib.preprocess.boxes import check_patch_shape, extract_patch, mask_bbox
from lunglib.preprocess.cache import QC_COLUMNS, CacheIndex, cache_dataset, cache_key, prepare_one
from lunglib.preprocess.intensity import fit_zero_center, window, window_channels, zero_center
from lunglib.preprocess.lungs import lung_volume_ml, segment_lungs
from lunglib.preprocess.resample import (
    OutputGrid,
    box_grid,
    resample_box,
    resample_isotropic,
    shrink_to,
)
from lunglib.preprocess.volume import PREPROCESS_VERSION, PreparedVolume, PrepareOptions, prepare

__all__ = [
    "PREPROCESS_VERSION",
    "QC_COLUMNS",
    "CacheIndex",
    "OutputGrid",
    "PrepareOptions",
    "PreparedVolume",
    "axial_patch",
    "box_grid",
    "cache_dataset",
    "cache_key",
    "check_patch_shape",
    "extract_patch",
    "fit_zero_center",
    "lung_volume_ml",
    "mask_bbox",
    "prepare",
    "prepare_one",
    "resample_box",
    "resample_isotropic",
    "segment_lungs",
    "shrink_to",
    "window",
    "window_channels",
    "zero_center",
]
