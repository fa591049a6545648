"""What every course notebook does first: seed, quiet the logs, and open the chosen dataset.

Kept here, not in the notebooks, so that seven notebooks and the tests share one version.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lunglib.settings import Settings

if TYPE_CHECKING:  # scikit-learn loads only when a notebook splits patients
    from lunglib.evaluation.splits import Split

SPLIT_FILE = "split.json"
"""The course's patient split, in ``output_dir``: drawn by notebook 02, read by 04-07."""


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment.

    TensorFlow's CUDA probe writes "Could not find cuda drivers" and "failed call to cuInit" from
    C++ before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot stop them; in a notebook
    they would land in every saved output.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow_quietly():
    """Import TensorFlow and probe its devices without the native start-up noise.

    Native (C++) logging is set to level 3 before the import: TensorFlow 2.21 logs a spurious
    "error" (``NodeDef mentions attribute use_unbounded_threadpool``) on every ``tf.data`` map,
    which would fill saved notebook outputs. Real failures still raise Python exceptions. Set
    ``LUNGLIB_TF_CPP_MIN_LOG_LEVEL=0`` to see every native message while debugging.
    """
    if "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("LUNGLIB_TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    tf.get_logger().setLevel(logging.ERROR)  # e.g. retracing warnings from Keras' predict
    return tf


