"""The real-data models shipped inside lunglib: present, loadable, carded, and refused when stale.

Also the pieces of their recipe that need no training: the training crops of the false-positive
reducer, the Platt calibration, and the axial patch they are all cut with.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tomllib

from lunglib.models import BundleFormatError
from lunglib.models.pretrained import PRETRAINED_MODELS, WEIGHTS_DIR, load_pretrained, model_card
from lunglib.preprocess import axial_patch
from lunglib.recipes.pretrained import (
    REDUCER_SIZE,
    REDUCER_SPACING_MM,
    apply_calibration,
    model_card_markdown,
    platt_calibration,
    reducer_crops,
)

ROOT = Path(__file__).resolve().parents[1]
MAX_BUNDLE_MB = 5.0


@pytest.mark.parametrize("name", PRETRAINED_MODELS)
def test_each_shipped_model_loads_with_its_card(name):
    model, info = load_pretrained(name)
    assert info["dataset"] == "LIDC-IDRI" and info["kind"] == name
    card = info["card"]
    for key in ("training_data", "label", "preprocessing", "evaluation", "intended_use",
                "limits", "how_to_retrain"):
        assert card[key], key
    assert "CC BY 3.0" in card["training_data"]["licence"]
    assert any("10.7937/K9/TCIA.2015.LO9QL9SX" in c for c in card["training_data"]["citations"])
    assert "not a medical device" in card["intended_use"].lower()
    assert card == model_card(name)
    markdown = (WEIGHTS_DIR / f"{name}.md").read_text()
    assert markdown == model_card_markdown(card)
    assert (WEIGHTS_DIR / f"{name}.keras").stat().st_size < MAX_BUNDLE_MB * 1e6
    # the network answers on an input of the recorded shape
    shape = [1, *model.input_shape[1:]]
    out = np.asarray(model(np.zeros(shape, np.float32)))
    assert np.all((out >= 0) & (out <= 1))


def test_a_bundle_of_another_format_version_is_refused(tmp_path):
    for suffix in (".keras", ".json"):
        shutil.copy(WEIGHTS_DIR / f"malignancy{suffix}", tmp_path / f"malignancy{suffix}")
    meta = json.loads((tmp_path / "malignancy.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "malignancy.json").write_text(json.dumps(meta))
    with pytest.raises(BundleFormatError, match="format version 99"):
        load_pretrained("malignancy", folder=tmp_path)


def test_a_missing_or_unknown_model_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_pretrained.py"):
        load_pretrained("nodule_unet", folder=tmp_path)
    with pytest.raises(ValueError, match="malignancy, nodule_unet, nodule_reducer"):
        load_pretrained("tumour_grader")


def test_the_package_data_rule_carries_every_shipped_file():
    # a wheel build needs a newer setuptools than the test environment's; read the rule instead
    rules = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = rules["package-data"]["lunglib.models"]
    shipped = sorted(p.name for p in WEIGHTS_DIR.iterdir() if not p.name.startswith("."))
    assert len(shipped) == 3 * len(PRETRAINED_MODELS)
    for name in shipped:
        assert any(fnmatch.fnmatch(f"weights/{name}", pattern) for pattern in patterns), name


def test_an_axial_patch_samples_the_slice_at_the_target_pixel_size():
    image = np.add.outer(np.arange(50.0), 100 * np.arange(50.0))  # value = row + 100 * col
    native = axial_patch(image, (20, 30), 5, spacing_mm=0.5)
    assert np.array_equal(native, image[18:23, 28:33])
    coarse = axial_patch(image, (20, 30), 5, spacing_mm=0.5, target_spacing_mm=1.0)
    assert np.allclose(coarse, image[16:25:2, 26:35:2])  # every other pixel: 1 mm apart
    off = axial_patch(image, (1, 1), 4, spacing_mm=1.0, fill=-1024)
    assert off[0, 0] == -1024 and off[-1, -1] == pytest.approx(2.5 + 100 * 2.5)  # linear


def test_reducer_crops_centre_positives_and_keep_negatives_off_every_outline():
    rng = np.random.default_rng(0)
    images = rng.normal(-800, 50, (3, 71, 71)).astype(np.float32)
    masks = np.zeros((3, 71, 71), np.uint8)
    yy, xx = np.ogrid[:71, :71]
    for i, radius in enumerate((3, 5, 30)):  # the last one leaves no room for a negative
        masks[i] = (yy - 35) ** 2 + (xx - 35) ** 2 <= radius**2
    images[masks > 0] = 40.0
    spacing = np.array([0.7, 0.7, 0.7], np.float32)
    crops, labels, source = reducer_crops(images, masks, spacing, positives_per_patch=2,
                                          negatives_per_patch=4, jitter_mm=1.0, seed=1)
    assert crops.shape[1:] == (REDUCER_SIZE, REDUCER_SIZE)
    assert (labels == 1).sum() == 6 and set(source[labels == 0]) <= {0, 1}
    assert (labels[source == 0] == 0).sum() == 4
    centre = slice(REDUCER_SIZE // 2 - 1, REDUCER_SIZE // 2 + 1)
    assert np.all(crops[labels == 1][:, centre, centre] > -100)  # the nodule under the point
    assert np.all(crops[labels == 0] < -400)  # never a pixel of the nodule
    half_mm = REDUCER_SIZE / 2 * REDUCER_SPACING_MM
    assert half_mm == pytest.approx(9.6)


def test_platt_calibration_fits_a_miscalibrated_score():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, 4000)
    labels = (rng.uniform(0, 1, 4000) < truth).astype(int)
    overconfident = 1 / (1 + np.exp(-3 * np.log(truth / (1 - truth))))  # logit x 3
    calibration = platt_calibration(labels, overconfident)
    assert calibration["a"] == pytest.approx(1 / 3, abs=0.05)
    fixed = apply_calibration(overconfident, calibration)
    assert np.mean(np.abs(fixed - truth)) < 0.03 < np.mean(np.abs(overconfident - truth))
    assert np.array_equal(apply_calibration(overconfident, None), overconfident)
