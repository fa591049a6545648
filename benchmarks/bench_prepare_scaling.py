"""Volumes per second preparing the synthetic cohort into a fresh cache: in this process, in a
process pool, and on a Dask LocalCluster of 1 and 2 workers.

Each row prepares every patient of the course's synthetic cohort (``data/synthetic``, written
first when missing) at the course's default size into an empty cache folder:

in-process      ``cache_dataset(workers=1)``: no workers to start;
process pool 2  ``prepare_one`` mapped over a ``ProcessPoolExecutor`` of 2 spawned processes --
                the executor lunglib used before Dask, without its dead-worker bookkeeping
                (that code is gone; this is its throughput);
Dask 1, Dask 2  ``cache_dataset(scheduler=client)`` on a LocalCluster of 1 or 2 worker
                processes, started as ``cache_dataset`` starts its own.

``startup`` is the time until every worker has started and imported lunglib's preprocessing
(for Dask: the cluster and client; for the pool: spawning its processes), ``prepare`` the time
from the first task to the last QC row, and ``vol/s`` the patients over ``prepare``; ``total``
is what a caller waits (startup + prepare + closing the workers). The ratios compare each
row's ``vol/s`` with the in-process row and with the process pool. With ``--runs`` above 1 the
rows take turns and each keeps its fastest run. Wall-clock times depend on what else the
machine is doing: the load average at the start is printed.

When the LIDC-IDRI-0001 case is present beside the project (``../shared/data``), the seconds one
real scan costs in this process are printed too: ``load_scan``, ``prepare`` and the whole
``prepare_one`` (load, masks, prepare, write).

Usage::

    python benchmarks/bench_prepare_scaling.py                 # the course cohort, one run each
    python benchmarks/bench_prepare_scaling.py --patients 20 --runs 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

from lunglib.course import open_course_dataset
from lunglib.preprocess.cache import cache_dataset, cache_key, prepare_one
from lunglib.preprocess.dask_prepare import dask_client
from lunglib.preprocess.volume import PrepareOptions
from lunglib.settings import Settings

LIDC_CASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc_idri" / (
    "LIDC-IDRI-0001")


#: Seconds :func:`_warm` holds a pool process, so that the pool's next task starts the other one
#: (taken off the pool's startup).
HOLD_S = 0.2


def _warm(hold: float) -> int:
    """What a worker does before its first patient: import lunglib's preprocessing."""
    import lunglib.datasets  # noqa: F401
    import lunglib.preprocess.cache  # noqa: F401

    time.sleep(hold)
    return os.getpid()


def run_in_process(dataset, ids, settings) -> dict[str, float]:
    start = time.perf_counter()
    cache_dataset(dataset, settings, workers=1, ids=ids, progress=False)
    prepare = time.perf_counter() - start
    return {"startup": 0.0, "prepare": prepare, "total": prepare}


def run_pool(dataset, ids, settings, workers: int = 2) -> dict[str, float]:
    folder = Path(settings.cache_dir) / cache_key(dataset, settings)
    folder.mkdir(parents=True, exist_ok=True)
    options = PrepareOptions()
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_warm, [HOLD_S] * workers))
        ready = time.perf_counter()
        one = partial(prepare_one, dataset, settings=settings, options=options, folder=folder)
        rows = list(pool.map(one, ids))
        done = time.perf_counter()
    end = time.perf_counter()
    assert all(row["status"] == "ok" for row in rows), "a patient was skipped"
    return {"startup": ready - start - HOLD_S, "prepare": done - ready,
            "total": end - start - HOLD_S}


def run_dask(dataset, ids, settings, workers: int) -> dict[str, float]:
    start = time.perf_counter()
    with dask_client(None, workers=workers) as client:
        client.run(_warm, 0.0)  # on every worker
        ready = time.perf_counter()
        index = cache_dataset(dataset, settings, ids=ids, scheduler=client, progress=False)
        done = time.perf_counter()
    end = time.perf_counter()
    assert not index.skipped, "a patient was skipped"
    return {"startup": ready - start, "prepare": done - ready, "total": end - start}


