"""A trained model saved with what is needed to use it again: its preprocessing and threshold.

A bundle is two files in one folder: ``<name>.keras`` (the Keras model) and ``<name>.json``
(everything the model does not carry itself: input size, HU window, zero-centring mean from the
training split, the decision threshold chosen on validation, ...). Notebook 04 saves the
``classifier`` bundle, notebook 05 the ``tuned`` classifier, notebook 06 the ``segmenter``
bundle; notebook 07 and ``python -m lunglib predict`` load them.

The metadata records ``format_version`` (:data:`BUNDLE_FORMAT_VERSION`); a bundle whose version
this lunglib does not read is refused with a message that says so, instead of failing later on
a missing key. Bundles written before the entry existed are version 1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lunglib.io.atomic import atomic_path, write_text_atomic

BUNDLE_FORMAT_VERSION = 1
"""The version of the bundle layout (the two files and the metadata keys) this lunglib writes."""


class BundleFormatError(ValueError):
    """A bundle this lunglib cannot read: another format version, or unreadable metadata."""


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
    metadata = {"format_version": BUNDLE_FORMAT_VERSION, **metadata}
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
    BundleFormatError
        When its metadata is not JSON, or its ``format_version`` is not
        :data:`BUNDLE_FORMAT_VERSION` -- checked before the model is read.
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
    try:
        metadata = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleFormatError(f"{meta_path}: the bundle's metadata is not valid JSON ({exc}); "
                                "save the model again") from exc
    version = metadata.get("format_version", 1)  # bundles from before the entry are version 1
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleFormatError(
            f"{meta_path}: bundle format version {version!r}, but this lunglib reads version "
            f"{BUNDLE_FORMAT_VERSION}; load it with the lunglib version that wrote it, or save "
            "the model again with this one")
    model = keras.models.load_model(model_path, compile=False)
    return model, metadata


def _plain(value: object) -> object:
    """JSON for numpy scalars and paths."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
