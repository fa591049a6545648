"""Lung-PET-CT-Dx: CT (and PET) DICOM with PASCAL-VOC tumour boxes named by slice UID.

Layout of the TCIA download::

    <root>/Lung-PET-CT-Dx/Lung_Dx-A0002/<study>/<series>/*.dcm
    <root>/Annotation/A0002/<SOPInstanceUID>.xml      (one VOC file per annotated slice)

Each box file names the slice it belongs to by SOPInstanceUID; the slice may be in any series of
the patient. The adapter loads the CT series that holds most of the patient's boxes and maps every
box to a slice index of that series. Every patient in the collection has lung cancer (label 1);
the box class is the histology: A adenocarcinoma, B small cell carcinoma, E large cell carcinoma,
G squamous cell carcinoma (also the letter in the patient id).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom

from lunglib.datasets.base import CTDataset, files_digest
from lunglib.io.dicom import CTScan, load_scan
from lunglib.io.qc import QCFinding

HISTOLOGY = {
    "A": "adenocarcinoma",
    "B": "small cell carcinoma",
    "E": "large cell carcinoma",
    "G": "squamous cell carcinoma",
}
PATIENT_PREFIX = "Lung_Dx-"
_HEADER_TAGS = ["SOPInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns"]


def parse_voc(path: str | Path) -> list[dict[str, object]]:
    """Boxes of one PASCAL-VOC XML file: ``class``, ``xmin``, ``ymin``, ``xmax``, ``ymax``."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ValueError(f"{path}: not a readable VOC XML file ({exc})") from exc
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        name = (obj.findtext("name") or "").strip().upper()
        if box is None:
            raise ValueError(f"{path}: an <object> without <bndbox>")
        try:
            coords = {k: int(round(float(box.findtext(k) or "nan")))
                      for k in ("xmin", "ymin", "xmax", "ymax")}
        except ValueError as exc:
            raise ValueError(f"{path}: box coordinates are not numbers ({exc})") from exc
        boxes.append({"class": name, **coords})
    return boxes


