"""Train the real-data models that lunglib ships, from the LIDC-IDRI nodule patch file.

Writes the ``malignancy``, ``nodule_unet`` and ``nodule_reducer`` bundles with their model cards
into ``lunglib/models/weights`` (package data: ``pip install`` carries them). Anyone with the
patch file can rerun it::

    .venv/bin/python scripts/train_pretrained.py \
        --patches ../shared/data/lidc_nodule_patches/dev.npz

Each model prints one line when done; its card (``<name>.md``) holds the validation figures.
The recipes are :mod:`lunglib.recipes.pretrained`. Data: LIDC-IDRI, CC BY 3.0 (Armato et al.
2011, 2015; TCIA, Clark et al. 2013).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("malignancy", "nodule_unet", "nodule_reducer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=Path, required=True,
                        help="an LIDC nodule patch file (dev.npz)")
    parser.add_argument("--output", type=Path, default=ROOT / "lunglib" / "models" / "weights")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--unet-epochs", type=int, default=40)
    parser.add_argument("--malignancy-epochs", type=int, default=40)
    parser.add_argument("--reducer-epochs", type=int, default=30)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")

    from lunglib.course import import_tensorflow_quietly

    import_tensorflow_quietly()
    from lunglib.datasets import load_patch_set
    from lunglib.recipes import pretrained

    patches = load_patch_set(args.patches)
    train = {
        "malignancy": lambda: pretrained.train_shipped_malignancy(
            patches, epochs=args.malignancy_epochs),
        "nodule_unet": lambda: pretrained.train_shipped_unet(patches, epochs=args.unet_epochs),
        "nodule_reducer": lambda: pretrained.train_nodule_reducer(
            patches, epochs=args.reducer_epochs),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    for name in names:
        start = time.perf_counter()
        shipped = train[name]()
        path = shipped.save(args.output)
        size_mb = path.stat().st_size / 1e6
        evaluation = shipped.card["evaluation"]
        validation = evaluation.get("validation") or evaluation.get("validation_per_patient_dice")
        print(f"{name}: {path} ({size_mb:.2f} MB) in {time.perf_counter() - start:.0f} s; "
              f"validation {validation}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
