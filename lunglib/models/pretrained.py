"""The real-data models shipped inside lunglib, and their model cards.

Three bundles (:mod:`lunglib.models.bundle`) trained on real LIDC-IDRI nodule patches live in the
package's ``weights`` folder (package data, so ``pip install`` carries them; nothing is
downloaded):

=================  ==============================================================================
name               what it does
=================  ==============================================================================
``malignancy``     probability that readers would rate a nodule malignant, from its largest
                   axial slice and outline (calibrated on validation patients)
``nodule_unet``    the nodule's outline on an axial slice, from a patch centred on it
``nodule_reducer`` "nodule or not" at a candidate point on an axial slice (re-ranks ``predict``'s
                   whole-scan candidates on real scans)
=================  ==============================================================================

Each has a model card (training data and licence, label, preprocessing, evaluation with
intervals, intended use, known limits): :func:`model_card` returns it, ``<name>.md`` beside the
bundle renders it. ``scripts/train_pretrained.py`` retrains them
(:mod:`lunglib.recipes.pretrained`).
"""

from __future__ import annotations

import json
from pathlib import Path

from lunglib.models.bundle import bundle_paths, load_bundle

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Where the shipped bundles are."""
PRETRAINED_MODELS = ("malignancy", "nodule_unet", "nodule_reducer")
"""The names of the shipped bundles."""

_LOADED: dict[str, tuple[object, dict]] = {}


def _check_name(name: str) -> None:
    if name not in PRETRAINED_MODELS:
        raise ValueError(f"no shipped model called {name!r}; lunglib ships "
                         f"{', '.join(PRETRAINED_MODELS)}")


def load_pretrained(name: str, folder: str | Path | None = None):
    """Load a shipped model (once per process) and its metadata, model card included.

    Parameters
    ----------
    name : {"malignancy", "nodule_unet", "nodule_reducer"}
    folder : path-like, optional
        Another folder holding the bundle (e.g. one retrained by ``scripts/train_pretrained.py``);
        the package's own :data:`WEIGHTS_DIR` by default.

    Returns
    -------
    (keras.Model, dict)

    Raises
    ------
    FileNotFoundError
        When the bundle is missing (an installation without package data), saying how to
        retrain it.
    lunglib.models.BundleFormatError
        When the bundle was written by a lunglib with another bundle format.
    """
    _check_name(name)
    folder = WEIGHTS_DIR if folder is None else Path(folder)
    key = f"{folder}/{name}"
    if key not in _LOADED:
        model_path, meta_path = bundle_paths(folder, name)
        if not model_path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(
                f"the shipped '{name}' model is not in {folder} ({model_path.name}, "
                f"{meta_path.name}): reinstall lunglib with its package data, or retrain it "
                "with scripts/train_pretrained.py --patches <LIDC nodule patches .npz>")
        _LOADED[key] = load_bundle(folder, name)
    return _LOADED[key]


def model_card(name: str, folder: str | Path | None = None) -> dict:
    """The model card of a shipped model, read without loading the network."""
    _check_name(name)
    _, meta_path = bundle_paths(WEIGHTS_DIR if folder is None else Path(folder), name)
    if not meta_path.is_file():
        raise FileNotFoundError(f"the shipped '{name}' model's metadata {meta_path} is missing")
    return json.loads(meta_path.read_text())["card"]
