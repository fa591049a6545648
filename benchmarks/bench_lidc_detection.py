"""Whole-scan nodule detection on the real LIDC-IDRI case: where do the readers' nodules rank?

Runs ``lunglib predict`` (:func:`lunglib.predict.predict_scan`) with a run folder's models on
the LIDC-IDRI case in ``../shared/data`` and scores its candidate list against the readers'
consensus nodules the LUNA16 way (:mod:`lunglib.evaluation.detection`): each nodule's rank in
the list, the false positives per scan at full sensitivity, the sensitivity at 1/8 ... 8 false
positives per scan and the CPM. Twice: **before**, in the segmenter's order (its peak
probability, then volume: ``segmenter_rank``, scored as ``-segmenter_rank`` so that ties of the
saturated probability keep that order), and **after**, in the order of the shipped real-data
``nodule_reducer`` that ``predict`` re-ranks real scans by (``reducer_score``). The case's patient
is left out of the reducer's training. One scan, so these describe this case, not a detector.

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
    table = result.candidates.assign(scan="case")
    reranked = result.ranking == "nodule_reducer"
    if not reranked:  # no reducer: the table is in the segmenter's order
        print(f"not re-ranked ({'; '.join(result.notes) or 'no candidates'}): 'after' is "
              "the segmenter's order")
        table["segmenter_rank"] = np.arange(1, len(table) + 1)
        table["reducer_score"] = np.nan
    orders = {
        # predict's own order (peak probability, then volume), as a strict score
        "before": table.assign(score=-table["segmenter_rank"].astype(float),
                               rank=table["segmenter_rank"]),
        "after": (table.assign(score=table["reducer_score"], rank=np.arange(1, len(table) + 1))
                  if reranked else None),
    }
    orders = {name: frame for name, frame in orders.items() if frame is not None}
    matched = {name: match_candidates(frame, nodules) for name, frame in orders.items()}
    print(f"{len(table)} candidates, {len(nodules)} consensus nodule(s) >= 3 mm; before = the "
          "segmenter's order, after = the nodule_reducer's score\n")
    print(f"{'nodule':>6} {'diameter mm':>12} {'rank before':>12} {'rank after':>11} "
          f"{'reducer score':>14} {'FPs above before':>17} {'FPs above after':>16}")
    for row in nodules.itertuples():
        cells = {}
        for name, frame in matched.items():
            hit = frame[(frame["kind"] == "tp") & (frame["nodule"] == row.Index)]
            if hit.empty:
                cells[name] = ("missed", "", np.nan)
                continue
            score = float(hit["score"].iloc[0])
            above = int((frame.loc[frame["kind"] == "fp", "score"] > score).sum())
            cells[name] = (str(int(hit["rank"].iloc[0])), str(above),
                           float(hit["reducer_score"].iloc[0]))
        before = cells["before"]
        after = cells.get("after", ("-", "-", np.nan))
        print(f"{row.nodule:>6} {row.diameter_mm:>12.1f} {before[0]:>12} {after[0]:>11} "
              f"{after[2]:>14.4f} {before[1]:>17} {after[1]:>16}")
    curves = {name: froc(frame, nodules, n_scans=1) for name, frame in orders.items()}
    print(f"\n{'':<32}" + "".join(f"{name:>8}" for name in curves))

    def at_full(curve) -> str:
        full = np.flatnonzero(curve.sensitivity >= 1.0)
        return f"{curve.fps_per_scan[full[0]]:.0f}" if len(full) else "never"

    print(f"{'FPs/scan at full sensitivity':<32}"
          + "".join(f"{at_full(c):>8}" for c in curves.values()))
    for k, rate in enumerate(LUNA16_FP_RATES):
        print(f"{f'sensitivity at {rate:g} FPs/scan':<32}"
              + "".join(f"{c.sensitivity_at()[k]:>8.2f}" for c in curves.values()))
    print(f"{'CPM':<32}" + "".join(f"{c.cpm():>8.3f}" for c in curves.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
