"""Benign vs malignant LIDC-IDRI nodule patches: size floor, hand-made features and 2D CNNs.

Measures, on ``../shared/data/lidc_nodule_patches/dev.npz`` (71x71 HU patches, one per reader
outline; label: the outlining reader's malignancy <= 2 benign, >= 4 malignant, 3 left out), the
test accuracy, precision, recall, F1 and ROC-AUC (mean +- std over patient-grouped folds, and
the pooled out-of-fold ROC-AUC) of the methods of :mod:`lunglib.recipes.malignancy`
(``area-logreg``, ``features-logreg``, ``naive-cnn``, ``best-cnn``, ``consensus-cnn``,
``multitask-cnn`` and the ``+area`` / ``+features`` stacks), early stopping and thresholds chosen
on a patient-level validation split inside every training fold. Two tables per run: the primary
per-outline level (``outline``, or ``outline-agg`` with ``--aggregate nodule``) and the
per-nodule readers'-consensus level (:mod:`lunglib.recipes.malignancy_report`), each followed by
every method against ``area-logreg`` (per-fold ROC-AUC differences, folds won, pooled difference
with a 95 % CI from ``--n-boot`` (2000) patient-bootstrap resamples). It also prints how well the
other readers of a nodule predict the outlining reader's label.

Run (one TensorFlow thread, as the figures in docs/results.md were measured)::

    python benchmarks/bench_lidc_malignancy.py --threads 1 [--folds 5] [--seeds 2] \
        [--methods area-logreg,features-logreg,consensus-cnn,consensus-cnn+area] \
        [--aggregate nodule] [--json table.json]

On a busy machine split the folds over processes (``--only-folds 0,1 --save-preds a.csv`` ...)
and print the tables from the saved per-outline predictions with ``--merge a.csv b.csv ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "lidc_nodule_patches" / "dev.npz"

from lunglib.datasets import load_patch_set  # noqa: E402
from lunglib.io import write_text_atomic  # noqa: E402
from lunglib.recipes.malignancy import (  # noqa: E402
    DEFAULT_METHODS,
    check_methods,
    cross_validate_malignancy,
    malignancy_data,
    reader_agreement,
)
from lunglib.recipes.malignancy_report import (  # noqa: E402
    LEVELS,
    METRICS,
    compare_with_reference,
    summarize_malignancy,
)


def format_tables(table: pd.DataFrame, methods: list[str], level: str,
                  n_boot: int = 2000) -> tuple[str, dict]:
    """The markdown summary and comparison tables of one level, and the same as JSON records."""
    summary = summarize_malignancy(table, level, methods)
    lines = ["", f"{level}: {LEVELS[level]}",
             f"| method | {' | '.join(METRICS)} | pooled OOF AUC | n | folds | seconds |",
             "|" + "---|" * (len(METRICS) + 5)]
    for r in summary.itertuples():
        cells = " | ".join(f"{getattr(r, k):.3f} +- {getattr(r, k + '_std'):.3f}"
                           for k in METRICS)
        lines.append(f"| {r.method} | {cells} | {r.pooled_roc_auc:.3f} | {r.n} | {r.folds} | "
                     f"{r.seconds:.0f} |")
    paired = compare_with_reference(table, "area-logreg", level, methods, n_boot=n_boot)
    if len(paired):
        lines += ["", "| method | per-fold AUC - area-logreg | folds won | pooled AUC difference "
                  f"[95 % CI, patient bootstrap] ({level}) |", "|---|---|---|---|"]
        for r in paired.itertuples():
            lines.append(f"| {r.method} | {' '.join(f'{d:+.3f}' for d in r.fold_differences)} | "
                         f"{r.folds_won}/{r.folds} | {r.difference:+.3f} "
                         f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}] |")
    records = {"summary": summary.to_dict("records"), "vs_area_logreg": paired.to_dict("records")}
    return "\n".join(lines), records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2, help="CNN ensemble members per fold")
    parser.add_argument("--seed", type=int, default=42, help="seed of the folds and the CNNs")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated; a stack after what it stacks")
    parser.add_argument("--only-folds", default=None,
                        help="comma-separated fold numbers to run (parallel runs, experiments)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="cap every CNN's epochs (default: the recipe's 40, naive-cnn 15)")
    parser.add_argument("--aux-weight", type=float, default=0.5,
                        help="loss weight of multitask-cnn's characteristic-rating head")
    parser.add_argument("--aggregate", choices=("none", "nodule"), default="none",
                        help="nodule: each scored outline's prediction becomes the mean over "
                             "every outline of its nodule (validation and test alike)")
    parser.add_argument("--save-preds", type=Path, default=None,
                        help="write the per-outline predictions to this CSV after each fold")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="print the tables from --save-preds files (no training)")
    parser.add_argument("--n-boot", type=int, default=2000,
                        help="patient-bootstrap resamples of the comparison with area-logreg")
    parser.add_argument("--json", type=Path, default=None, help="write the tables as JSON")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra/inter-op threads (0: TensorFlow's default)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")

    if args.merge:
        table = pd.concat([pd.read_csv(p, dtype={"patient": str, "nodule": str})
                           for p in args.merge], ignore_index=True)
        if table.duplicated(["method", "fold", "split", "row"]).any():
            raise SystemExit("the --merge files overlap (a method's fold saved twice)")
        methods = [m for m in methods if m in set(table["method"])]
    else:
        try:
            check_methods(methods)
        except ValueError as err:
            raise SystemExit(str(err)) from err
        if args.threads:
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        if not args.data.is_file():
            raise SystemExit(f"{args.data} not found: this benchmark needs the LIDC patch set")
        patches = load_patch_set(args.data)
        data = malignancy_data(patches)
        y = data.labels
        print(f"{args.data.name}: {int((y >= 0).sum())} patches rated benign (<=2) or malignant "
              f"(>=4) ({int((y == 1).sum())} malignant) from "
              f"{len(set(data.patient_ids[y >= 0]))} patients; {int((y < 0).sum())} rated 3 "
              f"(not evaluated); {args.folds}-fold patient-grouped CV")
        auc, n = reader_agreement(patches)
        print(f"reader agreement: the other readers' mean rating scores the outlining reader's "
              f"label with ROC-AUC {auc:.3f} ({n} samples of nodules with more than one reader)")
        limits = {} if args.epochs is None else {"epochs": args.epochs,
                                                 "naive_epochs": args.epochs}
        save = None if args.save_preds is None else (
            lambda t: write_text_atomic(args.save_preds, t.to_csv(index=False)))
        table = cross_validate_malignancy(
            data, methods, folds=args.folds, seed=args.seed, n_seeds=args.seeds,
            only_folds=None if args.only_folds is None else
            [int(f) for f in args.only_folds.split(",")],
            aux_weight=args.aux_weight, log=lambda line: print(line, flush=True), on_fold=save,
            **limits)

    report = {}
    for level in ("outline-agg" if args.aggregate == "nodule" else "outline", "nodule"):
        text, report[level] = format_tables(table, methods, level, args.n_boot)
        print(text)
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