def setup_notebook(seed: int = 42, tensorflow: bool = False) -> np.random.Generator:
    """Seed every random source, quiet library logs and set figure defaults.

    Parameters
    ----------
    seed : int
        Seed for Python's ``random``, NumPy and (when ``tensorflow``) TensorFlow/Keras.
    tensorflow : bool, default False
        Also import TensorFlow (quietly), seed it and make its ops deterministic. Notebooks that
        train models pass True -- before importing lunglib's model modules, so that TensorFlow's
        start-up messages stay out of the notebook; the others skip the seconds it takes.

    Returns
    -------
    numpy.random.Generator
        A generator seeded with ``seed``, for the notebook's own random choices.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL", "papermill"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        import matplotlib as mpl

        mpl.rcParams.update({"figure.dpi": 80, "figure.figsize": (8, 4), "image.cmap": "gray"})
    except ImportError:  # matplotlib is a dependency; only a broken install lacks it
        pass
    if tensorflow:
        import_tensorflow_quietly()
        from lunglib.training import set_seed

        set_seed(seed)
    return np.random.default_rng(seed)


def course_settings(
    data_dir: str | Path = "",
    labels: str | Path = "",
    size: int | None = None,
    n_slices: int | None = None,
    visualize: bool = True,
    seed: int = 42,
    cache_dir: str | Path = "",
) -> Settings:
    """Validated :class:`Settings` from a notebook's papermill parameters.

    Empty strings and None mean "not given": the ``LUNGLIB_*`` environment variable applies,
    else lunglib's default (``size`` 64, ``n_slices`` 32), so ``LUNGLIB_SIZE=96 lunglib run``
    reaches every notebook and a bad value is refused naming the variable.
    """
    return Settings.from_env(
        data_dir=data_dir or None,
        labels=labels or None,
        size=size,
        n_slices=n_slices,
        visualize=visualize,
        seed=seed,
        cache_dir=cache_dir or None,
    )


def open_course_dataset(dataset: str, settings: Settings):
    """Open the dataset a notebook was asked for, writing the synthetic cohort when needed.

    Parameters
    ----------
    dataset : {"synthetic", "dsb2017", "lidc", "luna16", "lung-pet-ct-dx"}
        Which adapter reads ``settings.data_dir``. For ``"synthetic"`` with no ``data_dir`` the
        embedded cohort is generated on first use under ``data/synthetic``.
    settings : Settings

    Returns
    -------
    lunglib.datasets.CTDataset
    """
    from lunglib.datasets import DATASET_NAMES, PATCH_SET, open_dataset

    if dataset not in DATASET_NAMES:
        raise ValueError(f"dataset must be one of {', '.join(DATASET_NAMES)}; got {dataset!r}")
    if dataset == PATCH_SET:
        raise ValueError(
            "the 'patches' dataset holds nodule patches, not CT scans: "
            "load it with lunglib.datasets.load_patch_set(data_dir)"
        )
    root = settings.data_dir
    if dataset == "synthetic" and root is None:
        from lunglib.synthetic import ensure_cohort

        root = ensure_cohort(settings.resolved_data_dir)
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs data_dir: the folder you downloaded it to")
    labels = settings.labels if settings.labels is not None else None
    return open_dataset(dataset, root, labels=labels)


def classification_data(dataset: str, settings: Settings, data_dir: str | Path = "",
                        patch_size: int = 40, workers: int = 2, scheduler: str | None = None):
    """``(source, x, y, groups)`` for the classification notebooks (04, 05, 07).

    For a CT dataset the scans are prepared once into the cache (``source`` is the
    :class:`lunglib.preprocess.cache.CacheIndex`) by
    :func:`~lunglib.preprocess.cache.cache_dataset`, on a Dask LocalCluster of ``workers``
    processes or on the cluster at ``scheduler``, and ``x`` holds one volume per patient; for
    ``dataset="patches"`` ``data_dir`` is the patch ``.npz`` file and ``x`` holds 2D patches,
    several per patient. ``groups`` names each sample's patient, for patient-level splits.
    """
    from lunglib.datasets import PATCH_SET, load_patch_set
    from lunglib.training import training_arrays

    if dataset == PATCH_SET:
        if not data_dir:
            raise ValueError("dataset='patches' needs data_dir: the patch .npz file")
        source = load_patch_set(data_dir)
    else:
        from lunglib.preprocess.cache import cache_dataset

        source = cache_dataset(open_course_dataset(dataset, settings), settings,
                               workers=workers, scheduler=scheduler, progress=False)
    x, y, groups = training_arrays(source, size=patch_size)
    return source, x, y, groups


def course_split(
    groups: Sequence,
    labels: Sequence,
    seed: int = 42,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> Split:
    """The course's patient split: stratified by patient label and seeded.

    One function for the notebooks that draw it -- 02, which saves it as :data:`SPLIT_FILE`,
    and 04, which draws it itself when it runs alone -- so both give the same patients.

    Parameters
    ----------
    groups, labels : sequence
        The patient and the label of every sample (several samples may share a patient).
    seed : int
        The notebooks' ``seed`` parameter.
    val_fraction, test_fraction : float
        Fractions of the patients in the validation and the test split.

    Returns
    -------
    lunglib.evaluation.splits.Split
    """
    from lunglib.evaluation.splits import patient_split

    return patient_split(groups, labels, val_fraction=val_fraction,
                         test_fraction=test_fraction, seed=seed)


def saved_or_course_split(
    path: str | Path,
    groups: Sequence,
    labels: Sequence,
    seed: int = 42,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> tuple[Split, str]:
    """The split saved at ``path`` when it fits, else :func:`course_split` drawn here.

    The saved split is used when it was drawn with the same ``seed`` and fractions and holds
    every patient of ``groups``; it is then restricted to those patients
    (:meth:`~lunglib.evaluation.splits.Split.subset`). Otherwise -- no file, other settings
    (a student changed ``val_fraction`` in one notebook only), other patients (another
    dataset) -- the split is drawn from ``groups`` and ``labels``, as notebook 02 would draw it.

    Returns
    -------
    split : Split
    source : str
        Where the split came from, in words, for the notebook to print.
    """
    from lunglib.evaluation.splits import load_split

    path = Path(path)
    wanted = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    reason = f"no {path.name} in the output folder"
    if path.is_file():
        saved = load_split(path)
        settings = {"seed": saved.seed, "val_fraction": saved.meta.get("val_fraction"),
                    "test_fraction": saved.meta.get("test_fraction")}
        missing = {str(g) for g in groups} - {*saved.train, *saved.val, *saved.test}
        if settings != wanted:
            reason = f"{path.name} was drawn with other settings ({settings})"
        elif missing:
            reason = f"{path.name} lacks {len(missing)} of these patients (another dataset?)"
        else:
            every = {*saved.train, *saved.val, *saved.test}
            split = saved if every == {str(g) for g in groups} else saved.subset(groups)
            return split, f"read from {path.name} (notebook 02's split)"
    split = course_split(groups, labels, seed=seed, val_fraction=val_fraction,
                         test_fraction=test_fraction)
    return split, f"drawn here with course_split ({reason})"
