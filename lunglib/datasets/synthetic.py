"""The embedded synthetic cohort (:mod:`lunglib.synthetic`): DSB2017 layout plus ground truth.

The true masks are read by :func:`lunglib.synthetic.ground_truth_array`, the one reader of the
cohort's ground-truth files (their layout and their shape checks live there).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lunglib.datasets.base import files_digest
from lunglib.datasets.dsb2017 import DSB2017Dataset
from lunglib.io.dicom import CTScan
from lunglib.synthetic import ground_truth_array, ground_truth_paths


class SyntheticDataset(DSB2017Dataset):
    """A synthetic cohort: DSB2017 layout, labels from ``labels.csv``, and true masks.

    A mask is None when the cohort has no ground truth for the patient; a mask whose shape is
    not the scan's raises ValueError (the cohort was regenerated under the scans).
    """

    name = "synthetic"

    def nodule_mask(self, patient_id: str, scan: CTScan) -> np.ndarray | None:
        return ground_truth_array(self.root, patient_id, "nodule_labels",
                                  None if scan is None else scan.shape)

    def lung_mask(self, patient_id: str, scan: CTScan | None = None) -> np.ndarray | None:
        """The true lung mask (uint8), or None when the cohort has no ground truth for it."""
        return ground_truth_array(self.root, patient_id, "lung_mask",
                                  None if scan is None else scan.shape)

    def annotation_fingerprint(self, patient_id: str) -> str:
        """SHA-256 (16 hex digits) of the patient's ground-truth files ("" when there are none)."""
        return files_digest([p for p in ground_truth_paths(self.root, patient_id) if p.is_file()],
                            self.root)

    def ground_truth_path(self, patient_id: str) -> Path:
        """The patient's ``.npz`` of true masks."""
        return ground_truth_paths(self.root, patient_id)[0]
