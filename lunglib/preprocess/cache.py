"""Prepare a whole dataset once, in parallel, into a cache that training streams from.

Layout::

    <cache_dir>/<key>/
        settings.json     what shaped these volumes (size, n_slices, options, dataset, version)
        qc.csv            one row per patient: ok, or skipped with the reason
        <patient_id>.npz  image (float32), lung_mask (uint8), nodule_mask (uint8, when the
                          dataset has masks), label (int, -1 when unknown), spacing, bbox_mm

``key`` is a short hash of everything that changes the prepared arrays -- size, n_slices, the
preprocessing options and version, the dataset's type, folder and mask options -- so two
settings never share a folder and changing ``size`` never reads stale volumes. Labels do not
change the arrays, so they are not in the key: they are read from the dataset again on every
:func:`cache_dataset` call, and :meth:`CacheIndex.load` and :meth:`CacheIndex.labels` give those,
so a corrected labels file takes effect on the next run without preparing anything again. Each
volume also stores a digest of its patient's annotation files
(:meth:`~lunglib.datasets.base.CTDataset.annotation_fingerprint`); a patient whose files changed
is prepared again.

Every file is written to ``<name>.<pid>.tmp`` in the same folder and then renamed with
:func:`os.replace` (atomic on POSIX and Windows): a run killed midway leaves whole files and at
most one ``.tmp``, and running again skips the finished patients and does the rest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lunglib.datasets.base import CTDataset
from lunglib.io.atomic import write_bytes_atomic
from lunglib.io.qc import summarize
from lunglib.preprocess.volume import PREPROCESS_VERSION, PrepareOptions, prepare
from lunglib.settings import Settings, display_path

QC_COLUMNS = (
    "id", "status", "reason", "label", "n_slices_source", "rows_source", "columns_source",
    "spacing_z", "spacing_y", "spacing_x", "lung_volume_ml", "findings",
)


def _shaping(dataset: CTDataset, settings: Settings, options: PrepareOptions) -> dict:
    return {
        "size": settings.size,
        "n_slices": settings.n_slices,
        "options": options.as_dict(),
        "dataset": type(dataset).__name__,
        "root": str(Path(dataset.root).resolve()),
        "mask_options": dataset.mask_options(),
        "preprocess_version": PREPROCESS_VERSION,
    }


def cache_key(dataset: CTDataset, settings: Settings, options: PrepareOptions | None = None) -> str:
    """Short hash of what shapes the prepared volumes (12 hex digits)."""
    text = json.dumps(_shaping(dataset, settings, options or PrepareOptions()), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _safe_name(patient_id: str) -> str:
    if not patient_id or any(c in patient_id for c in "/\\\0") or patient_id in {".", ".."}:
        raise ValueError(f"patient id {patient_id!r} cannot be used as a cache file name")
    return patient_id


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def _write_qc(path: Path, rows: Sequence[dict[str, object]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=QC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: str(r["id"])):
        writer.writerow(row)
    write_bytes_atomic(path, text.getvalue().encode())


def prepare_one(
    dataset: CTDataset, patient_id: str, settings: Settings, options: PrepareOptions, folder: Path
) -> dict[str, object]:
    """Prepare one patient into ``folder/<id>.npz``; returns its QC row. Never raises for bad data.

    Runs in a worker process; any failure to load or prepare becomes a ``skipped`` row naming
    the reason.
    """
    row: dict[str, object] = {"id": patient_id, "status": "skipped", "reason": ""}
    running = _running_marker(folder, patient_id)
    running.touch()  # says "this patient was being prepared" if the process dies
    try:
        label = dataset.label(patient_id)
        row["label"] = "" if label is None else int(label)
        scan = dataset.load_scan(patient_id)
        row.update(
            n_slices_source=scan.shape[0], rows_source=scan.shape[1], columns_source=scan.shape[2],
            spacing_z=round(scan.spacing[0], 4), spacing_y=round(scan.spacing[1], 4),
            spacing_x=round(scan.spacing[2], 4),
        )
        annotations = dataset.annotation_fingerprint(patient_id)  # before the mask is read
        nodules = dataset.nodule_mask(patient_id, scan)
        prepared = prepare(scan, settings, nodules, options)
        findings = list(scan.qc) + prepared.qc
        row["lung_volume_ml"] = round(prepared.lung_volume_ml, 1)
        row["findings"] = summarize(findings)
        if not prepared.ok:
            row["reason"] = "; ".join(f.message for f in prepared.qc if f.severity == "error")
            return row
        arrays = {
            "image": prepared.image,
            "lung_mask": prepared.lung_mask,
            "label": np.int64(-1 if label is None else label),
            "spacing": np.asarray(prepared.spacing),
            "bbox_mm": np.asarray(prepared.bbox_mm),
            "qc_row": np.asarray(json.dumps({**row, "status": "ok"})),
            "annotations": np.asarray(annotations),
        }
        if prepared.nodule_mask is not None:
            arrays["nodule_mask"] = prepared.nodule_mask
        _write_npz(folder / f"{_safe_name(patient_id)}.npz", arrays)
        row["status"] = "ok"
    except Exception as exc:  # one bad scan must never sink the batch: record why instead
        row["reason"] = f"{type(exc).__name__}: {exc}"
    running.unlink(missing_ok=True)
    return row


def _running_marker(folder: Path, patient_id: str) -> Path:
    """The empty file that exists while ``patient_id`` is being prepared."""
    return folder / f".{_safe_name(patient_id)}.running"


WORKER_DIED = (
    "the worker process preparing this patient died (killed by the system -- out of memory?); "
    "the other patients went on. Run again with fewer workers, or look at this scan alone"
)


def _prepare_in_pool(dataset: CTDataset, ids: Sequence[str], settings: Settings,
                     options: PrepareOptions, folder: Path, workers: int,
                     finish: Callable[[dict[str, object]], None]) -> list[str]:
    """Prepare ``ids`` in a pool of ``workers`` processes; the ids lost with a dead worker.

    When one worker process dies (the kernel's out-of-memory killer, a crash in native code),
    Python marks the whole pool broken and every unfinished task fails with it; those ids are
    returned for :func:`cache_dataset` to sort out. Every other outcome is passed to ``finish``.
    """
    # spawn: workers start clean, never a fork of a process that may hold TF threads
    context = multiprocessing.get_context("spawn")
    lost = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {pool.submit(prepare_one, dataset, pid, settings, options, folder): pid
                   for pid in ids}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                pid = pending.pop(future)
                try:
                    finish(future.result())
                except BrokenProcessPool:
                    lost.append(pid)
                except Exception as exc:  # the task could not even be sent or run
                    finish({"id": pid, "status": "skipped",
                            "reason": f"worker failed: {type(exc).__name__}: {exc}"})
    return lost


@dataclass
class CacheIndex:
    """A folder of prepared volumes: what is there, and how to read it one volume at a time."""

    folder: Path
    qc_rows: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def open(cls, folder: str | os.PathLike) -> CacheIndex:
        folder = Path(folder)
        qc_path = folder / "qc.csv"
        if not qc_path.is_file():
            raise FileNotFoundError(
                f"{qc_path} not found: {folder} is not a lunglib cache; run cache_dataset first"
            )
        with qc_path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        return cls(folder, rows)

    @property
    def key(self) -> str:
        return self.folder.name

    @property
    def ids(self) -> list[str]:
        """Patients whose volume is in the cache (status ok), sorted."""
        return sorted(r["id"] for r in self.qc_rows if r["status"] == "ok")

    @property
    def skipped(self) -> dict[str, str]:
        """``{id: reason}`` for the patients that could not be prepared."""
        return {r["id"]: r["reason"] for r in self.qc_rows if r["status"] != "ok"}

    def path(self, patient_id: str) -> Path:
        return self.folder / f"{_safe_name(patient_id)}.npz"

    def load(self, patient_id: str) -> dict[str, np.ndarray]:
        """The arrays of one patient (image, lung_mask, label, ..., nodule_mask when present)."""
        path = self.path(patient_id)
        if not path.is_file():
            reason = self.skipped.get(patient_id, "not in this cache")
            raise KeyError(f"{patient_id}: no prepared volume in {self.folder} ({reason})")
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files if k not in {"qc_row", "annotations"}}
        row = next((r for r in self.qc_rows if r["id"] == patient_id), None)
        if row is not None:  # the label read at the last cache_dataset call, not the stored one
            arrays["label"] = np.int64(-1 if row.get("label", "") in ("", None) else row["label"])
        return arrays

    def labels(self, ids: Sequence[str] | None = None) -> dict[str, int]:
        """``{id: label}`` for cached patients with a known label (read from the QC table)."""
        wanted = set(self.ids if ids is None else ids)
        return {
            r["id"]: int(r["label"]) for r in self.qc_rows
            if r["id"] in wanted and r["status"] == "ok" and r.get("label", "") != ""
        }

    def iter_volumes(self, ids: Sequence[str] | None = None) -> Iterator[tuple[str, dict]]:
        """``(id, arrays)`` one patient at a time -- never every volume in memory."""
        for pid in self.ids if ids is None else ids:
            yield pid, self.load(pid)

    def qc_table(self):
        """The QC table as a pandas DataFrame."""
        import pandas as pd

        return pd.read_csv(self.folder / "qc.csv", dtype={"id": str}, keep_default_na=False)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        folder = display_path(self.folder)
        return f"CacheIndex({folder!r}, ok={len(self)}, skipped={len(self.skipped)})"


def _existing_row(path: Path, annotations: str) -> dict[str, object] | None:
    """The QC row stored in a finished npz, or None to prepare the patient again.

    Again when the file is unreadable, or when it was prepared from other annotation files than
    today's (``annotations``, :meth:`CTDataset.annotation_fingerprint`): an outline corrected in
    place must not leave the old nodule mask in the cache.
    """
    try:
        with np.load(path) as data:
            stored = str(data["annotations"]) if "annotations" in data.files else ""
            if stored != annotations:
                return None
            return json.loads(str(data["qc_row"]))
    except Exception:  # a foreign or damaged file: prepare this patient again
        return None


def _remove_stale_tmp(folder: Path) -> None:
    """Delete temporary files left by runs that were killed (their process no longer exists)."""
    for tmp in folder.glob("*.tmp"):
        try:
            pid = int(tmp.suffixes[-2].lstrip("."))
            os.kill(pid, 0)  # raises when no such process: the file is stale
        except (IndexError, ValueError, ProcessLookupError):
            tmp.unlink(missing_ok=True)
        except PermissionError:  # a live process of another user
            continue


def _prepare_surviving_dead_workers(
    dataset: CTDataset, ids: Sequence[str], settings: Settings, options: PrepareOptions,
    folder: Path, workers: int, finish: Callable[[dict[str, object]], None],
) -> None:
    """Prepare ``ids`` in worker processes so that a worker that dies costs only its patient.

    A dead worker breaks the pool, and every unfinished patient fails with it. Those that had
    not started (no running marker) are innocent and go to a fresh pool; those that were being
    prepared are each tried once more alone, so the one that kills its process is the only
    one recorded as skipped (:data:`WORKER_DIED`).
    """
    remaining = list(ids)
    while remaining:
        lost = _prepare_in_pool(dataset, remaining, settings, options, folder, workers, finish)
        suspects = [pid for pid in lost if _running_marker(folder, pid).exists()]
        if lost and not suspects:  # the pool died before any patient started: no retrying
            for pid in lost:
                finish({"id": pid, "status": "skipped",
                        "reason": "worker failed: the process pool could not run any task"})
            return
        for pid in suspects:
            _running_marker(folder, pid).unlink(missing_ok=True)
            if _prepare_in_pool(dataset, [pid], settings, options, folder, 1, finish):
                _running_marker(folder, pid).unlink(missing_ok=True)
                finish({"id": pid, "status": "skipped", "reason": WORKER_DIED})
        remaining = [pid for pid in lost if pid not in suspects]


def cache_dataset(
    dataset: CTDataset,
    settings: Settings | None = None,
    options: PrepareOptions | None = None,
    workers: int = 2,
    ids: Sequence[str] | None = None,
    progress: bool = True,
) -> CacheIndex:
    """Prepare every patient of ``dataset`` into ``<settings.cache_dir>/<key>/``, resuming.

    Parameters
    ----------
    dataset : CTDataset
        Where scans, labels and nodule masks come from.
    settings : Settings, optional
        ``size``, ``n_slices`` and ``cache_dir``.
    options : PrepareOptions, optional
        Preprocessing choices (window, margin ...); part of the cache key.
    workers : int, default 2
        Worker processes; 0 or 1 prepares in this process (easier to debug).
    ids : sequence of str, optional
        Only these patients (default: all of ``dataset.patient_ids()``).
    progress : bool, default True
        Show a tqdm progress bar.

    Returns
    -------
    CacheIndex
        Patients already in the cache are not prepared again; a patient that fails is listed in
        ``qc.csv`` as skipped with the reason, and the others go on -- also when the failure
        kills its worker process (out of memory): that patient is skipped (:data:`WORKER_DIED`)
        and the rest are prepared within the same call.
    """
    settings = settings or Settings()
    options = options or PrepareOptions()
    folder = Path(settings.cache_dir) / cache_key(dataset, settings, options)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(folder)
    for marker in folder.glob(".*.running"):  # left by a run that was killed as a whole
        marker.unlink(missing_ok=True)
    shaping = _shaping(dataset, settings, options)
    write_bytes_atomic(folder / "settings.json", json.dumps(shaping, indent=2).encode())

    wanted = list(dataset.patient_ids() if ids is None else ids)
    qc_path = folder / "qc.csv"
    rows: dict[str, dict[str, object]] = {}
    if qc_path.is_file():  # keep the rows of patients outside this call
        rows = {r["id"]: r for r in CacheIndex.open(folder).qc_rows if r["id"] not in set(wanted)}
    todo = []
    for pid in wanted:
        path = folder / f"{_safe_name(pid)}.npz"
        row = (_existing_row(path, dataset.annotation_fingerprint(pid)) if path.is_file()
               else None)
        if row is not None:
            label = dataset.label(pid)  # labels are read again: a corrected file takes effect
            rows[pid] = {**row, "label": "" if label is None else int(label)}
        else:
            todo.append(pid)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(wanted), initial=len(wanted) - len(todo), desc="preparing",
               unit="scan", disable=not progress)

    def finish(row: dict[str, object]) -> None:
        rows[str(row["id"])] = row
        _write_qc(qc_path, list(rows.values()))
        bar.update(1)

    try:
        if workers <= 1 or len(todo) <= 1:
            for pid in todo:
                finish(prepare_one(dataset, pid, settings, options, folder))
        else:
            _prepare_surviving_dead_workers(dataset, todo, settings, options, folder, workers,
                                            finish)
    finally:
        bar.close()
    _write_qc(qc_path, list(rows.values()))
    index = CacheIndex.open(folder)
    index.qc_rows = [r for r in index.qc_rows if r["id"] in set(wanted)]
    return index
