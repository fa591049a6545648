"""The 2D nodule U-Net on the real LIDC-IDRI patches, from split to scored test patients.

The LIDC nodule patches (``../shared/data/lidc_nodule_patches/dev.npz``, read with
:func:`lunglib.datasets.load_patch_set`) are 71 x 71 pixels of HU, each centred on one reader's
outline of a nodule on that reader's largest-area slice. The recipe:

1. **Split** -- patients 70/15/15 into train/validation/test
   (:func:`~lunglib.evaluation.splits.patient_shuffle_split`); all patches of a patient stay on
   one side.
2. **Inputs** -- :func:`lidc_unet_inputs`: HU in the lung window [-1000, 400] scaled to [0, 1],
   padded from 71 to 72 pixels by edge replication so that three 2x poolings divide it.
   :func:`add_windows` adds the soft-tissue window [-160, 240] HU as a second channel, computed
   *after* augmentation from the lung-window channel (it lies inside the lung window, so it is
   recovered exactly), where dense boundaries keep their contrast.
3. **Training** -- :func:`train_lidc_unet`: :func:`lunglib.models.build_unet` (2D, Dice + BCE)
   on 48 x 48 centre crops (nearly every outline fits whole, at half the cost of 72 x 72), the
   training patches rotated by any angle, flipped along both axes, zoomed 0.9-1.1 and shifted up
   to 6 pixels (:func:`lidc_unet_augmentation`, one resampling of image and mask together) before
   the crop. ``schedule="cosine"``: learning rate decayed from 1e-3 to 0 over all epochs, no early
   stop; ``"plateau"``: halved after a 3-epoch plateau, early stop. The weights of the best
   validation loss are restored, then run on the whole 72 x 72 patch (the network is fully
   convolutional).
4. **Prediction** -- :func:`predict_lidc_unet`: the mean of one or more models' probability maps,
   each averaged over the eight exact rotations/mirrorings (:func:`lunglib.augment.predict_tta`),
   cropped back to 71 x 71.
5. **Binarisation** -- threshold and whether to keep only the central connected component are
   chosen on the validation patients (:func:`~lunglib.evaluation.segmentation.choose_binarization`);
   the test patients are scored once (:func:`evaluate_lidc_unet`).
6. **Baseline** -- :func:`threshold_baseline`: -400 HU, holes filled, the central component.

:func:`run_lidc_unet` chains the steps and returns Dice, IoU, HD95 and normalised surface Dice
(:func:`~lunglib.evaluation.segmentation.surface_dice` at 1 mm) per test patch and per test
patient (a patient's patches averaged first) for each model and the baseline. Seeds fix the
split, the initial weights, the shuffle and the augmentation; multi-threaded TensorFlow kernels
may still vary between runs unless ``deterministic=True`` (:func:`lunglib.training.set_seed`).

Data: LIDC-IDRI, CC BY 3.0 (Armato et al. 2011, 2015; TCIA, Clark et al. 2013).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from lunglib.augment import (
    Compose,
    RandomFlip,
    RandomRotate,
    RandomScale,
    RandomTranslate,
    predict_tta,
    tf_augment,
)
from lunglib.datasets import PatchSet
from lunglib.evaluation.segmentation import (
    BINARIZATION_THRESHOLDS,
    binarize,
    central_component,
    choose_binarization,
    score_cases,
    summarize,
)
from lunglib.evaluation.splits import Split, patient_shuffle_split
from lunglib.preprocess import window

LUNG_WINDOW = (-1000.0, 400.0)
"""HU range of the first input channel, scaled to [0, 1]."""
SOFT_TISSUE_WINDOW = (-160.0, 240.0)
"""HU range of the second input channel (mediastinal window, W 400 / L 40)."""
PATCH_SIZE = 71
"""Side of the LIDC nodule patches, in pixels."""
INPUT_SIZE = 72
"""Side of the network input: the patch padded to a multiple of 2**3."""
SCHEDULES = ("cosine", "plateau")


def lidc_unet_inputs(hu: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Lung-window network inputs of HU patches: ``(n, size, size, 1)`` float32 in [0, 1].

    Parameters
    ----------
    hu : ndarray (n, h, w)
        Patches in HU (``PatchSet.images`` of the LIDC patch file; no offset to add).
    size : int, default 72
        Side after padding: rows and columns are added at the bottom and right by edge
        replication, so a prediction cropped to ``[:h, :w]`` lies on the original pixels.

    Returns
    -------
    ndarray of float32 (n, size, size, 1)
        One channel; :func:`add_windows` adds the soft-tissue one.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3 or hu.shape[1] > size or hu.shape[2] > size:
        raise ValueError(f"hu must be (n, h, w) patches with h, w <= {size}, got {hu.shape}")
    x = window(hu, *LUNG_WINDOW)
    pad = ((0, 0), (0, size - hu.shape[1]), (0, size - hu.shape[2]))
    return np.pad(x, pad, mode="edge")[..., None]


def lidc_unet_targets(masks: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Masks padded with background like :func:`lidc_unet_inputs`: ``(n, size, size, 1)`` bool."""
    masks = np.asarray(masks) > 0
    pad = ((0, 0), (0, size - masks.shape[1]), (0, size - masks.shape[2]))
    return np.pad(masks, pad, mode="constant")[..., None]


