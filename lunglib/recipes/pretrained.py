"""The real-data models lunglib ships, trained from the LIDC-IDRI nodule patches.

Three bundles (:mod:`lunglib.models.bundle`) are trained on a LIDC nodule patch file
(``../shared/data/lidc_nodule_patches/dev.npz``) by ``scripts/train_pretrained.py`` and shipped
inside the package (:mod:`lunglib.models.pretrained` loads them):

``malignancy``
    The malignancy recipe's consensus-cnn (:mod:`lunglib.recipes.malignancy`): a seed ensemble
    averaged into one Keras model, with a Platt calibration fitted on the validation patients.
``nodule_unet``
    The 2D nodule U-Net of :mod:`lunglib.recipes.lidc_unet`, with its binarisation (threshold,
    central component) chosen on the validation patients.
``nodule_reducer``
    A false-positive reducer: a small 2D CNN that scores "nodule or not" for a candidate point on
    an axial slice (:func:`reducer_inputs`). Positives are crops centred on the readers' outlines
    (jittered by a few pixels, as a detector's candidate point would be); negatives are crops of
    the same real patches away from every outline (vessels, fissures, pleura and parenchyma of
    hundreds of patients). The patients of the real scans on which ``predict``'s re-ranking is
    measured (:data:`EVALUATION_PATIENTS`) are left out of its training.

Every model holds out validation patients (:func:`lunglib.evaluation.patient_split`) for early
stopping, thresholds and calibration, and reports its validation figures with a patient-bootstrap
95 % interval in its model card (:func:`model_card_markdown` renders it). The test figures of the
recipes themselves come from their benchmarks, recorded in ``docs/results.md``.

Data: LIDC-IDRI, CC BY 3.0 (Armato et al. 2011, 2015; TCIA, Clark et al. 2013).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, stats

from lunglib.datasets import PatchSet
from lunglib.evaluation import bootstrap_interval, choose_threshold, patient_split
from lunglib.preprocess import axial_patch, window_channels

REDUCER_SPACING_MM = 0.8
"""Pixel size of the reducer's input."""
REDUCER_SIZE = 24
"""Side of the reducer's input in pixels (19.2 mm at :data:`REDUCER_SPACING_MM`)."""
REDUCER_WINDOWS = ((-1000.0, 400.0), (-160.0, 240.0))
"""Lung and soft-tissue HU windows, one input channel each."""
REDUCER_CONFIG: dict[str, Any] = {
    "n_conv_layers": 3, "filters": 16, "kernel_size": 3, "pool_size": 2, "dense_units": 64,
    "dropout": 0.3, "l2": 1e-4, "learning_rate": 1e-3, "batch_norm": True,
}
"""Keyword arguments of :func:`lunglib.models.build_cnn` for the reducer."""
EVALUATION_PATIENTS = ("LIDC-IDRI-0001",)
"""Real scans on which ``predict``'s re-ranking is measured; never in the reducer's training."""

LIDC_CITATIONS = (
    "Armato SG III, McLennan G, Bidaut L, et al. (2015). Data From LIDC-IDRI. The Cancer Imaging "
    "Archive. https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX",
    "Armato SG III, McLennan G, Bidaut L, et al. The Lung Image Database Consortium (LIDC) and "
    "Image Database Resource Initiative (IDRI): a completed reference database of lung nodules "
    "on CT scans. Medical Physics 38(2):915-931, 2011.",
    "Clark K, Vendt B, Smith K, et al. The Cancer Imaging Archive (TCIA): Maintaining and "
    "Operating a Public Information Repository. Journal of Digital Imaging 26(6):1045-1057, 2013.",
)
INTENDED_USE = ("Research and teaching only. Not a medical device: not for diagnosis, screening "
                "or any decision about a patient.")
TRAINING_COMMAND = ("python scripts/train_pretrained.py "
                    "--patches ../shared/data/lidc_nodule_patches/dev.npz")


