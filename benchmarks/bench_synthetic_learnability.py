"""Is the default synthetic cohort learnable by the course's CNN at the course's input?

Generates a synthetic cohort into a temporary folder (never ``data/synthetic``), caches it with
the course preprocessing (``cache_dataset``, lung box resized to 32 x 64 x 64), splits the
patients (seeded, stratified, 60/20/20) and compares two ways to get a per-patient cancer
probability, printing validation and test AUC per seed (always per patient, whole scans in):

- ``whole-volume``: the classic CNN (``build_cnn``: 3 blocks, 8 filters, Flatten, dense 32,
  sigmoid) trained on whole volumes with ``train_model`` (batch 8, balanced class weights,
  early stopping on the validation AUC);
- ``cubes``: notebook 04's recipe, ``lunglib.recipes.scan_classifier.fit_scan_classifier`` -- a
  valid-padding patch CNN trained on nodule cubes and hard negatives, slid over the scan
  (``convolutionalize``), the scan's score its most suspicious window.

Usage::

    python benchmarks/bench_synthetic_learnability.py                      # cohort seed 0
    python benchmarks/bench_synthetic_learnability.py --cohort-seeds 0 1 --train-seeds 42 7
    python benchmarks/bench_synthetic_learnability.py --patients 40 --difficulty 0.2 --keep /tmp/x

Target: validation AUC > 0.7 within a few epochs on 2 CPU cores (the course's promise for
notebook 04). Times are wall-clock and depend on what else the machine is doing.

Measured (``--train-seeds 42 7 --skip-global``, default cohort seed 0, 80 patients, on a 2-core
machine shared with a test run; AUCs per patient, scikit-learn):

| method | split/init seed | train/val/test | val AUC | test AUC | train s |
|---|---|---|---|---|---|
| whole-volume | 42 | 48/16/16 | 0.641 | 0.516 | 151 |
| cubes | 42 | 48/16/16 | 0.844 | 0.828 | 132 |
| whole-volume | 7 | 48/16/16 | 0.469 | 0.578 | 56 |
| cubes | 7 | 48/16/16 | 0.828 | 0.984 | 91 |
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lunglib import synthetic  # noqa: E402
from lunglib.datasets.synthetic import SyntheticDataset  # noqa: E402
from lunglib.evaluation.splits import patient_split  # noqa: E402
from lunglib.preprocess.cache import cache_dataset  # noqa: E402
from lunglib.settings import Settings  # noqa: E402


def global_statistics(root: Path) -> dict[str, float]:
    """AUCs of what must *not* give the label away (as in tests/test_synthetic.py).

    Single-feature AUCs of mean HU, lung volume (true lung mask, nodules included), mean lung HU
    and scan length, and the 5-fold cross-validated AUC of a logistic regression on all four.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lunglib.io.dicom import load_scan

    dataset = SyntheticDataset(root)
    features, labels = [], []
    for pid in dataset.patient_ids():
        scan = load_scan(root / pid)
        truth = synthetic.load_ground_truth(root, pid)
        lung = truth["lung_mask"].astype(bool)
        features.append([scan.hu.mean(), lung.sum() * scan.voxel_volume_mm3,
                         scan.hu[lung].mean(), scan.shape[0] * scan.spacing[0]])
        labels.append(int(truth["cancer"]))
    x, y = np.asarray(features), np.asarray(labels)
    names = ("mean_hu", "lung_volume", "mean_lung_hu", "scan_length")
    out = {name: float(roc_auc_score(y, x[:, i])) for i, name in enumerate(names)}
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression())
    held_out = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    out["logistic_cv"] = float(roc_auc_score(y, held_out))
    return out


