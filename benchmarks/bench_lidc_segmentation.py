"""2D U-Net nodule segmentation on the real LIDC-IDRI patches, with a patient-level split.

Measures Dice, IoU, the 95th-percentile Hausdorff distance (mm) and the normalised surface Dice
(1 mm) of the recipe :mod:`lunglib.recipes.lidc_unet` on held-out test patients, per test patch
and per test patient (a patient's patches averaged first), beside a thresholding baseline (-400
HU, holes filled, the central component). Patients are split 70/15/15; the binarisation threshold
and the central-component choice are made on the validation patients, the test patients are
scored once.

HD95 follows MONAI and DeepMind (each direction's 95th percentile, then the larger;
:func:`lunglib.evaluation.hausdorff95`). Runs recorded before that definition pooled both
directions first; the column ``hd95_pooled_mm`` prints that old value beside the new one, so the
two can be compared on the same masks. The test probability maps, the masks scored and the truth
are saved (``--save-maps``; patients as pseudonymous codes) so that a later metric can be computed
without retraining.

Data: ``../shared/data/lidc_nodule_patches/dev.npz`` (71 x 71 HU patches with one reader's
outline; skipped with a message when absent). Run, with one TensorFlow thread::

    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 nice -n 10 \\
        .venv/bin/python benchmarks/bench_lidc_segmentation.py [--seed 42] [--members 2] \\
        [--channels 1 --schedule plateau --epochs 40] [--json results.json] \\
        [--save-maps outputs/bench_lidc_segmentation]

Results, and the runs behind the defaults, are in ``docs/results.md``.
Data: LIDC-IDRI, CC BY 3.0 (Armato et al. 2011, 2015; TCIA, Clark et al. 2013).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lunglib.datasets import load_patch_set  # noqa: E402
from lunglib.evaluation.segmentation import summarize, surface_distances  # noqa: E402
from lunglib.recipes.lidc_unet import LidcUnetResult, run_lidc_unet  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "lidc_nodule_patches" / "dev.npz"
MAPS = REPO / "outputs" / "bench_lidc_segmentation"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="LIDC nodule patch npz file")
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
                        "probability maps are averaged; member 0 is also scored alone; "
                        "0 scores only the baseline (no training)")
    parser.add_argument("--no-tta", action="store_true", help="skip test-time flip averaging")
    parser.add_argument("--json", type=Path, help="also write the table and choices here")
    parser.add_argument("--save-maps", type=Path, default=MAPS, metavar="DIR",
                        help="write the test probability maps, scored masks and truth to "
                        "DIR/test_maps_seed<seed>.npz (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.members < 0:
        parser.error(f"--members must be 0 (the baseline only) or more, got {args.members}")
    return args


def pooled_hd95(truth: np.ndarray, pred: np.ndarray, spacing: float) -> float:
    """The HD95 recorded before the MONAI definition: one 95th percentile of both directions'
    surface distances pooled (medpy's ``hd95``), with the same empty-mask conventions."""
    a_to_b, b_to_a = surface_distances(truth, pred, (spacing, spacing))
    if a_to_b.size == 0 and b_to_a.size == 0:
        return 0.0
    if a_to_b.size == 0 or b_to_a.size == 0:
        return float("nan")
    return float(np.percentile(np.concatenate([a_to_b, b_to_a]), 95))


def with_pooled_hd95(result: LidcUnetResult, truth: np.ndarray,
                     spacing: np.ndarray) -> pd.DataFrame:
    """``result.table`` with ``hd95_pooled_mm`` (the old definition) beside ``hd95_mm``, per
    patch and per patient as the table's other means (:func:`summarize`)."""
    pooled = {}
    for name, scores in result.scores.items():
        old = [pooled_hd95(t, p, s)
               for t, p, s in zip(truth, result.test_masks[name], spacing, strict=True)]
        summary = summarize(scores.assign(hd95_mm=old), by="case_id")["hd95_mm"]
        pooled[name, "per_patch"] = summary["per_case"]
        pooled[name, "per_patient"] = summary["per_case_id"]
    table = result.table.copy()
    table.insert(table.columns.get_loc("hd95_mm") + 1, "hd95_pooled_mm",
                 [pooled[row.method, row.level] for row in table.itertuples()])
    return table


def save_maps(path: Path, result: LidcUnetResult, truth: np.ndarray, spacing: np.ndarray,
              patients: np.ndarray) -> None:
    """The test patches as scored: truth, every method's mask, the U-Nets' probability maps.

    Keys: ``truth`` (n, 71, 71) bool; ``patient`` (n,) pseudonymous codes P001.. in order of
    first appearance (never the real ids); ``spacing_mm`` (n,); ``methods`` and ``masks``
    (methods, n, 71, 71) bool; ``prob_methods`` and ``probs`` (float16); ``threshold`` and
    ``central`` of each of ``prob_methods``, chosen on validation.
    """
    from lunglib.io import atomic_path

    codes = np.array([f"P{i + 1:03d}" for i in pd.factorize(patients)[0]])
    choices = result.choices.set_index("method")
    prob_methods = list(result.test_probs)
    with atomic_path(path, keep_suffix=True) as tmp:
        np.savez_compressed(
            tmp, truth=truth.astype(bool), patient=codes, spacing_mm=spacing.astype(np.float32),
            methods=np.array(list(result.test_masks)),
            masks=np.stack(list(result.test_masks.values())).astype(bool),
            prob_methods=np.array(prob_methods),
            probs=np.stack([result.test_probs[m] for m in prob_methods]).astype(np.float16),
            threshold=choices.loc[prob_methods, "threshold"].to_numpy(float),
            central=choices.loc[prob_methods, "central"].to_numpy(bool))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data.exists():
        print(f"{args.data} not found: the LIDC patches live in ../shared/data; benchmark skipped")
        return 0
    patches = load_patch_set(args.data)
    tta = not args.no_tta
    result = run_lidc_unet(
        patches, seed=args.seed, members=args.members, epochs=args.epochs,
        channels=args.channels, schedule=args.schedule, depth=args.depth, filters=args.filters,
        crop=args.crop, batch_size=args.batch, patience=args.patience, tta=tta)

    pids = patches.patient_groups()
    rows = result.split.indices(pids)
    for name, part in rows.items():
        print(f"{name:5s}: {len(part):4d} patches, {len(np.unique(pids[part])):3d} patients")
    test = rows["test"]
    truth = patches.masks[test] > 0
    spacing = patches.extra["pixel_spacing_mm"][test].astype(float)
    table = with_pooled_hd95(result, truth, spacing)
    for choice in result.choices.itertuples():
        print(f"{choice.method}: validation choice: threshold={choice.threshold}, central "
              f"component={choice.central}, val Dice={choice.val_dice:.3f}")
    minutes = [s / 60 for s in result.seconds]
    print()
    print(f"LIDC 2D nodule segmentation, held-out test patients (seed {args.seed}); "
          f"U-Net depth {args.depth}, filters {args.filters}, {args.channels} channel(s), "
          f"{args.schedule} schedule, {'/'.join(map(str, result.epochs))} epochs, "
          f"train {' + '.join(f'{m:.1f}' for m in minutes)} min, TTA={tta}")
    print(table.drop(columns="hd95_undefined").to_string(index=False, float_format="%.3f"))
    print("hd95_mm: each direction's 95th percentile, then the larger (MONAI); hd95_pooled_mm: "
          "both directions pooled (the definition of runs recorded before it); nsd: surface "
          "Dice at 1 mm")
    if args.save_maps is not None and args.members:
        target = args.save_maps / f"test_maps_seed{args.seed}.npz"
        save_maps(target, result, truth, spacing, pids[test])
        print(f"test maps and masks saved to {target}")
    if args.json:
        report = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "split_patients": {k: len(getattr(result.split, k)) for k in ("train", "val", "test")},
            "epochs": result.epochs,
            "train_minutes": minutes,
            "choices": result.choices.to_dict(orient="records"),
            "table": table.to_dict(orient="records"),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
