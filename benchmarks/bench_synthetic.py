"""Generation time and disk size of the synthetic cohort (default and 512x512 full resolution).

Usage::

    python benchmarks/bench_synthetic.py                  # default cohort + one 512x512 patient
    python benchmarks/bench_synthetic.py --patients 20 --full-patients 0

Targets (issue 3): the default cohort generates in under 2 minutes on 2 cores and stays under
500 MB on disk. Times are wall-clock and depend on what else the machine is doing: the table
also gives the CPU seconds the workers used, and the load average when the run started.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lunglib import synthetic


def _disk_bytes(root: Path) -> tuple[int, int]:
    """(sum of file sizes, bytes allocated on disk) under ``root``."""
    size = blocks = 0
    for path in root.rglob("*"):
        if path.is_file():
            stat = path.stat()
            size += stat.st_size
            blocks += stat.st_blocks * 512
    return size, blocks


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime + own.ru_utime + own.ru_stime


def _run(label: str, out: Path, **kwargs: object) -> dict[str, object]:
    cpu0, t0 = _children_cpu(), time.perf_counter()
    synthetic.write_cohort(out, progress=False, **kwargs)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    size, allocated = _disk_bytes(out)
    n = int(kwargs["n_patients"])  # type: ignore[arg-type]
    slices = sum(len(list((out / synthetic.patient_id(i)).iterdir())) for i in range(n))
    return {"run": label, "patients": n, "slices": slices, "wall_s": wall, "cpu_s": cpu,
            "MB": size / 1e6, "MB_on_disk": allocated / 1e6, "MB_per_patient": size / 1e6 / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=synthetic.DEFAULT_N_PATIENTS)
    parser.add_argument("--full-patients", type=int, default=1,
                        help="patients of the 512x512 run (0 skips it)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the default cohort here and keep it")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="lunglib-bench-synth-"))
    rows = []
    try:
        default_out = args.keep or tmp / "default"
        if args.keep and args.keep.exists():
            shutil.rmtree(args.keep)
        rows.append(_run(f"default (matrix {synthetic.DEFAULT_MATRIX})", default_out,
                         n_patients=args.patients, seed=args.seed, workers=args.workers))
        if args.full_patients:
            rows.append(_run("full resolution (512x512)", tmp / "full",
                             n_patients=args.full_patients, seed=args.seed,
                             full_resolution=True, workers=min(args.workers,
                                                               args.full_patients)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"cores: {os.cpu_count()}, workers: {args.workers}, load average at start: {load:.1f}")
    header = ("run", "patients", "slices", "wall_s", "cpu_s", "MB", "MB_on_disk",
              "MB_per_patient")
    print(" | ".join(f"{h:>14}" if i else f"{h:<27}" for i, h in enumerate(header)))
    for row in rows:
        cells = []
        for i, h in enumerate(header):
            value = row[h]
            text = f"{value:.1f}" if isinstance(value, float) else str(value)
            cells.append(f"{text:>14}" if i else f"{text:<27}")
        print(" | ".join(cells))
    default = rows[0]
    verdict = (default["wall_s"] < 120, default["MB_on_disk"] < 500)
    print(f"default cohort: {'under' if verdict[0] else 'OVER'} 2 minutes, "
          f"{'under' if verdict[1] else 'OVER'} 500 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
