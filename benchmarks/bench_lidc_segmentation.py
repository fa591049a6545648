"""2D U-Net nodule segmentation on the real LIDC-IDRI patches, with a patient-level split.

Measures Dice, IoU and the 95th-percentile Hausdorff distance (mm) of the recipe
:mod:`lunglib.recipes.lidc_unet` on held-out test patients, per test patch and per test patient
(a patient's patches averaged first), beside a thresholding baseline (-400 HU, holes filled, the
central component). Patients are split 70/15/15; the binarisation threshold and the
central-component choice are made on the validation patients, the test patients are scored once.

Data: ``../shared/data/lidc_nodule_patches/dev.npz`` (71 x 71 HU patches with one reader's
outline; skipped with a message when absent). Run, with one TensorFlow thread::

    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 nice -n 10 \\
        .venv/bin/python benchmarks/bench_lidc_segmentation.py [--seed 42] [--members 2] \\
        [--channels 1 --schedule plateau --epochs 40] [--json results.json]

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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lunglib.datasets import load_patch_set  # noqa: E402
from lunglib.recipes.lidc_unet import run_lidc_unet  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "lidc_nodule_patches" / "dev.npz"


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
                        "probability maps are averaged; member 0 is also scored alone")
    parser.add_argument("--no-tta", action="store_true", help="skip test-time flip averaging")
    parser.add_argument("--json", type=Path, help="also write the table and choices here")
    args = parser.parse_args(argv)
    if args.members < 1:
        parser.error(f"--members must be at least 1, got {args.members}")
    return args


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
    for name, rows in result.split.indices(pids).items():
        print(f"{name:5s}: {len(rows):4d} patches, {len(np.unique(pids[rows])):3d} patients")
    for choice in result.choices.itertuples():
        print(f"{choice.method}: validation choice: threshold={choice.threshold}, central "
              f"component={choice.central}, val Dice={choice.val_dice:.3f}")
    minutes = [s / 60 for s in result.seconds]
    print()
    print(f"LIDC 2D nodule segmentation, held-out test patients (seed {args.seed}); "
          f"U-Net depth {args.depth}, filters {args.filters}, {args.channels} channel(s), "
          f"{args.schedule} schedule, {'/'.join(map(str, result.epochs))} epochs, "
          f"train {' + '.join(f'{m:.1f}' for m in minutes)} min, TTA={tta}")
    print(result.table.drop(columns="hd95_undefined").to_string(index=False,
                                                                float_format="%.3f"))
    if args.json:
        report = {
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "split_patients": {k: len(getattr(result.split, k)) for k in ("train", "val", "test")},
            "epochs": result.epochs,
            "train_minutes": minutes,
            "choices": result.choices.to_dict(orient="records"),
            "table": result.table.to_dict(orient="records"),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
