"""A folder of many scans, one job each: the batch mode of ``predict`` and ``characterize``.

As users of nnU-Net, TotalSegmentator or lungmask expect: every sub-folder and every volume file
of a folder is one scan (:func:`batch_items`); each gets its own output folder named after it
(:func:`scan_name`); ``num_parts``/``part_id`` split a long run across jobs; a progress bar runs
on stderr; a scan that fails is recorded by name with the reason and the others go on; a summary
CSV lists every scan (:func:`run_batch`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lunglib.io.atomic import write_text_atomic

SUMMARY_COLUMNS = ("scan", "patient_key", "status", "reason")
"""The columns every batch summary starts with; each command adds its own after them."""


def batch_items(folder: str | os.PathLike) -> list[Path]:
    """The scans of a batch folder, sorted: each volume file and each sub-folder is one scan.

    Hidden entries and files that are not NIfTI/NRRD/MetaImage volumes (a MetaImage ``.raw``,
    a CSV beside the scans) are not scans.
    """
    from lunglib.io.image import image_suffix

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"batch folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                  and (p.is_dir() or image_suffix(p) is not None))


def scan_name(path: Path) -> str:
    """A batch item's name: the folder's name, or the file's without its volume ending."""
    from lunglib.io.image import image_suffix

    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix and path.is_file() else path.name


def run_batch(
    folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    work: Callable[[Path, Path], dict[str, object]],
    columns: Sequence[str],
    num_parts: int = 1,
    part_id: int = 0,
    progress: bool = True,
    desc: str = "scans",
) -> pd.DataFrame:
    """Run ``work(scan, output_folder)`` on every scan of a folder, surviving failures.

    Parameters
    ----------
    folder : path-like
        Holds the scans (:func:`batch_items`): DICOM folders and/or volume files.
    output_dir : path-like
        Receives ``<scan name>/`` per scan and the summary CSV: ``summary.csv``, or
        ``summary_part<K>of<N>.csv`` for one part of a split run.
    work : callable
        ``work(scan_path, scan_output_folder) -> row``: does one scan and returns its summary
        row (``patient_key`` and the command's ``columns``). Any exception marks that scan
        ``failed`` with the reason; the batch goes on.
    columns : sequence of str
        The command's own summary columns, after :data:`SUMMARY_COLUMNS` (NaN for failed scans).
    num_parts, part_id : int
        This call does the items ``part_id, part_id + num_parts, ...`` of the sorted list
        (``0 <= part_id < num_parts``), so N jobs with ids 0..N-1 do every scan once.
    progress : bool, default True
        A tqdm progress bar on stderr.
    desc : str
        The progress bar's label.

    Returns
    -------
    DataFrame
        One row per scan of this part: ``scan`` (its name in ``folder``, as the user named it),
        ``patient_key`` (the pseudonym), ``status`` (``ok`` or ``failed``), ``reason`` (why it
        failed, naming the file), then ``columns``.
    """
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"need num_parts >= 1 and 0 <= part_id < num_parts, got "
                         f"num_parts={num_parts}, part_id={part_id}")
    from tqdm.auto import tqdm

    items = batch_items(folder)[part_id::num_parts]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in tqdm(items, desc=desc, unit="scan", disable=not progress):
        name = scan_name(item)
        row: dict[str, object] = {"scan": name, "patient_key": "", "status": "failed",
                                  "reason": "", **{c: np.nan for c in columns}}
        try:
            row.update(work(item, out / name), status="ok")
        except Exception as exc:  # one bad scan must not stop the batch: record it, go on
            row["reason"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    summary = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, *columns])
    name = "summary.csv" if num_parts == 1 else f"summary_part{part_id}of{num_parts}.csv"
    write_text_atomic(out / name, summary.to_csv(index=False))
    return summary
