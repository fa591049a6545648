"""2D U-Net nodule segmentation on the real LIDC-IDRI patches, with a patient-level split.

Data: ``../shared/data/lidc_nodule_patches/dev.npz`` (1762 71x71 patches of 563 patients, one
reader's outline on that reader's largest-area slice). ``image`` is already in HU (lung
parenchyma has a median of about -800 HU with either ``hu_offset``; do not add the offset).

Protocol
--------
- Patients are split 70/15/15 into train/validation/test with a seeded shuffle of patient ids
  (sklearn ``GroupShuffleSplit``); all patches of a patient stay on one side.
- Input: HU windowed to [-1000, 400] and scaled to [0, 1]; 71x71 padded to 72x72 (edge
  replication, one row and column) so that three 2x poolings divide it; predictions are cropped
  back to 71x71 before scoring. Default ``--channels 2`` adds a second channel, the soft-tissue
  window [-160, 240] HU, computed after augmentation (``--channels 1``: lung window only).
- Training: ``lunglib.models.unet.build_unet`` 2D on 48x48 centre crops (98 % of the outlines fit
  whole; 2x cheaper than 72x72), Dice + BCE, ``lunglib.augment`` rotation (any angle), flips,
  zoom 0.9-1.1 and shifts up to 6 pixels of image and mask together before the crop. Default
  ``--schedule cosine``: learning rate 1e-3 decayed to 0 over all epochs
  (``keras.optimizers.schedules.CosineDecay``), no early stop, the weights of the best
  validation loss restored; ``--schedule plateau``: halve on a 3-epoch plateau, early stopping
  after 5. Being fully convolutional, the trained weights are then run on the whole 72x72 patch.
- The binarisation threshold and whether to keep only the central connected component are
  chosen on the validation patients; the test patients are scored once.
- Baseline: threshold at -400 HU, fill holes, keep the connected component under (or nearest
  to) the patch centre -- the nodule is centred in every patch by construction.

Scores: mean Dice and IoU over test patches and over test patients (patches of a patient
averaged first), plus the 95th-percentile Hausdorff distance in mm (in-plane pixel spacing).

Recipe A: earlier default (``--channels 1 --schedule plateau``)
---------------------------------------------------------------
Result (seed 42, depth 3, 16 filters, 40 epochs, TTA; 1223/242/297 patches of 393/85/85
patients). Validation chose threshold 0.75 (from 0.20-0.85 in steps of 0.05) with the central
component (val Dice 0.840):

    method                               level        n   Dice   IoU  HD95 mm
    U-Net 2D                             per patch  297  0.833 0.733    2.08
    U-Net 2D                             per patient 85  0.836 0.736    2.16
    baseline -400 HU, central component  per patch  297  0.391 0.285   10.46
    baseline -400 HU, central component  per patient 85  0.423 0.310    9.43

Command: ``nice -n 5 .venv/bin/python benchmarks/bench_lidc_segmentation.py --epochs 40``.
Training took 59 min on the 2-core machine shared with 3-4 other jobs (55-180 s per epoch).
Early stopping did not trigger: the learning rate was halved at epochs 30 and 37 and the best
validation loss (0.214) came in the last epochs. The earlier default of 30 epochs with
thresholds 0.3-0.7 gave 0.821 per patch and 0.828 per patient.

A second seed (2026-11-28, ``TF_NUM_INTRAOP_THREADS=1 nice -n 15 ... --epochs 40 --seed 7``; the
seed also draws the patient split: 267 test patches of 85 patients; training 24.0 min with one
TensorFlow thread beside two other training jobs). Validation chose threshold 0.8 with the
central component (val Dice 0.816):

    method                               level        n   Dice   IoU  HD95 mm
    U-Net 2D                             per patch  267  0.836 0.737    2.07
    U-Net 2D                             per patient 85  0.840 0.741    2.22
    baseline -400 HU, central component  per patch  267  0.414 0.298    8.95
    baseline -400 HU, central component  per patient 85  0.455 0.334    8.11

A third seed (``--seed 11``, same settings; 250 test patches of 85 patients; early stopping at
epoch 37, training 17.3 min). Validation chose threshold 0.75 with the central component (val
Dice 0.793 -- this split's validation patients are harder too):

    method                               level        n   Dice   IoU  HD95 mm
    U-Net 2D                             per patch  250  0.784 0.682    3.26
    U-Net 2D                             per patient 85  0.791 0.690    3.04
    baseline -400 HU, central component  per patch  250  0.352 0.258   12.55
    baseline -400 HU, central component  per patient 85  0.376 0.280   11.56

Over the three seeds (each its own patient split) the U-Net scores 0.833, 0.836 and 0.784 per
patch (mean 0.818) and 0.836, 0.840 and 0.791 per patient (mean 0.822): above the published
~0.83 on two splits, below it on the third, whose test patients are harder for the threshold
baseline as well (0.35 against 0.39-0.41). The spread between splits (about 0.05) is larger than
the margin over 0.83, so the aim is NOT robustly met.

Recipe B: current default (``--channels 2 --schedule cosine``), 2026-11-28
-------------------------------------------------------------------------
Chosen before any run as one candidate (the budget allowed one recipe over three seeds): two
input windows and a cosine schedule, both free in time (a training step costs the same; 24 and
32 filters cost 1.7x and 2.6x per step, 72x72 training 1.9x, so they did not fit three seeds).
Seed 11 was run first as the screen, and seeds 42 and 7 only because its validation Dice beat
recipe A's (0.817 against 0.793). Commands, one after the other beside one other job:
``TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 nice -n 10 .venv/bin/python
benchmarks/bench_lidc_segmentation.py --epochs 40 --seed {11,42,7} --channels 2 --schedule
cosine``; training 20.5, 17.6 and 19.6 min (40 epochs each, 22-36 s per epoch). Validation
chose the central component and threshold 0.8 (seed 11) and 0.75 (seeds 42, 7).

Both recipes, all runs (val = validation Dice of the validation-chosen binarisation; test = mean
Dice over test patches / over test patients; the baseline does not change with the recipe):

    recipe  seed  val    test per patch  test per patient
    A       42    0.840  0.833           0.836
    A        7    0.816  0.836           0.840
    A       11    0.793  0.784           0.791
    A       mean  0.816  0.818           0.822
    B       42    0.825  0.812           0.824
    B        7    0.811  0.836           0.839
    B       11    0.817  0.822           0.823
    B       mean  0.818  0.823           0.829

Recipe B has the higher mean validation Dice (0.818 against 0.816), so it is the default; the
margin (about 0.001) is well inside the run-to-run noise, and the two changes were not tried
apart, so neither is shown to help on its own. On test, B is steadier across splits (0.812-0.836
per patch against 0.784-0.836) and its means rise to 0.823 per patch and 0.829 per patient, but
both stay BELOW 0.83: the aim of beating the published ~0.83 on average over three patient
splits is still NOT met (seed 7 is above it, seeds 42 and 11 below). Recipe B IoU per patch /
per patient and HD95: seed 42 0.706 / 0.720, 2.46 / 2.29 mm; seed 7 0.735 / 0.739, 1.99 / 2.09
mm; seed 11 0.718 / 0.720, 2.19 / 2.27 mm.

Ensemble of two (recipe B, ``--members 2``), 2026-11-28
--------------------------------------------------------
``--members K`` trains K U-Nets on the same patient split (drawn from ``--seed``), member m
with ``keras.utils.set_random_seed(seed + 1000 m)`` and the same seed for its shuffle and
augmentation, and averages their TTA probability maps; threshold and central component are
chosen on validation separately for member 0 alone and for the ensemble. Member 0 is the
single model of ``--members 1`` (checked with ``--epochs 1``: same loss, choice and scores as
the code before the option). Commands: ``TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
nice -n 10 .venv/bin/python benchmarks/bench_lidc_segmentation.py --members 2 --seed {42,7}``
at the same time, and seed 11 beside them with ``nice -n 19`` (to use spare cycles; alone after
they ended). Training per member: 12.3 + 11.4 min (seed 42), 12.3 + 11.5 min (seed 7), 27.6 +
10.2 min (seed 11); all 40 epochs. Validation chose the central component throughout;
thresholds 0.7 / 0.65 (seed 42, member 0 / ensemble), 0.75 / 0.7 (seed 7), 0.8 / 0.8 (seed 11).

    model       seed  val    test per patch  test per patient
    member 0    42    0.820  0.795           0.798
    member 0     7    0.816  0.843           0.845
    member 0    11    0.824  0.828           0.830
    member 0    mean  0.820  0.822           0.824
    ensemble 2  42    0.813  0.798           0.810
    ensemble 2   7    0.820  0.841           0.847
    ensemble 2  11    0.820  0.820           0.821
    ensemble 2  mean  0.818  0.820           0.826

The ensemble's mean validation Dice (0.818) is BELOW member 0's (0.820), so the default stays
``--members 1``. Its test means, 0.820 per patch and 0.826 per patient, are both BELOW the
published ~0.83: the ensemble of two does not meet the aim either. Ensemble IoU per patch /
per patient and HD95: seed 42 0.695 / 0.705, 2.64 / 2.55 mm; seed 7 0.742 / 0.749, 1.95 / 2.02
mm; seed 11 0.717 / 0.718, 2.13 / 2.21 mm.

Training is not reproducible run to run: member 0 runs the same code and seed as the recipe B
runs above yet scores val 0.820 / 0.816 / 0.824 against 0.825 / 0.811 / 0.817 and test per
patch 0.795 / 0.843 / 0.828 against 0.812 / 0.836 / 0.822 (seeds 42 / 7 / 11). Reruns of one
seed thus move test Dice by up to 0.017, more than any gap to 0.83 reported here.

Recipe B with 32 filters (``--filters 32``), 2026-11-29
-------------------------------------------------------
Commands: ``TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 nice -n 10 .venv/bin/python
benchmarks/bench_lidc_segmentation.py --filters 32 --seed {42,7,11}``, the three at the same time
on the two cores; training 44.5, 42.5 and 41.6 min (40 epochs, about 65 s per epoch). Validation
chose the central component and thresholds 0.8 (seed 42), 0.85 (seed 7) and 0.75 (seed 11).

    filters  seed  val    test per patch  test per patient
    32       42    0.830  0.825           0.832
    32        7    0.825  0.851           0.853
    32       11    0.800  0.821           0.822
    32       mean  0.818  0.832           0.836
    16       mean  0.818  0.823           0.829   (recipe B above; its rerun as member 0: val 0.820)

Mean validation Dice is the same as with 16 filters (0.8183 against 0.8177, and 0.820 for the
rerun), so validation gives no reason to pay 2.6x per step and the default stays ``--filters
16``. The test means, 0.832 per patch and 0.836 per patient, are just above the published ~0.83,
but picking this width for that would be choosing on test, and the margin is well inside the
0.017 rerun noise; the aim is not counted as met. IoU per patch / per patient and HD95: seed 42
0.724 / 0.731, 2.24 / 2.17 mm; seed 7 0.752 / 0.754, 1.65 / 1.76 mm; seed 11 0.720 / 0.722,
2.50 / 2.55 mm.

Recipe B trained 100 epochs (the current default), 2026-11-29
-------------------------------------------------------------
Why: at 40 epochs (39 steps each, 1560 in all) training and validation Dice stayed level (0.868
against 0.855 in the last epoch of the 32-filter seed-7 run), and the best validation loss came
in the last epochs: the network was short of steps, not overfitting. Commands, the three at
the same time on the two cores: ``TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 nice -n 10
.venv/bin/python benchmarks/bench_lidc_segmentation.py --epochs 100 --seed {42,7,11}``;
training 35.2, 37.6 and 38.6 min (14-42 s per epoch). Validation chose the central component and
thresholds 0.75 (seed 42), 0.8 (seed 7) and 0.7 (seed 11).

    epochs  seed  val    test per patch  test per patient
    100     42    0.834  0.821           0.829
    100      7    0.829  0.852           0.852
    100     11    0.818  0.819           0.820
    100     mean  0.827  0.831           0.834
    40      mean  0.818  0.823           0.829   (recipe B above; its rerun as member 0: val 0.820)

Mean validation Dice rises from 0.818 (0.820 in the rerun) to 0.827, above the first 40-epoch
run on every seed (seed 11 only by 0.001, and below its rerun's 0.824), so 100 epochs is now
the default. The commands above that give no ``--epochs`` ran the default of 40 of their day;
add ``--epochs 40`` to repeat them.
The test means, 0.831 per patch and 0.834 per patient, are just above the published ~0.83, with
the recipe chosen on validation this time; but the margin (0.001-0.004) is far inside the 0.017
rerun noise, and seeds 42 and 11 stay below 0.83, so the aim of beating 0.83 is reached on
average, not robustly. IoU per patch / per patient and HD95: seed 42 0.721 / 0.729, 2.16 / 2.09
mm; seed 7 0.752 / 0.753, 1.58 / 1.77 mm; seed 11 0.720 / 0.722, 2.49 / 2.66 mm.

Run: ``.venv/bin/python benchmarks/bench_lidc_segmentation.py [--seed 7] [--channels 1
--schedule plateau --epochs 40] [--members 2]`` (``--channels 1 --schedule plateau --epochs 40``
is recipe A; ``--epochs 40`` alone is recipe B as first run).
Data: LIDC-IDRI, CC BY 3.0 (Armato et al. 2011, 2015; TCIA, Clark et al. 2013).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.model_selection import GroupShuffleSplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lunglib.evaluation.segmentation import dice, score_cases, summarize  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "lidc_nodule_patches" / "dev.npz"
HU_WINDOW = (-1000.0, 400.0)
SOFT_TISSUE_WINDOW = (-160.0, 240.0)  # mediastinal window, W 400 / L 40
PAD = 72


def split_patients(patient_ids: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Row indices of train/val/test, 70/15/15 by patient."""
    rows = np.arange(len(patient_ids))
    outer = GroupShuffleSplit(n_splits=1, test_size=0.15, random_state=seed)
    rest, test = next(outer.split(rows, groups=patient_ids))
    inner = GroupShuffleSplit(n_splits=1, test_size=0.15 / 0.85, random_state=seed + 1)
    train, val = next(inner.split(rest, groups=patient_ids[rest]))
    return {"train": rest[train], "val": rest[val], "test": test}


