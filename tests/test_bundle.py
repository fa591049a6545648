"""A saved bundle predicts exactly like the model that was saved, with its metadata intact."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from lunglib.models.bundle import BundleFormatError, bundle_paths, load_bundle, save_bundle


def test_bundle_round_trip_keeps_predictions_and_metadata(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3),
                              keras.layers.Flatten(), keras.layers.Dense(1, "sigmoid")])
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 1)).astype(np.float32)
    save_bundle(model, tmp_path, "classifier", size=6, threshold=np.float32(0.25),
                zero_center_mean=np.float64(0.125))
    loaded, meta = load_bundle(tmp_path, "classifier")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    assert meta == {"format_version": 1, "size": 6, "threshold": 0.25, "zero_center_mean": 0.125}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.json", "classifier.keras"]


def test_missing_bundle_says_which_notebook_writes_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="06_segment"):
        load_bundle(tmp_path, "segmenter")
    model_path, meta_path = bundle_paths(tmp_path, "segmenter")
    assert model_path.name == "segmenter.keras" and meta_path.name == "segmenter.json"


def test_a_bundle_of_another_format_version_is_refused_with_the_reason(tmp_path: Path) -> None:
    import json

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, "sigmoid")])
    save_bundle(model, tmp_path, "classifier", size=4)
    _, meta_path = bundle_paths(tmp_path, "classifier")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(BundleFormatError, match=r"classifier.json: bundle format version 2, but "
                                                r"this lunglib reads version 1"):
        load_bundle(tmp_path, "classifier")
    # a bundle saved before the entry existed is version 1 and still loads
    meta_path.write_text(json.dumps({"size": 4}))
    assert load_bundle(tmp_path, "classifier")[1] == {"size": 4}
    meta_path.write_text("{not json")
    with pytest.raises(BundleFormatError, match="not valid JSON"):
        load_bundle(tmp_path, "classifier")
