"""How fast does ``lunglib.load_scan`` read a real CT series, next to the bare decoders?

On the LIDC-IDRI-0001 series (``../shared/data/lidc_idri``, or ``--case DIR``), one process, in
CPU and wall-clock seconds:

* **raw bytes** -- every file's bytes read into memory: the physical floor of any reader;
* **dicomsdl decode** -- ``dicomsdl.open(f).pixelData(storedvalue=True)`` per file: the stored
  values, nothing else (no order, no HU, no checks);
* **pydicom decode** -- ``pydicom.dcmread(f).pixel_array`` per file, likewise bare;
* **load_scan** on the patient folder (the readers' XML beside the images), with the default
  reader (``auto``: dicomsdl where it reads the series exactly as pydicom does) and with
  ``reader="pydicom"`` (the reference): series choice, slice order, HU, QC checks included;
* **load + prepare** -- the same, then ``lunglib.preprocess.prepare(scan, Settings())`` (the
  course defaults: lungs found, cropped, windowed, resized to the model's input);
* **SimpleITK** ``ImageSeriesReader`` (GDCM) on the series folder, for reference.

Rounds are interleaved (every reader once, then again), so that load from other processes hits
them alike; the table shows the median over the rounds of this process's CPU time (the work)
and of the wall-clock time (the wait), and the CPU median as a ratio to each of the three bare
readings. Then the issue's two targets, each PASS or MISS: ``load_scan`` (auto) at most 1.5 x
dicomsdl's bare decode, and load + prepare (auto) at most 0.5 x pydicom's bare decode. The
volumes read by the two ``load_scan`` readers are checked to be identical first.

Usage: ``python benchmarks/bench_load.py [--runs 7] [--case DIR]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dicomsdl
import numpy as np
import pydicom

from lunglib.io import load_scan
from lunglib.preprocess import prepare
from lunglib.settings import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_CASE = SHARED / "lidc_idri" / "LIDC-IDRI-0001"
RAW, SDL, PYD = "raw bytes (floor)", "dicomsdl decode", "pydicom decode"
AUTO, FORCED = "load_scan (auto)", "load_scan (pydicom)"
PREP_AUTO, PREP_FORCED = "load + prepare (auto)", "load + prepare (pydicom)"
SITK = "SimpleITK ImageSeriesReader"


def read_bytes(files: list[Path]) -> list[bytes]:
    return [f.read_bytes() for f in files]


def dicomsdl_decode(files: list[Path]) -> list[np.ndarray]:
    return [dicomsdl.open(str(f)).pixelData(storedvalue=True) for f in files]


def pydicom_decode(files: list[Path]) -> list[np.ndarray]:
    return [pydicom.dcmread(f).pixel_array for f in files]


def load_and_prepare(case: Path, reader: str) -> object:
    return prepare(load_scan(case, reader=reader), Settings())


def sitk_load(series_dir: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    return sitk.GetArrayFromImage(reader.Execute())


def measure(candidates: dict[str, Callable[[], object]], runs: int) -> dict[str, tuple]:
    """(median CPU s, median wall s) per candidate over ``runs`` interleaved rounds."""
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    wall: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(runs):
        for name, fn in candidates.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(cpu[name]), statistics.median(wall[name]))
            for name in candidates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--case", type=Path, default=DEFAULT_CASE)
    args = parser.parse_args(argv)
    if not args.case.is_dir():
        print(f"{args.case} not present: benchmark skipped", file=sys.stderr)
        return 0
    files = sorted(args.case.rglob("*.dcm"))
    auto, reference = load_scan(args.case), load_scan(args.case, reader="pydicom")
    if not np.array_equal(auto.hu, reference.hu) or auto.qc != reference.qc:
        print("load_scan's two readers disagree on this case", file=sys.stderr)
        return 1
    candidates: dict[str, Callable[[], object]] = {
        RAW: lambda: read_bytes(files),
        SDL: lambda: dicomsdl_decode(files),
        PYD: lambda: pydicom_decode(files),
        AUTO: lambda: load_scan(args.case),
        FORCED: lambda: load_scan(args.case, reader="pydicom"),
        PREP_AUTO: lambda: load_and_prepare(args.case, "auto"),
        PREP_FORCED: lambda: load_and_prepare(args.case, "pydicom"),
        SITK: lambda: sitk_load(files[0].parent),
    }
    for fn in candidates.values():  # warm the file cache and the imports
        fn()
    result = measure(candidates, args.runs)
    print(f"{args.case.name}: {len(files)} files, volume {auto.shape}, {args.runs} interleaved "
          f"rounds, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}; load_scan's "
          f"default reader here: {auto.metadata['reader']}")
    floors = {key: result[key][0] for key in (RAW, SDL, PYD)}
    print(f"{'':<30}{'CPU s':>8}{'wall s':>8}{'x raw':>8}{'x dicomsdl':>11}{'x pydicom':>10}")
    for name, (cpu, wall) in result.items():
        print(f"{name:<30}{cpu:>8.3f}{wall:>8.3f}{cpu / floors[RAW]:>8.2f}"
              f"{cpu / floors[SDL]:>11.2f}{cpu / floors[PYD]:>10.2f}")
    targets = [
        (f"{AUTO} <= 1.5 x {SDL}", result[AUTO][0], 1.5 * floors[SDL]),
        (f"{PREP_AUTO} <= 0.5 x {PYD}", result[PREP_AUTO][0], 0.5 * floors[PYD]),
    ]
    for label, value, limit in targets:
        verdict = "PASS" if value <= limit else "MISS"
        print(f"target {label}: {value:.3f} s CPU vs {limit:.3f} s: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