class LungPETCTDxDataset(CTDataset):
    """Lung-PET-CT-Dx through the :class:`CTDataset` interface, with tumour boxes.

    Parameters
    ----------
    root : path-like
        The download folder (holding ``Lung-PET-CT-Dx/`` and ``Annotation/``), or the
        ``Lung-PET-CT-Dx`` folder itself.
    annotations : path-like, optional
        The ``Annotation`` folder, when it is elsewhere.
    """

    name = "lung-pet-ct-dx"

    def __init__(self, root: str | Path, annotations: str | Path | None = None) -> None:
        super().__init__(root)
        nested = self.root / "Lung-PET-CT-Dx"
        self.images_root = nested if nested.is_dir() else self.root
        if annotations is not None:
            self.annotations_root: Path | None = Path(annotations)
        else:
            self.annotations_root = next(
                (p for p in (self.root / "Annotation", self.images_root / "Annotation",
                             self.root.parent / "Annotation") if p.is_dir()), None)
        if self.annotations_root is None or not self.annotations_root.is_dir():
            self.findings.append(QCFinding(
                "missing_annotations", f"no Annotation folder beside {self.images_root}; "
                "scans load without boxes", "warning", str(self.root)))
            self.annotations_root = None
        self._index: dict[str, dict[str, tuple[str, str]]] = {}
        self._boxes: dict[str, list[dict[str, object]]] = {}

    def patient_ids(self) -> list[str]:
        return sorted(p.name for p in self.images_root.iterdir()
                      if p.is_dir() and p.name.startswith(PATIENT_PREFIX))

    def patient_dir(self, patient_id: str) -> Path:
        path = self.images_root / patient_id
        if not path.is_dir():
            raise KeyError(f"{patient_id}: no such patient folder under {self.images_root}")
        return path

    def histology(self, patient_id: str) -> str | None:
        """The histology letter (A, B, E, G) encoded in the patient id."""
        letter = patient_id.removeprefix(PATIENT_PREFIX)[:1].upper()
        return letter if letter in HISTOLOGY else None

    def label(self, patient_id: str) -> int | None:
        return 1  # every patient of the collection has a lung cancer diagnosis

    def _slice_index(self, patient_id: str) -> dict[str, tuple[str, str]]:
        """SOPInstanceUID -> (SeriesInstanceUID, Modality) for every image of the patient."""
        if patient_id not in self._index:
            index = {}
            for path in sorted(self.patient_dir(patient_id).rglob("*.dcm")):
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
                except Exception as exc:  # noqa: BLE001 - a damaged file is recorded, not fatal
                    self.findings.append(QCFinding(
                        "unreadable_file", f"header unreadable ({exc}); skipped", "warning",
                        str(path)))
                    continue
                index[str(ds.get("SOPInstanceUID", ""))] = (
                    str(ds.get("SeriesInstanceUID", "")), str(ds.get("Modality", "")))
            self._index[patient_id] = index
        return self._index[patient_id]

    def _raw_boxes(self, patient_id: str) -> list[dict[str, object]]:
        if patient_id in self._boxes:
            return self._boxes[patient_id]
        boxes: list[dict[str, object]] = []
        folder = (self.annotations_root / patient_id.removeprefix(PATIENT_PREFIX)
                  if self.annotations_root else None)
        if folder is None or not folder.is_dir():
            if self.annotations_root is not None:
                self.findings.append(QCFinding(
                    "missing_annotations", f"{patient_id}: no box folder {folder}; the scan "
                    "loads without boxes", "warning", str(folder)))
        else:
            index = self._slice_index(patient_id)
            for xml in sorted(folder.glob("*.xml")):
                try:
                    parsed = parse_voc(xml)
                except ValueError as exc:
                    self.findings.append(QCFinding("bad_annotation", str(exc), "warning",
                                                   str(xml)))
                    continue
                sop = xml.stem
                series, modality = index.get(sop, ("", ""))
                if not series:
                    self.findings.append(QCFinding(
                        "annotation_image_missing", f"{patient_id}: box file names slice {sop}, "
                        "which is in none of the patient's series; box left out", "warning",
                        str(xml)))
                    continue
                for box in parsed:
                    boxes.append({"sop_uid": sop, "series_uid": series, "modality": modality,
                                  **box, "file": str(xml)})
        self._boxes[patient_id] = boxes
        return boxes

    def annotation_fingerprint(self, patient_id: str) -> str:
        """SHA-256 (16 hex digits) of the patient's box files: the boxes choose which series is
        loaded, so an edited box file prepares the patient again."""
        if self.annotations_root is None:
            return ""
        folder = self.annotations_root / patient_id.removeprefix(PATIENT_PREFIX)
        return files_digest(sorted(folder.glob("*.xml")), self.annotations_root)

    def annotated_series(self, patient_id: str) -> str | None:
        """The CT series holding most of the patient's boxes (None without boxes)."""
        counts = Counter(b["series_uid"] for b in self._raw_boxes(patient_id)
                         if b["modality"] == "CT")
        return max(counts, key=lambda u: (counts[u], u)) if counts else None

    def load_scan(self, patient_id: str, series_uid: str | None = None) -> CTScan:
        """The CT series holding most boxes (or ``series_uid``); the largest CT without boxes."""
        uid = series_uid or self.annotated_series(patient_id)
        return load_scan(self.patient_dir(patient_id), series_uid=uid)

    def boxes(self, patient_id: str, scan: CTScan | None = None):
        """Tumour boxes as a DataFrame.

        Columns: ``sop_uid``, ``series_uid``, ``class`` (A/B/E/G), ``xmin, ymin, xmax, ymax``
        (pixel columns and rows, inclusive), and with a scan ``slice`` (z index in ``scan``,
        -1 when the box is on a slice of another series) and ``in_scan``.
        """
        import pandas as pd

        columns = ["sop_uid", "series_uid", "modality", "class", "xmin", "ymin", "xmax", "ymax"]
        table = pd.DataFrame(self._raw_boxes(patient_id), columns=columns + ["file"])
        table = table[columns]
        if scan is None:
            return table
        where = {uid: k for k, uid in enumerate(scan.slice_uids) if uid}
        table["slice"] = [where.get(s, -1) for s in table["sop_uid"]]
        table["in_scan"] = table["slice"] >= 0
        elsewhere = table[~table["in_scan"]]
        if len(elsewhere):
            self._record(QCFinding(
                "box_in_other_series", f"{patient_id}: {len(elsewhere)} box(es) are on slices "
                f"of other series ({', '.join(sorted(set(elsewhere['series_uid'])))}), not the "
                f"loaded {scan.series_uid}; slice = -1 (load that series to use them)", "info"))
        rows, cols = scan.shape[1:]
        outside = ((table["xmin"] < 0) | (table["ymin"] < 0) | (table["xmax"] >= cols)
                   | (table["ymax"] >= rows) | (table["xmin"] > table["xmax"])
                   | (table["ymin"] > table["ymax"]))
        if outside.any():
            self._record(QCFinding(
                "annotation_outside_volume", f"{patient_id}: {int(outside.sum())} box(es) reach "
                f"outside the {rows}x{cols} image or are empty; clipped", "warning"))
            table["xmin"] = table["xmin"].clip(0, cols - 1)
            table["xmax"] = table["xmax"].clip(0, cols - 1)
            table["ymin"] = table["ymin"].clip(0, rows - 1)
            table["ymax"] = table["ymax"].clip(0, rows - 1)
        return table

    def _record(self, finding: QCFinding) -> None:
        if finding not in self.findings:
            self.findings.append(finding)

    def box_mask(self, patient_id: str, scan: CTScan) -> np.ndarray:
        """Filled boxes on their slices (uint8, 1 inside a box), in ``scan``'s voxel grid."""
        mask = np.zeros(scan.shape, dtype=np.uint8)
        table = self.boxes(patient_id, scan)
        for row in table[table["in_scan"]].itertuples(index=False):
            mask[row.slice, row.ymin:row.ymax + 1, row.xmin:row.xmax + 1] = 1
        return mask