def _train_once(index, train_seed: int, epochs: int) -> list[dict[str, float]]:
    from sklearn.metrics import roc_auc_score

    from lunglib.models.cnn import build_cnn
    from lunglib.recipes import fit_scan_classifier
    from lunglib.training import cache_arrays, predict_proba, set_seed, train_model

    labels = index.labels()
    ids = sorted(labels)
    split = patient_split(ids, [labels[i] for i in ids], val_fraction=0.2, test_fraction=0.2,
                          seed=train_seed)
    x_tr, y_tr = cache_arrays(index, split.train)
    x_va, y_va = cache_arrays(index, split.val)
    x_te, y_te = cache_arrays(index, split.test)
    sizes = {"n_train": len(y_tr), "n_val": len(y_va), "n_test": len(y_te)}
    rows = []

    set_seed(train_seed)
    model = build_cnn(x_tr.shape[1:], n_conv_layers=3, filters=8, kernel_size=3, pool_size=2,
                      dense_units=32, dropout=0.3, l2=1e-4, learning_rate=1e-3)
    start = time.perf_counter()
    history = train_model(model, (x_tr, y_tr), (x_va, y_va), epochs=epochs, patience=4,
                          batch_size=8, class_weight="balanced", monitor="val_auc",
                          seed=train_seed)
    rows.append({"method": "whole-volume", **sizes,
                 "epochs_run": len(history.history["loss"]),
                 "val_auc": roc_auc_score(y_va, predict_proba(model, x_va)),
                 "test_auc": roc_auc_score(y_te, predict_proba(model, x_te)),
                 "train_s": time.perf_counter() - start})

    start = time.perf_counter()
    classifier, _ = fit_scan_classifier(index, split.train, split.val, seed=train_seed)
    rows.append({"method": "cubes", **sizes, "epochs_run": "20+10",
                 "val_auc": roc_auc_score(y_va, predict_proba(classifier, x_va)),
                 "test_auc": roc_auc_score(y_te, predict_proba(classifier, x_te)),
                 "train_s": time.perf_counter() - start})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=synthetic.DEFAULT_N_PATIENTS)
    parser.add_argument("--difficulty", type=float, default=0.5)
    parser.add_argument("--cohort-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-global", action="store_true",
                        help="do not measure the global-statistics AUCs (saves ~1 min)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work folder to keep (and reuse: cohorts and caches resume)")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="lunglib-learnability-"))
    settings_kw = {"size": 64, "n_slices": 32}
    rows, global_rows = [], []
    try:
        for cohort_seed in args.cohort_seeds:
            root = work / f"cohort-n{args.patients}-d{args.difficulty:g}-s{cohort_seed}"
            start = time.perf_counter()
            synthetic.write_cohort(root, n_patients=args.patients, seed=cohort_seed,
                                   difficulty=args.difficulty, workers=args.workers,
                                   progress=False)
            gen_s = time.perf_counter() - start
            start = time.perf_counter()
            settings = Settings(**settings_kw, cache_dir=work / f"cache-{root.name}")
            index = cache_dataset(SyntheticDataset(root), settings, workers=args.workers,
                                  progress=False)
            cache_s = time.perf_counter() - start
            if not args.skip_global:
                global_rows.append((cohort_seed, global_statistics(root)))
            for train_seed in args.train_seeds:
                for result in _train_once(index, train_seed, args.epochs):
                    rows.append({"cohort_seed": cohort_seed, "train_seed": train_seed,
                                 "gen_s": gen_s, "cache_s": cache_s, **result})
                    print(f"  cohort seed {cohort_seed}, train seed {train_seed}, "
                          f"{result['method']}: val AUC {result['val_auc']:.3f}, "
                          f"test AUC {result['test_auc']:.3f}", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"cohort: {args.patients} patients, difficulty {args.difficulty:g}, matrix "
          f"{synthetic.DEFAULT_MATRIX}; malignant "
          f"{synthetic.NoduleRanges.from_difficulty(args.difficulty).malignant_diameter} mm; "
          f"input (32, 64, 64); whole-volume: build_cnn 3 x 8 filters, dense 32, batch 8, "
          f"<= {args.epochs} epochs; cubes: fit_scan_classifier defaults")
    header = ("| method | cohort seed | split/init seed | train/val/test | epochs | val AUC "
              "| test AUC | generate s | cache s | train s |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        print(f"| {r['method']} | {r['cohort_seed']} | {r['train_seed']} | "
              f"{r['n_train']}/{r['n_val']}/"
              f"{r['n_test']} | {r['epochs_run']} | {r['val_auc']:.3f} | {r['test_auc']:.3f} "
              f"| {r['gen_s']:.0f} | {r['cache_s']:.0f} | {r['train_s']:.0f} |")

    if global_rows:
        print("\nwhat must stay near 0.5 (AUC of global statistics; logistic = 5-fold CV on all "
              "four):")
        names = list(global_rows[0][1])
        print("| cohort seed | " + " | ".join(names) + " |")
        print("|" + "---|" * (len(names) + 1))
        for seed, stats in global_rows:
            print(f"| {seed} | " + " | ".join(f"{stats[n]:.2f}" for n in names) + " |")


if __name__ == "__main__":
    main()
