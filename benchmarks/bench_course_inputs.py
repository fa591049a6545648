"""Does notebook 04's default model gain from notebook 02's zero-centring or 03's augmentation?

Notebook 04's classifier (``lunglib.recipes.fit_scan_classifier`` with 04's defaults: 10 x 18 x 18
nodule cubes, 20 epochs with patience 3, batch 8, 3 hard negatives per healthy training scan, slid
over each whole scan) is trained on the course split of the prepared default cohort
(``lunglib.course.course_split``, seed 42: 48 / 16 / 16 patients) in these variants:

- ``flips`` -- 04's default: inputs in [0, 1] as prepared by 02, random left-right and
  front-back flips of each training cube;
- ``flips + zero-centring`` -- every input minus the mean of the training volumes
  (``lunglib.preprocess.fit_zero_center``, 02's last section): cubes, the scans mined for hard
  negatives and the validation scans;
- ``rotate/scale/shift + flips`` -- 03's affine augmentation (``default_augmentation``: rotation
  up to 15 degrees in-plane, scale 0.85-1.15, in-plane shift up to 2 voxels -- 03 shifts whole
  volumes by up to 6 of 64 pixels; a cube is 18 wide) before the flips;
- ``no augmentation`` -- for scale.

It prints, per variant and training seed (the split stays fixed), the validation AUC per
patient (whole scans in) and on the validation cubes, and the training seconds. The test split is
never read. Reads the course cache of the default cohort (prepares it when missing).

Usage::

    python benchmarks/bench_course_inputs.py                         # seeds 42 7 1
    python benchmarks/bench_course_inputs.py --seeds 42 --variants flips "flips + zero-centring"
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = ("flips", "flips + zero-centring", "rotate/scale/shift + flips", "no augmentation")


class CentredIndex:
    """A cache index whose images come back minus ``mean`` (02's zero-centring)."""

    def __init__(self, index, mean: float) -> None:
        self.index, self.mean = index, mean

    def __getattr__(self, name):
        return getattr(self.index, name)

    def load(self, patient_id: str) -> dict:
        from lunglib.preprocess import zero_center

        arrays = dict(self.index.load(patient_id))
        arrays["image"] = zero_center(arrays["image"], self.mean)
        return arrays


def affine_then_flips(transform):
    """``train_model`` augmentation: ``transform`` (03's NumPy affine) on one cube, then flips."""
    import tensorflow as tf

    from lunglib.augment import flip_augment, tf_augment

    def augment(x, y):
        seed = tf.random.uniform([], maxval=2**62, dtype=tf.int64)
        x, _ = tf_augment(x, x, transform, seed)
        return flip_augment(x, y)

    return augment


def run(index, split, variant: str, seed: int) -> dict[str, object]:
    """Train 04's classifier in one variant; validation AUCs per patient and per cube."""
    from sklearn.metrics import roc_auc_score

    from lunglib.augment import default_augmentation
    from lunglib.preprocess import fit_zero_center
    from lunglib.recipes import fit_scan_classifier
    from lunglib.training import cache_arrays, nodule_cubes, predict_proba

    source, augment = index, "flips"
    if variant == "flips + zero-centring":
        mean = fit_zero_center(train=(index.load(pid)["image"] for pid in split.train))
        source = CentredIndex(index, mean)
    elif variant == "rotate/scale/shift + flips":
        augment = affine_then_flips(default_augmentation(
            max_degrees=15, scale_range=(0.85, 1.15), max_shift=(0, 2, 2), flip=False))
    elif variant == "no augmentation":
        augment = None
    start = time.process_time()
    classifier, cube_model = fit_scan_classifier(
        source, split.train, split.val, cube=(10, 18, 18), hard_per_scan=3, epochs=20,
        patience=3, batch_size=8, seed=seed, augment=augment)
    seconds = time.process_time() - start
    x_val, y_val = cache_arrays(source, split.val)
    cubes_x, cubes_y, _ = nodule_cubes(source, split.val, (10, 18, 18), seed=seed + 1)
    return {"variant": variant, "seed": seed,
            "val_auc_patient": roc_auc_score(y_val, predict_proba(classifier, x_val)),
            "val_auc_cubes": roc_auc_score(cubes_y, predict_proba(cube_model, cubes_x)),
            "train_cpu_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()

    import pandas as pd

    from lunglib.course import course_settings, course_split, open_course_dataset
    from lunglib.preprocess.cache import cache_dataset
    from lunglib.training import set_seed

    settings = course_settings()
    index = cache_dataset(open_course_dataset("synthetic", settings), settings, progress=False)
    labels = index.labels()
    ids = sorted(labels)
    split = course_split(ids, [labels[p] for p in ids], seed=42)
    print(f"split train/val/test {len(split.train)}/{len(split.val)}/{len(split.test)} patients")
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            set_seed(seed)
            rows.append(run(index, split, variant, seed))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    summary = table.groupby("variant", sort=False)[["val_auc_patient", "val_auc_cubes"]]
    print(summary.agg(["mean", "min", "max"]).round(3).to_string())


if __name__ == "__main__":
    main()