def best_of(runs: int, scratch: Path, modes: dict[str, Callable[[Settings], dict[str, float]]],
            settings: Settings) -> dict[str, dict[str, float]]:
    """Each mode's fastest of ``runs`` runs (by ``prepare``), each into an empty cache folder.

    The modes take turns (one run of each per round), so that a busy spell on a shared machine
    hits them alike.
    """
    results: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
    for i in range(runs):
        for name, run in modes.items():
            cache_dir = scratch / f"cache-{i}-{len(results[name])}-{name.replace(' ', '-')}"
            results[name].append(run(settings.replace(cache_dir=cache_dir)))
            shutil.rmtree(cache_dir, ignore_errors=True)
    return {name: min(rs, key=lambda r: r["prepare"]) for name, rs in results.items()}


def lidc_scan_seconds(case: Path, scratch: Path) -> dict[str, float]:
    """Seconds one real scan costs in this process, after one untimed load (so the files are in
    the page cache): ``load_scan``, ``prepare``, and ``prepare_one`` as a whole (load, masks from
    the readers' XML, prepare, write)."""
    from lunglib.datasets.lidc import LIDCDataset
    from lunglib.io import load_scan
    from lunglib.preprocess import prepare

    settings = Settings(cache_dir=scratch / "lidc-cache")
    dataset = LIDCDataset(case.parent)
    series = next(case.rglob("*.dcm")).parent
    load_scan(series)
    start = time.perf_counter()
    scan = load_scan(series)
    loaded = time.perf_counter()
    prepare(scan, settings)
    prepared = time.perf_counter()
    folder = Path(settings.cache_dir) / cache_key(dataset, settings)
    folder.mkdir(parents=True)
    row = prepare_one(dataset, case.name, settings, PrepareOptions(), folder)
    whole = time.perf_counter() - prepared
    assert row["status"] == "ok", row["reason"]
    return {"load_scan": loaded - start, "prepare": prepared - loaded, "prepare_one": whole,
            "slices": float(scan.shape[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=None,
                        help="the first N patients (default: the whole cohort)")
    parser.add_argument("--runs", type=int, default=1, help="runs per row; the fastest is kept")
    parser.add_argument("--no-lidc", action="store_true", help="skip the real-scan timing")
    args = parser.parse_args()

    settings = Settings()
    dataset = open_course_dataset("synthetic", settings)
    ids = dataset.patient_ids()[:args.patients] if args.patients else dataset.patient_ids()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(ids)} synthetic patients at size {settings.size}, n_slices {settings.n_slices}; "
          f"cores: {os.cpu_count()}, load average at start: {load:.1f}; best of {args.runs}")

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        rows = best_of(args.runs, scratch, {
            "in-process": lambda s: run_in_process(dataset, ids, s),
            "process pool 2": lambda s: run_pool(dataset, ids, s),
            "Dask 1": lambda s: run_dask(dataset, ids, s, 1),
            "Dask 2": lambda s: run_dask(dataset, ids, s, 2),
        }, settings)
        lidc = (lidc_scan_seconds(LIDC_CASE, scratch)
                if LIDC_CASE.is_dir() and not args.no_lidc else None)

    base = len(ids) / rows["in-process"]["prepare"]
    pool = len(ids) / rows["process pool 2"]["prepare"]
    header = ["", "startup s", "prepare s", "vol/s", "x in-process", "x pool 2", "total s"]
    print(" | ".join(f"{h:>12}" if i else f"{h:<15}" for i, h in enumerate(header)))
    for name, r in rows.items():
        rate = len(ids) / r["prepare"]
        cells = [f"{name:<15}", f"{r['startup']:>12.1f}", f"{r['prepare']:>12.1f}",
                 f"{rate:>12.2f}", f"{rate / base:>12.2f}", f"{rate / pool:>12.2f}",
                 f"{r['total']:>12.1f}"]
        print(" | ".join(cells))
    if lidc is not None:
        print(f"LIDC-IDRI-0001 ({lidc['slices']:.0f} slices), in this process: load_scan "
              f"{lidc['load_scan']:.2f} s, prepare {lidc['prepare']:.2f} s, prepare_one (load, "
              f"masks, prepare, write) {lidc['prepare_one']:.2f} s")


if __name__ == "__main__":
    main()