def add_windows(x, channels: int):
    """Network input: the lung-window channel, plus the soft-tissue window when ``channels`` is 2.

    The soft-tissue window spreads -160..240 HU (solid nodule, vessels, pleura) over [0, 1] so
    dense boundaries keep their contrast. It lies inside the lung window, so it is recomputed
    exactly from the lung-window channel -- after augmentation, so that interpolation acts on one
    channel only. Works on numpy arrays and on tensors inside ``tf.data``.

    Parameters
    ----------
    x : array or tensor (..., 1)
        Lung-window inputs from :func:`lidc_unet_inputs` (or a crop of one example).
    channels : {1, 2}
        1: ``x`` itself; 2: ``x`` and the soft-tissue window, concatenated on the last axis.
    """
    import keras

    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 (lung window) or 2 (+ soft tissue), got {channels}")
    if channels == 1:
        return x
    low, high = LUNG_WINDOW
    soft_low, soft_high = SOFT_TISSUE_WINDOW
    hu = x * (high - low) + low
    soft = keras.ops.clip((hu - soft_low) / (soft_high - soft_low), 0.0, 1.0)
    return keras.ops.concatenate([x, soft], axis=-1)


def lidc_unet_augmentation() -> Compose:
    """The training augmentation: any rotation, flips of both axes, zoom 0.9-1.1, shifts <= 6 px."""
    return Compose([RandomRotate(180.0), RandomFlip(axes=(0, 1)),
                    RandomScale((0.9, 1.1), axes=(0, 1)), RandomTranslate(6.0)])


