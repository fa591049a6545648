"""The embedded synthetic cohort (:mod:`lunglib.synthetic`): DSB2017 layout plus ground truth.

``<root>/ground_truth/<patient id>.npz`` holds ``nodule_labels`` (0 background, k = nodule k)
and ``lung_mask``, both in the voxel grid that :func:`lunglib.io.dicom.load_scan` returns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lunglib.datasets.dsb2017 import DSB2017Dataset
from lunglib.io.dicom import CTScan


class SyntheticDataset(DSB2017Dataset):
    """A synthetic cohort: DSB2017 layout, labels from ``labels.csv``, and true masks."""

    name = "synthetic"

    def _ground_truth(self, patient_id: str, key: str) -> np.ndarray | None:
        path = self.root / "ground_truth" / f"{patient_id}.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            if key not in data:
                raise ValueError(f"{path}: no '{key}' array (found {sorted(data.files)})")
            return data[key]

    def _checked(self, array: np.ndarray | None, scan: CTScan | None, what: str,
                 patient_id: str) -> np.ndarray | None:
        if array is not None and scan is not None and array.shape != scan.shape:
            raise ValueError(
                f"{self.root / 'ground_truth' / (patient_id + '.npz')}: {what} has shape "
                f"{array.shape} but the scan has {scan.shape}; regenerate the cohort"
            )
        return array

    def nodule_mask(self, patient_id: str, scan: CTScan) -> np.ndarray | None:
        labels = self._ground_truth(patient_id, "nodule_labels")
        return self._checked(labels, scan, "nodule_labels", patient_id)

    def lung_mask(self, patient_id: str, scan: CTScan | None = None) -> np.ndarray | None:
        """The true lung mask (uint8), or None when the cohort has no ground truth for it."""
        mask = self._ground_truth(patient_id, "lung_mask")
        return self._checked(mask, scan, "lung_mask", patient_id)

    def ground_truth_path(self, patient_id: str) -> Path:
        return self.root / "ground_truth" / f"{patient_id}.npz"
