"""Prepare a whole dataset once, in parallel, into a cache that training streams from.

Layout::

    <cache_dir>/<key>/
        settings.json     what shaped these volumes (size, n_slices, options, dataset, version)
        qc.csv            one row per patient: ok, or skipped with the reason
        qc.csv.lock       held while a client updates qc.csv (empty)
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

Patients are prepared one task each on Dask (:mod:`lunglib.preprocess.dask_prepare`): on a
LocalCluster of ``workers`` processes by default, or on the cluster of a ``scheduler`` given by
address, whose workers see the data and this folder at the same paths. The cache stays the one
source of truth, whoever writes into it:

- every file is written under a temporary name unique across processes and hosts
  (:func:`lunglib.io.atomic.create_temporary`) and renamed into place with :func:`os.replace`,
  so a run killed midway leaves whole files and a few temporaries that are never read, and
  running again skips the finished patients and does the rest;
- temporaries are removed when older than ``stale_after`` (an hour by default), or all of them
  with ``stale_after=0`` (``lunglib prepare --cleanup``) when nothing else writes into the
  folder -- never by asking whether their process is alive, which another host cannot answer;
- a ``.npz`` holds the same bytes whenever it is written (:func:`npz_bytes`), so a task run
  twice, or two clients preparing one patient at once, leave one and the same file;
- ``qc.csv`` is written only by the process that called :func:`cache_dataset`, as results
  arrive: under a lock (``qc.csv.lock``) it reads the table, replaces its own patients' rows and
  writes it back atomically, so two clients preparing into one folder keep each other's rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from filelock import FileLock, Timeout

from lunglib.datasets.base import CTDataset
from lunglib.io.atomic import TEMPORARY_GLOBS, remove_stale_temporaries, write_bytes_atomic
from lunglib.io.qc import summarize
from lunglib.preprocess.volume import PREPROCESS_VERSION, PrepareOptions, prepare
from lunglib.settings import Settings, display_path

if TYPE_CHECKING:
    from distributed import Client

QC_COLUMNS = (
    "id", "status", "reason", "label", "n_slices_source", "rows_source", "columns_source",
    "spacing_z", "spacing_y", "spacing_x", "lung_volume_ml", "findings",
)

#: Default ``stale_after`` of :func:`cache_dataset`: a temporary file (or a ``.running`` marker of
#: an older lunglib) untouched for this many seconds is a killed writer's. A writer fills its
#: temporary in one go, so this only has to exceed one write plus the clock difference between
#: the hosts sharing the cache.
STALE_AFTER_S = 3600.0

#: Seconds to wait for ``qc.csv.lock`` before giving up with an error naming it.
QC_LOCK_TIMEOUT_S = 300.0


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


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of a compressed ``.npz``, the same bytes whenever they are written.

    :func:`numpy.savez_compressed` adds each member with :meth:`zipfile.ZipFile.open`, which
    stamps it 1980-01-01 rather than with the clock, so a volume prepared twice -- a Dask task run
    again after its worker died, two clients at once -- is stored as the same file.
    ``tests/test_dask_prepare.py`` holds numpy and Python to that.
    """
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    write_bytes_atomic(path, npz_bytes(arrays))


