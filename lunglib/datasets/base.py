"""The one interface every dataset adapter offers: patients, scans, labels, masks, QC.

An adapter maps a public dataset's own layout onto this interface; everything above the I/O layer
(preprocessing cache, training, notebooks) talks only to :class:`CTDataset`.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lunglib.io.dicom import CTScan, DicomLoadError
from lunglib.io.qc import QCFinding
from lunglib.settings import display_path


def files_digest(files: Iterable[Path], relative_to: Path) -> str:
    """SHA-256 (16 hex digits) of files' names (relative to ``relative_to``) and bytes, in the
    order given; "" when there are none. The annotation fingerprint of the adapters."""
    digest = hashlib.sha256()
    found = False
    for path in files:
        digest.update(Path(path).relative_to(relative_to).as_posix().encode() + b"\0")
        digest.update(Path(path).read_bytes())
        found = True
    return digest.hexdigest()[:16] if found else ""


class CTDataset(abc.ABC):
    """A collection of CT scans with optional labels and masks.

    Subclasses implement :meth:`patient_ids` and :meth:`load_scan`; the rest has defaults.
    Patient ids are the dataset's own de-identified case names (folder names), never DICOM
    PatientName or PatientID values.
    """

    name: str = "dataset"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.name} dataset folder {self.root} does not exist")
        self.findings: list[QCFinding] = []

    @abc.abstractmethod
    def patient_ids(self) -> list[str]:
        """Sorted ids of the patients with a scan."""

    @abc.abstractmethod
    def load_scan(self, patient_id: str) -> CTScan:
        """The patient's CT; raises :class:`lunglib.DicomLoadError` naming the file on failure."""

    def scans(
        self, ids: Iterable[str] | None = None, skipped: dict[str, str] | None = None
    ) -> Iterator[tuple[str, CTScan]]:
        """``(patient_id, scan)`` for each readable scan of ``ids`` (default: every patient).

        One scan that cannot be read must not stop a loop over a dataset: a
        :class:`lunglib.DicomLoadError` (or an error of the dataset's own format) is recorded
        in ``skipped`` as ``{patient_id: reason}`` -- the reason names the file -- and the loop
        goes on with the next patient. Scans are loaded one at a time, when the loop asks.
        """
        for pid in self.patient_ids() if ids is None else ids:
            try:
                scan = self.load_scan(pid)
            except (DicomLoadError, OSError, ValueError) as err:
                if skipped is not None:
                    skipped[pid] = str(err)
                continue
            yield pid, scan

    def label(self, patient_id: str) -> int | None:
        """Patient-level label (1 = cancer, 0 = no cancer), or ``None`` when unknown."""
        return None

    def labels(self) -> dict[str, int]:
        """``{patient_id: label}`` for every patient with a known label."""
        out = {}
        for pid in self.patient_ids():
            value = self.label(pid)
            if value is not None:
                out[pid] = value
        return out

    def nodule_mask(self, patient_id: str, scan: CTScan) -> np.ndarray | None:
        """Nodule mask in the voxel grid of ``scan`` (0 background, k > 0 nodule k), or None."""
        return None

    def lung_mask(self, patient_id: str, scan: CTScan | None = None) -> np.ndarray | None:
        """A true lung mask in the voxel grid of ``scan`` (uint8, 1 = lung), or None.

        Only datasets that know the lungs' extent (the synthetic cohort) return one; for the
        others this is None, so callers compare a computed lung mask with the truth where there
        is one without checking the dataset's type.
        """
        return None

    def mask_options(self) -> dict[str, object]:
        """The settings of this dataset that change its nodule masks (part of the cache key).

        Prepared volumes carry the nodule masks, so a dataset whose masks depend on a choice
        (LIDC-IDRI's reader consensus, say) returns it here and a changed choice never reads
        masks prepared under the old one. Labels are not included: the cache reads them again
        on every run.
        """
        return {}

    def annotation_fingerprint(self, patient_id: str) -> str:
        """A digest of the files this patient's nodule mask is drawn from ("" when none).

        The cache stores it beside the prepared volume and prepares the patient again when it
        changes, so annotation files edited in place (a corrected outline) never leave stale
        masks behind. Datasets whose annotations live in one table for all patients put its
        digest in :meth:`mask_options` instead. Hashing a few small files is cheap; the default
        says "no per-patient annotation files".
        """
        return ""

    def qc(self) -> list[QCFinding]:
        """Findings about the dataset as a whole (ids without scans, missing annotations...)."""
        return list(self.findings)

    def __len__(self) -> int:
        return len(self.patient_ids())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={display_path(self.root)!r}, patients={len(self)})"
