"""A trained model saved with what is needed to use it again: its preprocessing and threshold.

A bundle is two files in one folder: ``<name>.keras`` (the Keras model) and ``<name>.json``
(everything the model does not carry itself: input size, HU window, zero-centring mean from the
training split, the decision threshold chosen on validation, ...). Notebook 04 saves the
``classifier`` bundle, notebook 05 the ``tuned`` classifier, notebook 06 the ``segmenter``
bundle; notebook 07 and ``python -m lunglib predict`` load them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lunglib.io.atomic import atomic_path, write_text_atomic


def bundle_paths(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """The model file and the metadata file of bundle ``name`` in ``folder``."""
    folder = Path(folder)
    return folder / f"{name}.keras", folder / f"{name}.json"


def save_bundle(model, folder: str | os.PathLike, name: str, **metadata: object) -> Path:
    """Save ``model`` and ``metadata`` atomically (a crash never leaves half a bundle).

    Returns the model file's path.
    """
    model_path, meta_path = bundle_paths(folder, name)
    with atomic_path(model_path, keep_suffix=True) as tmp:
        model.save(tmp)
    write_text_atomic(meta_path, json.dumps(metadata, indent=2, sort_keys=True, default=_plain))
    return model_path


def load_bundle(folder: str | os.PathLike, name: str):
    """Load bundle ``name`` from ``folder`` for inference.

    Returns
    -------
    (keras.Model, dict)
        The model (not compiled: custom training losses are not needed to predict) and its
        metadata.

    Raises
    ------
    FileNotFoundError
        When the bundle is missing, saying which notebook writes it.
    """
    import keras

    model_path, meta_path = bundle_paths(folder, name)
    if not model_path.is_file() or not meta_path.is_file():
        writer = {"classifier": "04_train_cnn", "tuned": "05_tune",
                  "segmenter": "06_segment"}.get(name, "training")
        raise FileNotFoundError(
            f"no '{name}' model in {Path(folder)} ({model_path.name} and {meta_path.name}); "
            f"run notebook {writer} with output_dir={Path(folder)} first"
        )
    model = keras.models.load_model(model_path, compile=False)
    return model, json.loads(meta_path.read_text())


def _plain(value: object) -> object:
    """JSON for numpy scalars and paths."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