def _write_qc(path: Path, rows: Iterable[dict[str, object]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=QC_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: str(r["id"])):
        writer.writerow(row)
    write_bytes_atomic(path, text.getvalue().encode())


def _read_qc_rows(path: Path) -> list[dict[str, str]]:
    """The rows of the QC table at ``path``; none when there is no table yet."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("id")]


def _merge_qc(folder: Path, rows: Iterable[dict[str, object]]) -> None:
    """Put ``rows`` into ``folder/qc.csv``, keeping the rows of every other patient there.

    Read, merge and write happen under ``qc.csv.lock`` (a :class:`filelock.FileLock`, which
    holds across hosts on a file system with working locks): another client preparing into the
    same folder cannot write between this read and this write and lose its rows.
    """
    path = folder / "qc.csv"
    lock = FileLock(folder / "qc.csv.lock", timeout=QC_LOCK_TIMEOUT_S)
    try:
        with lock:
            merged = {row["id"]: row for row in _read_qc_rows(path)}
            merged.update({str(row["id"]): row for row in rows})
            _write_qc(path, merged.values())
    except Timeout as exc:
        raise TimeoutError(
            f"{lock.lock_file}: another process has held this lock for over "
            f"{QC_LOCK_TIMEOUT_S:.0f} s, so the QC table could not be updated; if no other run "
            "prepares into this cache, delete the lock file and run again"
        ) from exc


def prepare_one(
    dataset: CTDataset, patient_id: str, settings: Settings, options: PrepareOptions, folder: Path
) -> dict[str, object]:
    """Prepare one patient into ``folder/<id>.npz``; returns its QC row. Never raises for bad data.

    Runs in a Dask worker (or in this process with ``workers=1``); any failure to load or
    prepare becomes a ``skipped`` row naming the reason. The file is the same bytes whenever and
    wherever it is written, so running this twice for one patient -- a retry, two clients -- is
    harmless.
    """
    row: dict[str, object] = {"id": patient_id, "status": "skipped", "reason": ""}
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
    return row


WORKER_DIED = (
    "the worker process preparing this patient died (killed by the system -- out of memory?); "
    "the other patients went on. Run again with fewer workers, or look at this scan alone"
)


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


def remove_stale_files(folder: str | os.PathLike, older_than: float = STALE_AFTER_S) -> int:
    """Delete the leftovers of killed writers in a cache folder; how many were removed.

    Temporary files, and the ``.<id>.running`` markers of older lunglib versions, untouched for
    ``older_than`` seconds (see :data:`STALE_AFTER_S`). ``0`` removes them all: only when no
    other run prepares into ``folder`` (``lunglib prepare --cleanup``).
    """
    return remove_stale_temporaries(folder, older_than, (*TEMPORARY_GLOBS, ".*.running"))


def cache_dataset(
    dataset: CTDataset,
    settings: Settings | None = None,
    options: PrepareOptions | None = None,
    workers: int = 2,
    ids: Sequence[str] | None = None,
    progress: bool = True,
    scheduler: str | Client | None = None,
    stale_after: float = STALE_AFTER_S,
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
        Worker processes of the Dask LocalCluster started on this machine for the call; 0 or 1
        prepares in this process instead (easier to debug, and no cluster to start). Ignored
        when ``scheduler`` is given. With 2 or more, Dask's ``scheduler-address`` setting
        (``$DASK_SCHEDULER_ADDRESS``), when set, takes the place of ``scheduler``: that is how
        ``lunglib run`` and the notebooks prepare on a cluster without a parameter of their own.
    ids : sequence of str, optional
        Only these patients (default: all of ``dataset.patient_ids()``).
    progress : bool, default True
        Show a tqdm progress bar.
    scheduler : str or distributed.Client, optional
        Prepare on this Dask cluster instead: a scheduler address (``tcp://host:8786``) or a
        connected client (left open). Its workers need lunglib, and the dataset and
        ``settings.cache_dir`` at the same paths as here.
    stale_after : float, default :data:`STALE_AFTER_S`
        Temporary files in the cache folder untouched for this many seconds are removed first
        (:func:`remove_stale_files`); 0 removes them all, right only when nothing else prepares
        into the folder.

    Returns
    -------
    CacheIndex
        Patients already in the cache are not prepared again; a patient that fails is listed in
        ``qc.csv`` as skipped with the reason, and the others go on -- also when the failure
        kills its worker process (out of memory): Dask runs it again, and if it keeps killing
        its worker that patient is skipped (:data:`WORKER_DIED`) and the rest are prepared
        within the same call.

    Raises
    ------
    ConnectionError
        When ``scheduler`` is an address where no Dask scheduler answers.
    TimeoutError
        When another process holds ``qc.csv.lock`` for over :data:`QC_LOCK_TIMEOUT_S`.
    """
    settings = settings or Settings()
    options = options or PrepareOptions()
    folder = Path(settings.cache_dir) / cache_key(dataset, settings, options)
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_files(folder, stale_after)
    shaping = _shaping(dataset, settings, options)
    write_bytes_atomic(folder / "settings.json", json.dumps(shaping, indent=2).encode())

    wanted = list(dataset.patient_ids() if ids is None else ids)
    rows: dict[str, dict[str, object]] = {}  # this call's rows; others stay as qc.csv has them
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
        _merge_qc(folder, rows.values())
        bar.update(1)

    try:
        if scheduler is None and workers > 1 and todo:
            from lunglib.preprocess.dask_prepare import configured_scheduler

            scheduler = configured_scheduler()
        if scheduler is None and (workers <= 1 or len(todo) <= 1):
            for pid in todo:
                finish(prepare_one(dataset, pid, settings, options, folder))
        elif todo:
            from lunglib.preprocess.dask_prepare import dask_client, prepare_on_dask

            with dask_client(scheduler, workers) as client:
                prepare_on_dask(client, dataset, todo, settings, options, folder, finish)
    finally:
        bar.close()
    _merge_qc(folder, rows.values())
    index = CacheIndex.open(folder)
    wanted_ids = set(wanted)
    index.qc_rows = [r for r in index.qc_rows if r["id"] in wanted_ids]
    return index
