"""Whole-scan nodule detection on the real LIDC-IDRI case: where do the readers' nodules rank?

Runs ``lunglib predict`` (:func:`lunglib.predict.predict_scan`) with a run folder's models on
the LIDC-IDRI case in ``../shared/data`` and scores its candidate list against the readers'
consensus nodules the LUNA16 way (:mod:`lunglib.evaluation.detection`): each nodule's rank in
the list, the false positives per scan at full sensitivity, the sensitivity at 1/8 ... 8 false
positives per scan and the CPM. One scan, so these describe this case, not a detector.

Run::

    .venv/bin/python benchmarks/bench_lidc_detection.py [--model outputs/demo] [--case DIR]

Results are in ``docs/results.md``. Data: LIDC-IDRI, CC BY 3.0 (Armato et al. 2011; TCIA, Clark
et al. 2013).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASE = ROOT.parent / "shared" / "data" / "lidc_idri" / "LIDC-IDRI-0001"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "outputs" / "demo",
                        help="a run folder with a segmenter bundle (default: make demo's)")
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE,
                        help="one LIDC-IDRI patient folder with its readers' XML")
    args = parser.parse_args(argv)
    if not args.case.is_dir():
        print(f"skipped: no LIDC-IDRI case at {args.case}", file=sys.stderr)
        return 0

    from lunglib.course import import_tensorflow_quietly

    import_tensorflow_quietly()
    from lunglib.datasets import open_dataset
    from lunglib.evaluation import LUNA16_FP_RATES, froc, match_candidates, nodule_centres
    from lunglib.predict import predict_scan

    lidc = open_dataset("lidc", args.case.parent)
    scan = lidc.load_scan(args.case.name)
    nodules = nodule_centres(lidc.nodule_mask(args.case.name, scan), scan, "case")
    with tempfile.TemporaryDirectory() as out:
        result = predict_scan(args.case, args.model, out, report=False)
    for warning in result.warnings:
        print(f"warning: {warning}")
    candidates = result.candidates.assign(scan="case").rename(columns={"peak_prob": "score"})
    matched = match_candidates(candidates, nodules)
    print(f"{len(candidates)} candidates, {len(nodules)} consensus nodule(s) >= 3 mm\n")
    print(f"{'nodule':>6} {'diameter mm':>12} {'rank':>5} {'score':>7} {'scored higher':>14}")
    for row in nodules.itertuples():
        hit = matched[(matched["kind"] == "tp") & (matched["nodule"] == row.Index)]
        if hit.empty:
            print(f"{row.nodule:>6} {row.diameter_mm:>12.1f} {'missed':>5}")
            continue
        score = float(hit["score"].iloc[0])
        rank = int(hit["candidate"].iloc[0])  # predict's order: peak probability, then volume
        higher = int((matched.loc[matched["kind"] == "fp", "score"] > score).sum())
        print(f"{row.nodule:>6} {row.diameter_mm:>12.1f} {rank:>5} {score:>7.4f} {higher:>14}")
    curve = froc(candidates, nodules, n_scans=1)
    full = np.flatnonzero(curve.sensitivity >= 1.0)
    at_full = f"{curve.fps_per_scan[full[0]]:.0f}" if len(full) else "never reached"
    print(f"\nfalse positives per scan at full sensitivity: {at_full}")
    rates = " ".join(f"{r:g}:{s:.2f}" for r, s in zip(LUNA16_FP_RATES, curve.sensitivity_at(),
                                                       strict=True))
    print(f"sensitivity at FPs/scan {rates}")
    print(f"CPM {curve.cpm():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