def lidc_unet_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, augment: bool,
                      crop: int, channels: int = 1):
    """A ``tf.data`` pipeline of ``crop`` x ``crop`` centre crops, augmented first for training.

    Parameters
    ----------
    x, y : ndarray (n, s, s, 1)
        Lung-window inputs and masks (:func:`lidc_unet_inputs`, :func:`lidc_unet_targets`).
    batch_size : int
    seed : int
        Seeds the shuffle and, per example, the augmentation draw (so parallel calls repeat).
    augment : bool
        Shuffle each epoch and apply :func:`lidc_unet_augmentation` (training split only).
    crop : int
        Side of the centre crop taken after augmentation.
    channels : {1, 2}
        Input channels (:func:`add_windows`), added after the crop.

    Returns
    -------
    tf.data.Dataset
        Batches of ``(image (b, crop, crop, channels), mask (b, crop, crop, 1) float32)``.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32)))
    if augment:
        transform = lidc_unet_augmentation()
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed)))
        ds = ds.map(lambda pair, s: tf_augment(pair[0], pair[1], transform, s),
                    num_parallel_calls=2)
    lo = (x.shape[1] - crop) // 2
    ds = ds.map(lambda img, msk: (add_windows(img[lo:lo + crop, lo:lo + crop], channels),
                                  msk[lo:lo + crop, lo:lo + crop]))
    return ds.batch(batch_size).prefetch(2)


def threshold_baseline(hu: np.ndarray, level: float = -400.0) -> np.ndarray:
    """Baseline masks: HU above ``level``, holes filled, the component at (or nearest) the centre.

    The nodule is centred in every LIDC patch by construction, so the central component is the
    nodule whenever it is denser than ``level`` and does not touch denser tissue.
    """
    return np.stack([central_component(ndimage.binary_fill_holes(p > level)) for p in hu])


@dataclass
class TrainedUnet:
    """One trained U-Net of the recipe.

    Attributes
    ----------
    model : keras.Model
        The best-validation-loss weights in a network for the whole ``INPUT_SIZE`` patch.
    epochs : int
        Epochs run.
    seconds : float
        Training time.
    history : dict
        Keras' per-epoch ``loss``, ``val_loss``, ``dice``, ... lists.
    """

    model: object
    epochs: int
    seconds: float
    history: dict = field(default_factory=dict)


def train_lidc_unet(
    x: np.ndarray,
    y: np.ndarray,
    split: Mapping[str, np.ndarray],
    epochs: int = 100,
    channels: int = 2,
    schedule: str = "cosine",
    seed: int = 42,
    depth: int = 3,
    filters: int = 16,
    crop: int = 48,
    batch_size: int = 32,
    patience: int = 5,
    learning_rate: float = 1e-3,
    deterministic: bool = False,
    verbose: int = 2,
    strategy=None,
) -> TrainedUnet:
    """Train one U-Net of the recipe on the ``train`` rows, selecting weights on the ``val`` rows.

    Parameters
    ----------
    x, y : ndarray (n, 72, 72, 1)
        Lung-window inputs and masks of all patches (:func:`lidc_unet_inputs`,
        :func:`lidc_unet_targets`).
    split : mapping of str to ndarray
        Row indices of the ``train`` and ``val`` patches, e.g. :meth:`Split.indices`.
    epochs : int, default 100
    channels : {1, 2}, default 2
        Lung window only, or lung and soft-tissue windows (:func:`add_windows`).
    schedule : {"cosine", "plateau"}, default "cosine"
        ``cosine``: learning rate decayed from ``learning_rate`` to 0 over ``epochs``, no early
        stop; ``plateau``: halved after 3 epochs without a lower validation loss, stopped after
        ``patience``. Either way the best validation-loss weights are restored.
    seed : int, default 42
        Seeds the initial weights (:func:`lunglib.training.set_seed`), the shuffle and the
        augmentation.
    depth, filters : int
        U-Net depth (poolings) and first-level filters (:func:`lunglib.models.build_unet`).
    crop : int, default 48
        Side of the training centre crops (a multiple of ``2 ** depth``).
    batch_size : int, default 32
    patience : int, default 5
        Early-stopping patience of the plateau schedule.
    learning_rate : float, default 1e-3
        Initial Adam learning rate.
    deterministic : bool, default False
        Also enable TensorFlow op determinism (:func:`lunglib.training.set_seed`).
    verbose : int, default 2
        Keras ``fit`` verbosity (2: one line per epoch).
    strategy : tf.distribute.Strategy, optional
        Build and train under it (:mod:`lunglib.training.distribute`); ``batch_size`` is then
        per replica. None: one device.

    Returns
    -------
    TrainedUnet
    """
    import keras
    import tensorflow as tf

    from lunglib.models import build_unet, resize_unet
    from lunglib.training import global_batch_size, set_seed, train_model

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    keras.backend.clear_session()
    set_seed(seed, deterministic=deterministic)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_unet((crop, crop, channels), depth=depth, filters=filters, dropout=0.1,
                           learning_rate=learning_rate)
    batch_size = global_batch_size(batch_size, strategy)
    if schedule == "cosine":
        cosine = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs)
        callbacks = [keras.callbacks.LearningRateScheduler(lambda epoch: float(cosine(epoch)))]
        patience = epochs  # no early stop; train_model still restores the best weights
    else:
        callbacks = [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3)]
    train_rows, val_rows = split["train"], split["val"]
    start = time.perf_counter()
    history = train_model(
        model,
        lidc_unet_dataset(x[train_rows], y[train_rows], batch_size, seed, True, crop, channels),
        lidc_unet_dataset(x[val_rows], y[val_rows], batch_size, seed, False, crop, channels),
        epochs=epochs,
        patience=patience,
        class_weight=None,
        monitor="val_loss",
        callbacks=callbacks,
        verbose=verbose,
        strategy=strategy,
    )
    seconds = time.perf_counter() - start
    # The network is fully convolutional: the same weights run on the whole padded patch.
    full = resize_unet(model, x.shape[1:3])
    return TrainedUnet(full, len(history.history["loss"]), seconds, dict(history.history))


def predict_lidc_unet(models: Sequence | object, x: np.ndarray, tta: bool = True,
                      size: int = PATCH_SIZE, batch_size: int = 64) -> np.ndarray:
    """Nodule probabilities of the patches: the mean over ``models``, each averaged over TTA views.

    Parameters
    ----------
    models : keras.Model or sequence of them
        Trained U-Nets (``TrainedUnet.model``); their input channels (1 or 2) pick
        :func:`add_windows`.
    x : ndarray (n, 72, 72, 1)
        Lung-window inputs (:func:`lidc_unet_inputs`).
    tta : bool, default True
        Average each model over the eight exact rotations/mirrorings
        (:func:`lunglib.augment.predict_tta` with ``dense=True``: every view's map turned back).
    size : int, default 71
        Side of the original patches; the maps are cropped to ``[:size, :size]``.
    batch_size : int, default 64

    Returns
    -------
    ndarray of float32 (n, size, size)
    """
    models = list(models) if isinstance(models, list | tuple) else [models]
    if not models:
        raise ValueError("no models to predict with")
    total = 0.0
    for model in models:
        inputs = np.asarray(add_windows(x, int(model.input_shape[-1])))
        prob = predict_tta(lambda b, m=model: m.predict(b, batch_size=batch_size, verbose=0),
                           inputs, views="dihedral" if tta else "none", dense=True)
        total = total + prob
    return (total / len(models))[:, :size, :size, 0].astype(np.float32)


def evaluate_lidc_unet(
    val_prob: np.ndarray,
    val_truth: np.ndarray,
    test_prob: np.ndarray,
    test_truth: np.ndarray,
    test_patients: Sequence[str],
    test_spacing: Sequence[float],
    thresholds: Sequence[float] = BINARIZATION_THRESHOLDS,
) -> tuple[dict, pd.DataFrame]:
    """Choose the binarisation on validation, then score the test patches with it.

    Parameters
    ----------
    val_prob, val_truth : ndarray (n_val, h, w)
        Validation probabilities and masks: the only data the choice sees.
    test_prob, test_truth : ndarray (n_test, h, w)
        Test probabilities and masks, scored once.
    test_patients : sequence of str
        Patient of each test patch (for per-patient means).
    test_spacing : sequence of float
        In-plane pixel spacing of each test patch in mm (for HD95).
    thresholds : sequence of float
        Thresholds tried (:func:`~lunglib.evaluation.segmentation.choose_binarization`).

    Returns
    -------
    choice : dict
        ``threshold``, ``central`` and ``val_dice`` (mean validation Dice of that choice).
    scores : DataFrame
        Per test patch: ``case_id`` (the patient), ``dice, iou, hd95_mm, nsd, true_voxels,
        pred_voxels`` (:func:`~lunglib.evaluation.segmentation.score_cases`).
    """
    best = choose_binarization(val_prob, val_truth, thresholds).iloc[0]
    choice = {"threshold": float(best["threshold"]), "central": bool(best["central"]),
              "val_dice": float(best["dice"])}
    pred = binarize(test_prob, choice["threshold"], choice["central"])
    return choice, score_patches(test_truth, pred, test_patients, test_spacing)


def score_patches(truth: np.ndarray, pred: np.ndarray, patients: Sequence[str],
                  spacing: Sequence[float]) -> pd.DataFrame:
    """Dice, IoU, HD95 and NSD (mm, isotropic in-plane ``spacing``) of each patch, by patient."""
    return score_cases(truth, pred, patients, [(s, s) for s in spacing])


def summary_table(scores: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean scores per patch and per patient (its patches averaged first) of each method.

    Parameters
    ----------
    scores : mapping of str to DataFrame
        Method name -> per-patch scores (:func:`score_patches`).

    Returns
    -------
    DataFrame
        Columns ``method, level`` (``per_patch`` / ``per_patient``), ``n, dice, iou, hd95_mm,
        nsd, hd95_undefined`` (``nsd`` when the scores have it).
    """
    rows = []
    for name, table in scores.items():
        summary = summarize(table, by="case_id")
        for level, label in (("per_case", "per_patch"), ("per_case_id", "per_patient")):
            rows.append({"method": name, "level": label, **summary.loc[level].to_dict()})
    out = pd.DataFrame(rows)
    out["n"] = out["n"].astype(int)
    out["hd95_undefined"] = out["hd95_undefined"].astype(int)
    return out


@dataclass
class LidcUnetResult:
    """What :func:`run_lidc_unet` returns.

    Attributes
    ----------
    table : DataFrame
        :func:`summary_table` of every method on the test patients.
    scores : dict of str to DataFrame
        Per-test-patch scores of every method.
    choices : DataFrame
        Per U-Net variant: ``method, threshold, central, val_dice`` chosen on validation.
    split : Split
        The patients of train, validation and test.
    epochs : list of int
        Epochs run by each member.
    seconds : list of float
        Training time of each member.
    test_probs : dict of str to ndarray
        Test probability maps of every U-Net variant, ``(n_test, 71, 71)``.
    test_masks : dict of str to ndarray
        The binary test masks scored for every method (U-Net variants and baseline), keyed as
        ``scores``, ``(n_test, 71, 71)`` bool -- with the truth and the split, enough to score
        the test patients again under another metric without retraining.
    """

    table: pd.DataFrame
    scores: dict[str, pd.DataFrame]
    choices: pd.DataFrame
    split: Split
    epochs: list[int]
    seconds: list[float]
    test_probs: dict[str, np.ndarray]
    test_masks: dict[str, np.ndarray] = field(default_factory=dict)


def run_lidc_unet(
    patch_set: PatchSet,
    seed: int = 42,
    members: int = 1,
    tta: bool = True,
    baseline_level: float = -400.0,
    **train_options: Any,
) -> LidcUnetResult:
    """The whole recipe: split, train ``members`` U-Nets, choose on validation, score the test.

    Parameters
    ----------
    patch_set : PatchSet
        LIDC nodule patches in HU with masks, patient ids and ``extra["pixel_spacing_mm"]``
        (:func:`lunglib.datasets.load_patch_set`).
    seed : int, default 42
        Draws the patient split (:func:`~lunglib.evaluation.splits.patient_shuffle_split`) and
        seeds member 0; member ``m`` is trained with ``seed + 1000 m``.
    members : int, default 1
        U-Nets trained on the same split whose probability maps are averaged. With more than
        one, member 0 alone and the ensemble are both chosen on validation and scored. With 0
        nothing is trained: only the baseline is scored on the same test patients (quick, for
        recomputing a metric of the baseline).
    tta : bool, default True
        Test-time augmentation (:func:`predict_lidc_unet`).
    baseline_level : float, default -400
        HU level of :func:`threshold_baseline`.
    **train_options
        Settings of every member, passed to :func:`train_lidc_unet` with its defaults: ``epochs,
        channels, schedule, depth, filters, crop, batch_size, patience, learning_rate,
        deterministic, verbose`` (not ``seed``, which is per member).

    Returns
    -------
    LidcUnetResult
    """
    if members < 0:
        raise ValueError(f"members must be 0 (the baseline only) or more, got {members}")
    if patch_set.masks is None or "pixel_spacing_mm" not in patch_set.extra:
        raise ValueError(f"{patch_set.source}: the recipe needs masks and pixel_spacing_mm")
    hu, truth = patch_set.images, patch_set.masks > 0
    patients = patch_set.patient_groups()
    spacing = patch_set.extra["pixel_spacing_mm"].astype(float)
    split = patient_shuffle_split(patients, seed=seed)
    rows = split.indices(patients)
    x, y = lidc_unet_inputs(hu), lidc_unet_targets(truth)
    val, test = rows["val"], rows["test"]
    trained, val_probs, test_probs = [], [], []
    for member in range(members):
        # each member is predicted right away: the next one starts with a cleared Keras session
        member_run = train_lidc_unet(x, y, rows, seed=seed + 1000 * member, **train_options)
        val_probs.append(predict_lidc_unet(member_run.model, x[val], tta))
        test_probs.append(predict_lidc_unet(member_run.model, x[test], tta))
        trained.append(member_run)
    variants = {"U-Net 2D": (val_probs[0], test_probs[0])} if members else {}
    if members > 1:
        variants = {"U-Net 2D (member 0)": variants["U-Net 2D"],
                    f"U-Net 2D ensemble of {members}": (np.mean(val_probs, axis=0),
                                                        np.mean(test_probs, axis=0))}
    scores, choices, masks = {}, [], {}
    for name, (val_prob, test_prob) in variants.items():
        choice, scores[name] = evaluate_lidc_unet(val_prob, truth[val], test_prob, truth[test],
                                                  patients[test], spacing[test])
        choices.append({"method": name, **choice})
        masks[name] = binarize(test_prob, choice["threshold"], choice["central"])
    baseline_name = f"baseline {baseline_level:g} HU, central component"
    masks[baseline_name] = threshold_baseline(hu[test], baseline_level)
    scores[baseline_name] = score_patches(truth[test], masks[baseline_name], patients[test],
                                          spacing[test])
    return LidcUnetResult(
        table=summary_table(scores),
        scores=scores,
        choices=pd.DataFrame(choices, columns=None if choices else ["method"]),
        split=split,
        epochs=[t.epochs for t in trained],
        seconds=[t.seconds for t in trained],
        test_probs={name: probs[1] for name, probs in variants.items()},
        test_masks=masks,
    )