def to_input(hu: np.ndarray) -> np.ndarray:
    low, high = HU_WINDOW
    x = (np.clip(hu.astype(np.float32), low, high) - low) / (high - low)
    extra = PAD - hu.shape[-1]
    return np.pad(x, ((0, 0), (0, extra), (0, extra)), mode="edge")[..., None]


def add_windows(x, channels: int):
    """Lung-window input (after augmentation), plus the soft-tissue window when ``channels`` is 2.

    The soft-tissue window spreads -160..240 HU (solid nodule, vessels, pleura) over [0, 1] so
    dense boundaries keep their contrast; it lies inside the lung window, so it is recomputed
    exactly from the lung-window channel. Works on numpy arrays and on tensors in ``tf.data``.
    """
    import keras

    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 (lung window) or 2 (+ soft tissue), got {channels}")
    if channels == 1:
        return x
    low, high = HU_WINDOW
    soft_low, soft_high = SOFT_TISSUE_WINDOW
    hu = x * (high - low) + low
    soft = keras.ops.clip((hu - soft_low) / (soft_high - soft_low), 0.0, 1.0)
    return keras.ops.concatenate([x, soft], axis=-1)


def central_component(mask: np.ndarray) -> np.ndarray:
    """The connected component of a 2D mask under, or nearest to, the patch centre."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask.astype(bool)
    centre = np.array(mask.shape) // 2
    keep = labels[tuple(centre)]
    if keep == 0:
        dist, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        keep = labels[iy[tuple(centre)], ix[tuple(centre)]]
    return labels == keep


def baseline(hu: np.ndarray, level: float = -400.0) -> np.ndarray:
    return np.stack([central_component(ndimage.binary_fill_holes(p > level)) for p in hu])


def make_dataset(x: np.ndarray, y: np.ndarray, batch: int, seed: int, augment: bool, crop: int,
                 channels: int = 1):
    """Batches of ``crop`` x ``crop`` centre crops; training ones augmented first."""
    import tensorflow as tf

    from lunglib.augment.transforms import (
        Compose,
        RandomFlip,
        RandomRotate,
        RandomScale,
        RandomTranslate,
        tf_augment,
    )

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32)))
    if augment:
        transform = Compose([RandomRotate(180.0), RandomFlip(axes=(0, 1)),
                             RandomScale((0.9, 1.1), axes=(0, 1)), RandomTranslate(6.0)])
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.random(seed=seed)))
        ds = ds.map(lambda pair, s: tf_augment(pair[0], pair[1], transform, s),
                    num_parallel_calls=2)
    lo = (x.shape[1] - crop) // 2
    ds = ds.map(lambda img, msk: (add_windows(img[lo:lo + crop, lo:lo + crop], channels),
                                  msk[lo:lo + crop, lo:lo + crop]))
    return ds.batch(batch).prefetch(2)


def predict(model, x: np.ndarray, tta: bool, channels: int = 1) -> np.ndarray:
    """Probabilities cropped to 71x71; with ``tta`` averaged over the 8 flips/rotations."""
    views = [(k, f) for k in range(4) for f in (False, True)] if tta else [(0, False)]
    total = 0.0
    for k, flip in views:
        v = np.rot90(x, k, axes=(1, 2))
        v = v[:, :, ::-1] if flip else v
        v = np.asarray(add_windows(np.ascontiguousarray(v), channels))
        p = model.predict(v, batch_size=64, verbose=0)
        p = p[:, :, ::-1] if flip else p
        total = total + np.rot90(p, -k, axes=(1, 2))
    return (total / len(views))[:, :71, :71, 0]


def binarize(prob: np.ndarray, threshold: float, central: bool) -> np.ndarray:
    masks = prob > threshold
    return np.stack([central_component(m) for m in masks]) if central else masks


def train_member(x: np.ndarray, y: np.ndarray, idx: dict[str, np.ndarray],
                 args: argparse.Namespace, seed: int) -> tuple[object, int, float]:
    """Train one U-Net on ``idx["train"]`` with ``seed`` for weights and shuffling.

    Parameters
    ----------
    x, y : np.ndarray
        Padded lung-window inputs and masks of all patches, ``(n, 72, 72, 1)``.
    idx : dict of str to np.ndarray
        Row indices of the ``train`` and ``val`` patients.
    args : argparse.Namespace
        The command-line settings (crop, depth, filters, channels, schedule, epochs, ...).
    seed : int
        Seed of ``keras.utils.set_random_seed`` and of the training shuffle/augmentation.

    Returns
    -------
    model : keras.Model
        The best-validation-loss weights in a network for the whole 72x72 patch.
    epochs : int
        Epochs run.
    seconds : float
        Training time.
    """
    import keras

    from lunglib.models.unet import build_unet

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    crop = args.crop
    model = build_unet((crop, crop, args.channels), depth=args.depth, filters=args.filters,
                       dropout=0.1)
    if args.schedule == "cosine":
        cosine = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=args.epochs)
        callbacks = [
            keras.callbacks.LearningRateScheduler(lambda epoch: float(cosine(epoch))),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.epochs,
                                          restore_best_weights=True),
        ]
    else:
        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience,
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3),
        ]
    start = time.perf_counter()
    history = model.fit(
        make_dataset(x[idx["train"]], y[idx["train"]], args.batch, seed, True, crop,
                     args.channels),
        validation_data=make_dataset(x[idx["val"]], y[idx["val"]], args.batch, seed, False,
                                     crop, args.channels),
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=2,
    )
    seconds = time.perf_counter() - start
    # The network is fully convolutional: the same weights run on the whole 72x72 patch.
    full = build_unet((PAD, PAD, args.channels), depth=args.depth, filters=args.filters,
                      dropout=0.1)
    full.set_weights(model.get_weights())
    return full, len(history.history["loss"]), seconds


def choose_binarization(prob: np.ndarray, truth: np.ndarray) -> tuple[float, float, bool]:
    """Validation Dice, threshold (0.20-0.85 by 0.05) and central-component flag that maximise it.

    Parameters
    ----------
    prob : np.ndarray
        Validation probabilities, ``(n, 71, 71)``.
    truth : np.ndarray
        Validation masks, ``(n, 71, 71)`` bool.

    Returns
    -------
    tuple of (float, float, bool)
        Mean validation Dice over patches, threshold, keep-central-component flag.
    """
    choices = []
    for threshold in np.round(np.arange(0.2, 0.851, 0.05), 2):
        for central in (False, True):
            pred = binarize(prob, threshold, central)
            val_dice = np.mean([dice(t, p) for t, p in zip(truth, pred, strict=True)])
            choices.append((float(val_dice), float(threshold), central))
    return max(choices)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--crop", type=int, default=48, help="training crop (pixels)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--channels", type=int, choices=(1, 2), default=2,
                        help="1: lung window; 2: lung + soft-tissue window")
    parser.add_argument("--schedule", choices=("plateau", "cosine"), default="cosine",
                        help="plateau: halve the learning rate on a val-loss plateau and stop "
                        "early; cosine: cosine decay to 0 over all epochs, no early stop (the "
                        "best val-loss weights are restored either way)")
    parser.add_argument("--members", type=int, default=1,
                        help="U-Nets trained on the same split (seeds --seed + 1000 m) whose "
                        "probability maps are averaged; member 0 is also scored alone")
    parser.add_argument("--no-tta", action="store_true", help="skip test-time flip averaging")
    args = parser.parse_args(argv)
    if not DATA.exists():
        print(f"{DATA} not found: the LIDC patches live in ../shared/data; benchmark skipped")
        return 0

    d = np.load(DATA)
    hu, mask, pids = d["image"], d["mask"].astype(bool), d["patient_id"]
    spacing = d["pixel_spacing_mm"].astype(float)
    idx = split_patients(pids, args.seed)
    for name, rows in idx.items():
        print(f"{name:5s}: {len(rows):4d} patches, {len(np.unique(pids[rows])):3d} patients")
    assert not set(pids[idx["test"]]) & (set(pids[idx["train"]]) | set(pids[idx["val"]]))

    x = to_input(hu)
    y = np.pad(mask, ((0, 0), (0, PAD - 71), (0, PAD - 71)), mode="constant")[..., None]
    tta = not args.no_tta
    test = idx["test"]
    val_probs, test_probs, minutes, epochs_run = [], [], [], []
    for member in range(args.members):
        # Member 0 uses ``--seed`` itself, so ``--members 1`` is the single model of before.
        model, epochs, seconds = train_member(x, y, idx, args, args.seed + 1000 * member)
        val_probs.append(predict(model, x[idx["val"]], tta, args.channels))
        test_probs.append(predict(model, x[test], tta, args.channels))
        minutes.append(seconds / 60)
        epochs_run.append(epochs)

    variants = {"U-Net 2D": (val_probs[0], test_probs[0])}
    if args.members > 1:
        variants = {"U-Net 2D (member 0)": variants["U-Net 2D"],
                    f"U-Net 2D ensemble of {args.members}": (np.mean(val_probs, axis=0),
                                                             np.mean(test_probs, axis=0))}
    results = {}
    for name, (val_prob, test_prob) in variants.items():
        val_dice, threshold, central = choose_binarization(val_prob, mask[idx["val"]])
        print(f"{name}: validation choice: threshold={threshold}, central component={central}, "
              f"val Dice={val_dice:.3f}")
        results[name] = binarize(test_prob, threshold, central)
    results["baseline -400 HU, central component"] = baseline(hu[test])
    rows = []
    for name, pred in results.items():
        scores = score_cases(mask[test], pred, pids[test], [(s, s) for s in spacing[test]])
        summary = summarize(scores, by="case_id")
        for level in summary.index:
            rows.append({"method": name, "level": level.replace("case_id", "patient"),
                         **summary.loc[level].to_dict()})
    table = pd.DataFrame(rows)
    table["n"] = table["n"].astype(int)
    print()
    print(f"LIDC 2D nodule segmentation, held-out test patients (seed {args.seed}); "
          f"U-Net depth {args.depth}, filters {args.filters}, {args.channels} channel(s), "
          f"{args.schedule} schedule, {'/'.join(map(str, epochs_run))} epochs, "
          f"train {' + '.join(f'{m:.1f}' for m in minutes)} min, TTA={tta}")
    print(table.drop(columns="hd95_undefined").to_string(index=False, float_format="%.3f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
