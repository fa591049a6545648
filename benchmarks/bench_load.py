"""How fast does ``lunglib.load_scan`` read a real CT series, next to the floor and SimpleITK?

On the LIDC-IDRI-0001 series (``../shared/data/lidc_idri``, or ``--case DIR``), in seconds:

(a) the floor: ``pydicom.dcmread`` of every file plus ``pixel_array`` -- what any pydicom-based
    loader must spend, with no sorting, HU conversion or checks;
(b) ``lunglib.load_scan`` on the patient folder (XML beside the images included), with its
    default of one thread and with a pool of two (``workers=2``);
(c) SimpleITK's ``ImageSeriesReader`` (GDCM) on the series folder.

Runs are interleaved (a, b, c, a, b, c, ...) so that load from other processes hits them alike.
The table shows wall-clock seconds (median and minimum of the runs) and the CPU seconds of this
process (minimum of the runs; for the threaded rows the sum over threads), each as a ratio to
the floor. On a busy machine the minimum CPU time is the steadiest measure of the work a reader
does; the wall-clock median is what a user waits.

Usage: ``python benchmarks/bench_load.py [--runs 5] [--case DIR]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

from lunglib.io import load_scan

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_CASE = SHARED / "lidc_idri" / "LIDC-IDRI-0001"


def floor(files: list[Path]) -> np.ndarray:
    return np.stack([pydicom.dcmread(f).pixel_array for f in files])


def lunglib_load(case: Path, workers: int | None = None) -> np.ndarray:
    return load_scan(case, workers=workers).hu


def sitk_load(series_dir: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    return sitk.GetArrayFromImage(reader.Execute())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE)
    args = parser.parse_args(argv)
    if not args.case.is_dir():
        print(f"{args.case} not present: benchmark skipped", file=sys.stderr)
        return 0
    files = sorted(args.case.rglob("*.dcm"))
    series_dir = files[0].parent
    candidates = {
        "(a) pydicom dcmread + pixel_array (floor)": lambda: floor(files),
        "(b) lunglib.load_scan": lambda: lunglib_load(args.case),
        "(b) lunglib.load_scan, workers=2": lambda: lunglib_load(args.case, workers=2),
        "(c) SimpleITK ImageSeriesReader": lambda: sitk_load(series_dir),
    }
    shapes = {name: fn().shape for name, fn in candidates.items()}  # warm the file cache
    wall: dict[str, list[float]] = {name: [] for name in candidates}
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.runs):
        for name, fn in candidates.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    floor_wall = statistics.median(next(iter(wall.values())))
    floor_cpu = min(next(iter(cpu.values())))
    print(f"{args.case.name}: {len(files)} files, volume {shapes['(b) lunglib.load_scan']}, "
          f"{args.runs} interleaved runs, {os.cpu_count()} CPU(s), load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'reader':<44}{'wall med':>9}{'wall min':>9}{'x floor':>8}{'cpu min':>9}{'x floor':>8}")
    for name in candidates:
        w, c = statistics.median(wall[name]), min(cpu[name])
        print(f"{name:<44}{w:>9.3f}{min(wall[name]):>9.3f}{w / floor_wall:>8.2f}"
              f"{c:>9.3f}{c / floor_cpu:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
