"""Data Science Bowl 2017: one folder of DICOM per patient and a labels CSV.

Layout (Kaggle download)::

    <root>/stage1/<patient id>/*.dcm      (pass <root>/stage1 as the dataset root)
    <root>/stage1_labels.csv              (id,cancer)

The labels file is found as ``stage1_labels.csv`` or ``labels.csv`` in the root or its parent,
or given explicitly (a CSV path or an ``{id: label}`` mapping). Ids in the labels without a scan
folder, and scan folders without a label, are recorded as QC findings; both keep loading.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lunglib.datasets.base import CTDataset
from lunglib.io.dicom import CTScan, load_scan
from lunglib.io.qc import QCFinding
from lunglib.settings import read_labels

LABEL_FILES = ("stage1_labels.csv", "labels.csv")
# Folders beside the patients that are not patients.
_NOT_PATIENTS = {"ground_truth", "cache", "__pycache__"}


def _as_binary(value: object) -> int | None:
    text = str(value).strip().lower()
    if text in {"1", "1.0", "true", "yes", "cancer", "malignant"}:
        return 1
    if text in {"0", "0.0", "false", "no", "benign", "healthy"}:
        return 0
    return None


def _summary(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class DSB2017Dataset(CTDataset):
    """A folder of patient folders of DICOM (the DSB2017 layout) with a labels CSV.

    Parameters
    ----------
    root : path-like
        Folder holding one sub-folder of DICOM files per patient (e.g. ``stage1``).
    labels : path-like, mapping or None
        Labels CSV (an id and a label column, see :func:`lunglib.settings.read_labels`) or an
        ``{id: label}`` mapping; by default ``stage1_labels.csv`` / ``labels.csv`` in ``root``
        or its parent. Labels are 1 (cancer) or 0; other values are recorded and ignored.
    """

    name = "dsb2017"

    def __init__(self, root: str | Path, labels: str | Path | Mapping | None = None) -> None:
        super().__init__(root)
        self.labels_source: str | None = None
        self._labels = self._read_labels(labels)
        self._ids = sorted(
            p.name for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name not in _NOT_PATIENTS
            and any(f.is_file() for f in p.rglob("*"))
        )
        self._check_labels()

    def _read_labels(self, labels: str | Path | Mapping | None) -> dict[str, int]:
        if isinstance(labels, Mapping):
            raw = {str(k): v for k, v in labels.items()}
            self.labels_source = "mapping"
        else:
            path = Path(labels) if labels not in (None, "") else self._find_labels_file()
            if path is None:
                self.findings.append(QCFinding(
                    "no_labels", f"no {' or '.join(LABEL_FILES)} in {self.root} or its parent "
                    "and none given; patients have no labels", "warning", str(self.root)))
                return {}
            raw = read_labels(path)  # raises ValueError naming the file
            self.labels_source = str(path)
        out: dict[str, int] = {}
        bad = []
        for key, value in raw.items():
            label = _as_binary(value)
            if label is None:
                bad.append(f"{key}={value!r}")
            else:
                out[key] = label
        if bad:
            self.findings.append(QCFinding(
                "bad_label", f"{len(bad)} label(s) are neither 0 nor 1 and were ignored: "
                f"{_summary(bad)}", "warning", self.labels_source))
        return out

    def _find_labels_file(self) -> Path | None:
        for folder in (self.root, self.root.parent):
            for name in LABEL_FILES:
                if (folder / name).is_file():
                    return folder / name
        return None

    def _check_labels(self) -> None:
        if not self._labels:
            return
        have = set(self._ids)
        no_scan = sorted(set(self._labels) - have)
        no_label = sorted(have - set(self._labels))
        if no_scan:
            self.findings.append(QCFinding(
                "label_without_scan", f"{len(no_scan)} labelled id(s) have no scan folder in "
                f"{self.root}: {_summary(no_scan)}; they are left out", "warning",
                self.labels_source))
        if no_label:
            self.findings.append(QCFinding(
                "scan_without_label", f"{len(no_label)} scan folder(s) have no label "
                f"(label None; e.g. a held-out test set): {_summary(no_label)}", "warning",
                self.labels_source))

    def patient_ids(self) -> list[str]:
        return list(self._ids)

    def patient_dir(self, patient_id: str) -> Path:
        if patient_id not in self._ids:
            raise KeyError(f"{patient_id}: no patient folder of that name in {self.root}")
        return self.root / patient_id

    def load_scan(self, patient_id: str) -> CTScan:
        return load_scan(self.patient_dir(patient_id))

    def label(self, patient_id: str) -> int | None:
        return self._labels.get(patient_id) if patient_id in self._ids else None