@dataclass
class ShippedModel:
    """A trained model ready to be saved as a shipped bundle.

    Attributes
    ----------
    name : str
        The bundle name (``malignancy``, ``nodule_unet`` or ``nodule_reducer``).
    model : keras.Model
    metadata : dict
        What a user of the model needs (input, windows, threshold, calibration, ``dataset``).
    card : dict
        The model card (:func:`model_card_markdown` renders it).
    """

    name: str
    model: object
    metadata: dict
    card: dict

    def save(self, folder: str | Path) -> Path:
        """Write ``<name>.keras``, ``<name>.json`` (metadata with the card) and ``<name>.md``."""
        import keras

        from lunglib.io.atomic import write_text_atomic
        from lunglib.models.bundle import save_bundle

        # an uncompiled view of the same layers: the file carries no optimizer state
        inference = keras.Model(self.model.inputs, self.model.outputs, name=self.model.name)
        path = save_bundle(inference, folder, self.name, **self.metadata, card=self.card)
        write_text_atomic(Path(folder) / f"{self.name}.md", model_card_markdown(self.card))
        return path


def _training_data(patches: PatchSet, patients: Sequence[str]) -> dict[str, object]:
    return {
        "dataset": "LIDC-IDRI",
        "source": f"LIDC-IDRI nodule patches ({Path(str(patches.source)).name}): 71 x 71 HU "
                  "patches on each reader's largest-area slice of a nodule, with the outline",
        "n_patches": int(len(patches.images)),
        "n_patients": int(len(set(patients))),
        "licence": ("CC BY 3.0 (https://creativecommons.org/licenses/by/3.0/); LIDC-IDRI terms "
                    "apply"),
        "citations": list(LIDC_CITATIONS),
    }


def _card(name: str, title: str, patches: PatchSet, patients: Sequence[str],
          **sections: object) -> dict:
    from lunglib._version import __version__

    return {
        "name": name,
        "title": title,
        "lunglib_version": __version__,
        "trained_on": datetime.date.today().isoformat(),
        "training_data": _training_data(patches, patients),
        **sections,
        "intended_use": INTENDED_USE,
        "how_to_retrain": TRAINING_COMMAND,
    }


