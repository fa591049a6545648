"""Read a run folder: the files of the run-folder contract (issue #25), each one optional.

A course run (``lunglib run``) leaves its results in one folder; the report reads only the files
listed in :data:`PARTS`. A part that is missing or cannot be read becomes a short reason
(:attr:`RunFolder.missing`) the page shows instead, so a run that stopped after notebook 04 still
gets a report of what it did.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lunglib.report.runinfo import RUN_INFO, read_run_info
from lunglib.settings import display_path

PARTS: dict[str, str] = {
    RUN_INFO: "lunglib run",
    "metrics.json": "07_evaluate",
    "predictions.csv": "07_evaluate",
    "search_results.csv": "05_tune",
    "best_config.json": "05_tune",
    "segmentation_levels.csv": "06_segment",
    "segmentation_gallery.npz": "06_segment",
    "failures.npz": "07_evaluate",
}
"""Every file the report reads, with what writes it (for the "not available" lines)."""

NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
_ARRAYS = {
    "segmentation_gallery.npz": ("image", "truth", "prediction", "dice", "label"),
    "failures.npz": ("image", "cam", "truth", "kind", "probability"),
}


class NotARunFolderError(FileNotFoundError):
    """The folder holds none of the files a course run writes."""


@dataclass
class RunFolder:
    """The contents of a run folder; every part is None when absent (see :attr:`missing`)."""

    path: Path
    run_info: dict | None = None
    metrics: dict | None = None
    predictions: pd.DataFrame | None = None
    search_results: pd.DataFrame | None = None
    best_config: dict | None = None
    segmentation_levels: pd.DataFrame | None = None
    gallery: dict[str, np.ndarray] | None = None
    failures: dict[str, np.ndarray] | None = None
    notebooks: list[Path] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run folder's own name: the page never shows where it lies on the machine."""
        return self.path.name

    def not_available(self, part: str) -> str:
        """Why ``part`` (a contract file name) is not on the page, in one line."""
        return self.missing.get(part) or f"not available: {part} was not read"


def _missing_line(part: str) -> str:
    writer = PARTS[part]
    how = ("run the course with `lunglib run`" if writer == "lunglib run"
           else f"run notebook {writer}")
    return f"not available: {how} (it writes {part})"


def _read_arrays(path: Path, needed: tuple[str, ...]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        absent = [k for k in needed if k not in data.files]
        if absent:
            raise KeyError(f"no array {', '.join(absent)}")
        return {k: data[k] for k in data.files}


def _read(path: Path, part: str):
    if part == RUN_INFO:
        return read_run_info(path.parent)
    if part.endswith(".json"):
        return json.loads(path.read_text())
    if part == "segmentation_levels.csv":
        return pd.read_csv(path, index_col=0)
    if part.endswith(".csv"):
        return pd.read_csv(path)
    return _read_arrays(path, _ARRAYS[part])


_ATTRIBUTE = {RUN_INFO: "run_info", "metrics.json": "metrics", "predictions.csv": "predictions",
              "search_results.csv": "search_results", "best_config.json": "best_config",
              "segmentation_levels.csv": "segmentation_levels",
              "segmentation_gallery.npz": "gallery", "failures.npz": "failures"}


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with ``run.json``, ``metrics.json`` or an executed notebook."""
    folder = Path(path)
    return folder.is_dir() and (
        (folder / RUN_INFO).is_file() or (folder / "metrics.json").is_file()
        or any(folder.glob(NOTEBOOK_GLOB)))


def read_run_folder(path: str | os.PathLike) -> RunFolder:
    """Every part of the run folder ``path`` that is there and readable.

    Raises
    ------
    NotARunFolderError
        When ``path`` is not a folder or holds none of ``run.json``, ``metrics.json`` and the
        executed ``0N_*.ipynb`` notebooks.
    """
    folder = Path(path)
    if not is_run_folder(folder):
        raise NotARunFolderError(
            f"{display_path(folder)} is not a lunglib run folder: it "
            + ("does not exist" if not folder.exists() else
               "is not a folder" if not folder.is_dir() else
               f"holds none of {RUN_INFO}, metrics.json or executed notebooks (0N_*.ipynb)")
            + "; make one with `lunglib run --output FOLDER`")
    run = RunFolder(path=folder.resolve(), notebooks=sorted(folder.glob(NOTEBOOK_GLOB)))
    for part, attribute in _ATTRIBUTE.items():
        file = folder / part
        if not file.is_file():
            run.missing[part] = _missing_line(part)
            continue
        try:
            setattr(run, attribute, _read(file, part))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            reason = str(exc).replace(str(file.resolve()), part).replace(str(file), part)
            run.missing[part] = (f"not available: {part} could not be read "
                                 f"({type(exc).__name__}: {reason[:120]})")
    return run