def _split_rows(patients: np.ndarray, labels: np.ndarray, val_fraction: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    split = patient_split(patients, labels, val_fraction=val_fraction, test_fraction=0.0,
                          seed=seed)
    val = np.isin(patients, split.val)
    return np.flatnonzero(~val), np.flatnonzero(val)


def _interval(low: float, high: float) -> list[float]:
    return [round(float(low), 3), round(float(high), 3)]


def _auc_with_interval(labels: np.ndarray, prob: np.ndarray, groups: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    ci = bootstrap_interval(labels, prob, roc_auc_score, n_boot=1000, groups=groups, seed=0)
    return {"roc_auc": round(float(roc_auc_score(labels, prob)), 3),
            "roc_auc_95ci": _interval(ci.low, ci.high), "n": int(len(labels)),
            "n_patients": int(len(set(groups)))}


def average_models(models: Sequence, name: str):
    """One Keras model whose output is the mean of ``models``' outputs (an ensemble in a file)."""
    import keras

    inputs = keras.Input(models[0].input_shape[1:])
    # each member under its own name: a functional model refuses two layers called "cnn"
    members = [keras.Model(m.input, m.output, name=f"{name}_member{i}")
               for i, m in enumerate(models)]
    outputs = [member(inputs) for member in members]
    merged = keras.layers.Average()(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, merged, name=name)


# ------------------------------------------------------------------------------------------------
# Malignancy


def platt_calibration(labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Platt scaling: ``p' = sigmoid(a * logit(p) + b)`` fitted by logistic regression.

    Fitted on the validation patients' predictions; :func:`apply_calibration` applies it.
    """
    from sklearn.linear_model import LogisticRegression

    logit = _logit(prob)[:, None]
    fit = LogisticRegression(C=1e6).fit(logit, labels)
    return {"a": float(fit.coef_[0, 0]), "b": float(fit.intercept_[0])}


def apply_calibration(prob: np.ndarray, calibration: Mapping[str, float] | None) -> np.ndarray:
    """The calibrated probability of :func:`platt_calibration` (``prob`` unchanged without one)."""
    prob = np.asarray(prob, dtype=float)
    if not calibration:
        return prob
    return 1.0 / (1.0 + np.exp(-(calibration["a"] * _logit(prob) + calibration["b"])))


def _logit(prob: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(prob, dtype=float), eps, 1 - eps)
    return np.log(p / (1 - p))


def train_shipped_malignancy(
    patches: PatchSet,
    seeds: Sequence[int] = (42, 7),
    val_fraction: float = 0.15,
    split_seed: int = 42,
    epochs: int = 40,
) -> ShippedModel:
    """consensus-cnn on all patients but the validation ones, calibrated on the validation ones.

    The network, inputs and training are the malignancy recipe's (:data:`MALIGNANCY_CNN_CONFIG`,
    :func:`prepare_malignancy_inputs`, target the nodule's mean reader rating); the seeds'
    models are averaged into one (:func:`average_models`). Prediction averages the eight dihedral
    views (``metadata["tta"]``).
    """
    from sklearn.metrics import brier_score_loss

    from lunglib.recipes.malignancy import (
        CROP,
        EXTRA_WINDOWS,
        HU_WINDOW,
        MALIGNANCY_CNN_CONFIG,
        NODULE_VIEW,
        TARGET_SPACING_MM,
        malignancy_data,
        prepare_malignancy_inputs,
        train_malignancy_classifier,
    )

    data = malignancy_data(patches)
    x = prepare_malignancy_inputs(data)
    train, val = _split_rows(data.patient_ids, (data.rating >= 4).astype(int), val_fraction,
                             split_seed)
    target = ((data.reader_mean - 1.0) / 4.0).astype(np.float32)
    classifier = train_malignancy_classifier(x, target, data.labels, train, val, seeds=seeds,
                                             epochs=epochs)
    rated = data.labels[val] >= 0
    y_val, p_val = data.labels[val][rated], classifier.val_pred[rated]
    calibration = platt_calibration(y_val, p_val)
    p_cal = apply_calibration(p_val, calibration)
    threshold = float(apply_calibration(np.array([classifier.threshold]), calibration)[0])
    validation = {
        **_auc_with_interval(y_val, p_val, data.patient_ids[val][rated]),
        "brier_uncalibrated": round(float(brier_score_loss(y_val, p_val)), 3),
        "brier_calibrated": round(float(brier_score_loss(y_val, p_cal)), 3),
        "threshold_calibrated": round(threshold, 3),
        "accuracy_at_threshold": round(float(np.mean((p_cal >= threshold) == y_val)), 3),
    }
    metadata = {
        "dataset": "LIDC-IDRI", "kind": "malignancy", "input_size": CROP,
        "target_spacing_mm": TARGET_SPACING_MM, "window": HU_WINDOW,
        "extra_windows": EXTRA_WINDOWS, "nodule_view": NODULE_VIEW, "tta": "dihedral",
        "calibration": calibration, "threshold": threshold, "config": MALIGNANCY_CNN_CONFIG,
        "seeds": list(seeds), "split_seed": split_seed,
    }
    card = _card(
        "malignancy", "Nodule malignancy from one axial slice and its outline", patches,
        data.patient_ids,
        label=("The outlining reader's malignancy rating (1-5) of an LIDC-IDRI nodule: <= 2 "
               "benign, >= 4 malignant, 3 not scored. Trained towards the mean rating of every "
               "reader of the nodule, (mean - 1) / 4. A radiologist's suspicion, not pathology."),
        preprocessing=(f"The slice where the nodule's outline is largest, resampled to "
                       f"{TARGET_SPACING_MM} mm pixels and cropped to {CROP} x {CROP}; channels: "
                       f"HU windows {HU_WINDOW}, {EXTRA_WINDOWS[0]} and {EXTRA_WINDOWS[1]} scaled "
                       "to [0, 1], the outline, and a view resized so the outline spans "
                       f"{NODULE_VIEW:.0%} of it."),
        architecture=(f"build_cnn 2D {MALIGNANCY_CNN_CONFIG}; {len(seeds)} seeds averaged; "
                      "8 dihedral views averaged at prediction."),
        evaluation={
            "protocol": ("Cross-validation of the recipe (not of this file): patient-grouped "
                         "5-fold, a validation split inside each training fold, each test fold "
                         "touched once. Figures and commands: docs/results.md, 'Malignancy "
                         "classifier', row consensus-cnn. This model: the same recipe on every "
                         f"patient but {len(set(data.patient_ids[val]))} validation patients; "
                         "validation figures below (patient-bootstrap 95 % interval, 1000 "
                         "resamples; the calibration and threshold were fitted on these same "
                         "patients, so the calibrated figures are optimistic)."),
            "cross_validation_per_outline_roc_auc": "0.868 ± 0.025 (mean ± std over 5 folds)",
            "cross_validation_per_nodule_roc_auc": "0.958 ± 0.013 (mean ± std over 5 folds)",
            "validation": validation,
        },
        calibration=("Platt scaling sigmoid(a * logit(p) + b) fitted on the validation outlines: "
                     f"a = {calibration['a']:.3f}, b = {calibration['b']:.3f}."),
        limits=[
            "2D: one axial slice, the one where the outline is largest; no 3D shape or growth.",
            "Trained on readers' outlines; at inference the outline comes from the shipped "
            "U-Net, which differs from a reader's.",
            "The label is one radiologist's rating; readers disagree (the other readers' mean "
            "predicts the outlining reader's label with ROC-AUC 0.80, docs/results.md).",
            "LIDC-IDRI scanners (GE, Siemens, Philips, Toshiba) and slice thicknesses of "
            "1-3 mm mostly; other scanners, thick slices and contrast phases are untested.",
        ],
    )
    model = average_models(classifier.models, "malignancy")
    return ShippedModel("malignancy", model, metadata, card)


# ------------------------------------------------------------------------------------------------
# Nodule U-Net


def _mean_with_interval(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=float)
    ci = stats.bootstrap((values,), np.mean, n_resamples=1000, method="percentile",
                         random_state=0).confidence_interval
    return {"mean": round(float(values.mean()), 3), "95ci": _interval(ci.low, ci.high),
            "n": int(values.size)}


def train_shipped_unet(
    patches: PatchSet,
    epochs: int = 40,
    seed: int = 42,
    val_fraction: float = 0.15,
) -> ShippedModel:
    """The LIDC 2D U-Net recipe on every patient but the validation ones.

    Training is :func:`lunglib.recipes.lidc_unet.train_lidc_unet` (two windows, cosine schedule,
    48 x 48 crops); the threshold and the central-component rule are chosen on the validation
    patients, whose per-patient Dice (patches of a patient averaged first) is reported.
    """
    from lunglib.evaluation import binarize, choose_binarization, score_cases
    from lunglib.recipes.lidc_unet import (
        INPUT_SIZE,
        LUNG_WINDOW,
        PATCH_SIZE,
        SOFT_TISSUE_WINDOW,
        lidc_unet_inputs,
        lidc_unet_targets,
        predict_lidc_unet,
        train_lidc_unet,
    )

    patients = np.asarray(patches.patient_ids).astype(str)
    masks = np.asarray(patches.masks) > 0
    x, y = lidc_unet_inputs(patches.images), lidc_unet_targets(masks)
    train, val = _split_rows(patients, np.zeros(len(patients), int), val_fraction, seed)
    trained = train_lidc_unet(x, y, {"train": train, "val": val}, epochs=epochs, seed=seed,
                              verbose=0)
    prob = predict_lidc_unet(trained.model, x[val])
    choice = choose_binarization(prob, masks[val]).iloc[0]
    threshold, central = float(choice["threshold"]), bool(choice["central"])
    pred = binarize(prob, threshold, central)
    spacing = np.asarray(patches.extra["pixel_spacing_mm"], dtype=float)[val]
    scores = score_cases(masks[val], pred, patients[val], [(s, s) for s in spacing])
    per_patient = scores.groupby("case_id")["dice"].mean().to_numpy()
    spacings = np.asarray(patches.extra["pixel_spacing_mm"], dtype=float)
    metadata = {
        "dataset": "LIDC-IDRI", "kind": "nodule_unet", "patch_size": PATCH_SIZE,
        "input_size": INPUT_SIZE, "window": LUNG_WINDOW, "soft_tissue_window": SOFT_TISSUE_WINDOW,
        "threshold": threshold, "central": central, "tta": "dihedral", "epochs": epochs,
        "seed": seed,
        "pixel_spacing_range_mm": [round(float(spacings.min()), 3),
                                   round(float(spacings.max()), 3)],
    }
    card = _card(
        "nodule_unet", "2D nodule outline on an axial slice", patches, patients,
        label="The outlining reader's outline of the nodule on that reader's largest-area slice.",
        preprocessing=(f"A {PATCH_SIZE} x {PATCH_SIZE} axial patch in the scan's own pixels "
                       f"(trained on {spacings.min():.2f}-{spacings.max():.2f} mm; lunglib "
                       "resamples other scans into this range), centred on the nodule; HU "
                       f"windows {LUNG_WINDOW} and {SOFT_TISSUE_WINDOW} scaled to [0, 1]."),
        architecture=(f"build_unet 2D, depth 3, 16 filters, Dice + BCE, {epochs} epochs with a "
                      "cosine learning rate, rotation/flip/zoom/shift augmentation, 8 dihedral "
                      "views averaged at prediction."),
        evaluation={
            "protocol": ("The recipe's test figures (not of this file): patients split 70/15/15, "
                         "test patients scored once; docs/results.md, 'LIDC 2D U-Net'. This "
                         f"model: every patient but {len(set(patients[val]))} validation "
                         "patients, on which the threshold and the central-component rule were "
                         "chosen; per-patient Dice with a bootstrap 95 % interval (1000 "
                         "resamples of patients)."),
            "validation_per_patient_dice": _mean_with_interval(per_patient),
            "validation_per_patch_dice": round(float(scores["dice"].mean()), 3),
            "binarisation": {"threshold": threshold, "central_component": central},
        },
        limits=[
            "2D: one slice at a time; a volume is approximated by outlining neighbouring slices.",
            "Trained on patches centred on the nodule: the point given must lie inside it.",
            "Reader outlines vary (LIDC convention draws just outside the nodule).",
            "Nodules larger than the 71-pixel patch are clipped.",
        ],
    )
    return ShippedModel("nodule_unet", trained.model, metadata, card)


# ------------------------------------------------------------------------------------------------
# False-positive reducer


def reducer_inputs(crops_hu: np.ndarray) -> np.ndarray:
    """Reducer input of HU crops ``(n, size, size)``: one channel per :data:`REDUCER_WINDOWS`."""
    return window_channels(np.asarray(crops_hu, dtype=np.float32), REDUCER_WINDOWS)


def reducer_crops(
    images: np.ndarray,
    masks: np.ndarray,
    spacing_mm: np.ndarray,
    positives_per_patch: int = 2,
    negatives_per_patch: int = 4,
    jitter_mm: float = 2.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training crops of the reducer from outlined nodule patches.

    Parameters
    ----------
    images, masks : ndarray (n, h, w)
        HU patches and their outlines.
    spacing_mm : ndarray (n,)
        Pixel size of each patch.
    positives_per_patch : int
        Crops centred on the outline's centroid, moved by up to ``jitter_mm`` in each axis.
    negatives_per_patch : int
        At most this many crops whose whole field (a :data:`REDUCER_SIZE` square at
        :data:`REDUCER_SPACING_MM`) lies inside the patch and keeps 2 pixels clear of the outline;
        patches with a nodule too large to leave such a place give none.
    seed : int

    Returns
    -------
    crops : ndarray (m, REDUCER_SIZE, REDUCER_SIZE) float32, HU
    labels : ndarray (m,) int, 1 = nodule
    source : ndarray (m,) int, the patch each crop came from
    """
    rng = np.random.default_rng(seed)
    crops, labels, source = [], [], []
    for i, (image, mask, spacing) in enumerate(zip(images, masks, spacing_mm, strict=True)):
        mask = np.asarray(mask) > 0
        if not mask.any():
            continue
        centre = np.array(ndimage.center_of_mass(mask))
        half = REDUCER_SIZE / 2 * REDUCER_SPACING_MM / float(spacing)  # in patch pixels
        for _ in range(positives_per_patch):
            shift = rng.uniform(-jitter_mm, jitter_mm, 2) / float(spacing)
            crops.append(axial_patch(image, centre + shift, REDUCER_SIZE, float(spacing),
                                     REDUCER_SPACING_MM))
            labels.append(1)
            source.append(i)
        clear = ndimage.binary_dilation(mask, iterations=2)
        rows, cols = np.nonzero(clear)
        lo, hi = half, np.array(image.shape) - 1 - half
        if np.any(hi < lo):
            continue
        found = 0
        for _ in range(40 * negatives_per_patch):
            if found == negatives_per_patch:
                break
            c = rng.uniform(lo, hi)
            touches = ((np.abs(rows - c[0]) <= half) & (np.abs(cols - c[1]) <= half)).any()
            if touches:
                continue
            crops.append(axial_patch(image, c, REDUCER_SIZE, float(spacing), REDUCER_SPACING_MM))
            labels.append(0)
            source.append(i)
            found += 1
    return (np.asarray(crops, dtype=np.float32), np.asarray(labels, dtype=np.int64),
            np.asarray(source, dtype=np.int64))


def train_nodule_reducer(
    patches: PatchSet,
    exclude_patients: Sequence[str] = EVALUATION_PATIENTS,
    seed: int = 42,
    val_fraction: float = 0.15,
    epochs: int = 30,
) -> ShippedModel:
    """Train the false-positive reducer on :func:`reducer_crops` of every patch.

    ``exclude_patients`` are left out entirely (the scans its re-ranking is measured on). Early
    stopping and the threshold (highest validation accuracy) use the validation patients.
    """
    from lunglib.augment import dihedral_augment
    from lunglib.models import build_cnn
    from lunglib.training import predict_proba, set_seed, train_model

    patients = np.asarray(patches.patient_ids).astype(str)
    keep = ~np.isin(patients, list(exclude_patients))
    spacing = np.asarray(patches.extra["pixel_spacing_mm"], dtype=float)
    crops, labels, source = reducer_crops(np.asarray(patches.images)[keep],
                                          np.asarray(patches.masks)[keep], spacing[keep],
                                          seed=seed)
    crop_patients = patients[keep][source]
    train, val = _split_rows(crop_patients, labels, val_fraction, seed)
    x = reducer_inputs(crops)
    set_seed(seed)
    model = build_cnn(x.shape[1:], **REDUCER_CONFIG, name="nodule_reducer")
    history = train_model(model, (x[train], labels[train]), (x[val], labels[val]), epochs=epochs,
                          patience=5, batch_size=64, class_weight="balanced",
                          augment=dihedral_augment, seed=seed)
    p_val = predict_proba(model, x[val])
    threshold = float(choose_threshold(labels[val], p_val, rule="accuracy"))
    validation = {
        **_auc_with_interval(labels[val], p_val, crop_patients[val]),
        "n_positive": int(labels[val].sum()),
        "threshold": round(threshold, 3),
        "sensitivity_at_threshold": round(float(np.mean(p_val[labels[val] == 1] >= threshold)), 3),
        "specificity_at_threshold": round(float(np.mean(p_val[labels[val] == 0] < threshold)), 3),
    }
    metadata = {
        "dataset": "LIDC-IDRI", "kind": "nodule_reducer", "input_size": REDUCER_SIZE,
        "target_spacing_mm": REDUCER_SPACING_MM, "windows": REDUCER_WINDOWS,
        "threshold": threshold, "tta": "dihedral", "excluded_patients": len(exclude_patients),
        "epochs_run": len(history.history["loss"]),
    }
    card = _card(
        "nodule_reducer", "Nodule or not, at a candidate point on an axial slice", patches,
        patients[keep],
        label=("1: a crop centred (within 2 mm) on a reader's outline of a nodule >= 3 mm; 0: a "
               "crop of the same patches that keeps clear of every outline (vessels, fissures, "
               "pleura, parenchyma). No negatives from whole scans: the one real LIDC-IDRI scan "
               "at hand is where the re-ranking is measured, and its patient is left out."),
        preprocessing=(f"A {REDUCER_SIZE} x {REDUCER_SIZE} axial crop at {REDUCER_SPACING_MM} mm "
                       f"pixels centred on the point; HU windows {REDUCER_WINDOWS[0]} and "
                       f"{REDUCER_WINDOWS[1]} scaled to [0, 1]."),
        architecture=f"build_cnn 2D {REDUCER_CONFIG}; 8 dihedral views averaged at prediction.",
        evaluation={
            "protocol": ("Patient-level validation split of the crops (early stopping and the "
                         "threshold were chosen on it); ROC-AUC with a patient-bootstrap 95 % "
                         "interval (1000 resamples). Its effect on whole-scan candidates is "
                         "measured by benchmarks/bench_lidc_detection.py (docs/results.md)."),
            "validation": validation,
            "n_training_crops": int(len(train)),
        },
        limits=[
            "2D: a vessel running along the slice normal looks like a nodule on one slice.",
            "Negatives come from 71 x 71 patches around nodules, not from whole scans: far "
            "structures (mediastinum, chest wall, bowel) were never shown to it.",
            "Crops of nodules larger than the 19 mm field see only the nodule.",
        ],
    )
    return ShippedModel("nodule_reducer", model, metadata, card)


# ------------------------------------------------------------------------------------------------
# Model cards


def model_card_markdown(card: Mapping[str, Any]) -> str:
    """A short Markdown rendering of a model card (``<name>.md`` beside the bundle)."""
    lines = [f"# Model card: {card['name']} -- {card['title']}", ""]
    lines += [f"**Intended use.** {card['intended_use']}", ""]
    data = card["training_data"]
    lines += ["## Training data", "",
              f"{data['source']}: {data['n_patches']} patches of {data['n_patients']} patients.",
              f"Licence: {data['licence']}.", "", "Cite:"]
    lines += [f"- {c}" for c in data["citations"]]
    for key, heading in (("label", "Label"), ("preprocessing", "Preprocessing"),
                         ("architecture", "Architecture"), ("calibration", "Calibration")):
        if key in card:
            lines += ["", f"## {heading}", "", str(card[key])]
    lines += ["", "## Evaluation", ""]
    for key, value in sorted(card["evaluation"].items()):  # the order the bundle's JSON keeps
        text = json.dumps(value) if isinstance(value, dict) else str(value)
        lines.append(f"- **{key.replace('_', ' ')}**: {text}")
    lines += ["", "## Known limits", ""] + [f"- {item}" for item in card["limits"]]
    lines += ["", "## Retrain", "", f"`{card['how_to_retrain']}` (lunglib "
              f"{card['lunglib_version']}, trained {card['trained_on']})", ""]
    return "\n".join(lines)
