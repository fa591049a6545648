"""LUNA16: MetaImage volumes (``subsetN/<seriesuid>.mhd`` + ``.raw``) with nodule CSVs.

Layout of the challenge download::

    <root>/subset0/<seriesuid>.mhd, <seriesuid>.raw, ... subset9/
    <root>/annotations.csv    seriesuid,coordX,coordY,coordZ,diameter_mm   (nodules >= 3 mm)
    <root>/candidates.csv     seriesuid,coordX,coordY,coordZ,class         (or candidates_V2.csv)

Coordinates are patient (world) millimetres, x y z, the same LPS frame as the image's origin and
direction; :meth:`lunglib.io.dicom.CTScan.world_to_voxel` turns them into (z, y, x) voxel indices.
Nodule masks are spheres of the annotated diameter. Patient ids are the series UIDs (LUNA16 has
one scan per id). LUNA16 gives no diagnosis: :meth:`LUNA16Dataset.label` is ``None`` unless
labels are given, or ``label_from_annotations=True`` (1 = at least one annotated nodule).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lunglib.datasets.base import CTDataset
from lunglib.io.dicom import CTScan
from lunglib.io.image import read_image_file
from lunglib.io.qc import QCFinding
from lunglib.settings import read_labels

ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")


def sphere_mask(
    scan: CTScan, centre_xyz: np.ndarray, diameter_mm: float
) -> np.ndarray:
    """Boolean ball of the given diameter (mm) around a world point, in the scan's grid."""
    mask = np.zeros(scan.shape, dtype=bool)
    centre = scan.world_to_voxel(centre_xyz)
    radius_vox = (diameter_mm / 2.0) / np.asarray(scan.spacing)
    lo = np.maximum(np.floor(centre - radius_vox).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius_vox).astype(int) + 1, scan.shape)
    if np.any(hi <= lo):
        return mask
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, scan.spacing, strict=True))
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = dist2 <= (diameter_mm / 2.0) ** 2
    return mask


def _read_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        return list(reader)


class LUNA16Dataset(CTDataset):
    """LUNA16 through the :class:`CTDataset` interface.

    Parameters
    ----------
    root : path-like
        Folder with the ``subsetN`` folders (or the ``.mhd`` files directly) and the CSVs.
    annotations, candidates : path-like, optional
        CSV paths; default ``<root>/annotations.csv`` and ``<root>/candidates_V2.csv`` or
        ``<root>/candidates.csv``.
    labels : path-like or mapping, optional
        Patient labels (``seriesuid,cancer``) if you have them.
    label_from_annotations : bool, default False
        Without labels, label a scan 1 when it has an annotated nodule and 0 otherwise
        (a nodule-presence label, not a diagnosis).
    """

    name = "luna16"

    def __init__(
        self,
        root: str | Path,
        annotations: str | Path | None = None,
        candidates: str | Path | None = None,
        labels: str | Path | Mapping | None = None,
        label_from_annotations: bool = False,
    ) -> None:
        super().__init__(root)
        self._files = {p.stem: p for p in sorted(self.root.rglob("*.mhd"))}
        self.label_from_annotations = label_from_annotations
        self._annotations = self._load_csv(
            annotations, ("annotations.csv",), ANNOTATION_COLUMNS, "annotations")
        self._candidates = self._load_csv(
            candidates, ("candidates_V2.csv", "candidates.csv"), CANDIDATE_COLUMNS, "candidates")
        if isinstance(labels, Mapping):
            self._labels = {str(k): int(v) for k, v in labels.items()}
        elif labels not in (None, ""):
            self._labels = {k: int(float(v)) for k, v in read_labels(Path(labels)).items()}
        else:
            self._labels = {}
        for what, rows in (("annotations", self._annotations), ("candidates", self._candidates)):
            unknown = sorted({r["seriesuid"] for r in rows or []} - set(self._files))
            if unknown:
                self.findings.append(QCFinding(
                    f"{what}_without_scan", f"{len(unknown)} series in {what} have no .mhd "
                    f"under {self.root} (e.g. {unknown[0]}); their rows are ignored", "info"))

    def mask_options(self) -> dict[str, object]:
        """A digest of the annotation rows: the nodule masks are drawn from them, so an edited
        ``annotations.csv`` must not reuse masks drawn from the old one."""
        rows = json.dumps(self._annotations or [], sort_keys=True)
        return {"annotations_sha256": hashlib.sha256(rows.encode()).hexdigest()[:16]}

    def _load_csv(self, given, names, columns, what) -> list[dict[str, str]] | None:
        path = Path(given) if given else next(
            (self.root / n for n in names if (self.root / n).is_file()), None)
        if path is None or not path.is_file():
            self.findings.append(QCFinding(
                f"missing_{what}", f"no {what} CSV ({given or ' or '.join(names)}) in "
                f"{self.root}; scans load without {what}", "warning", str(path or self.root)))
            return None
        return _read_rows(path, columns)

    def patient_ids(self) -> list[str]:
        return sorted(self._files)

    def load_scan(self, patient_id: str) -> CTScan:
        if patient_id not in self._files:
            raise KeyError(f"{patient_id}: no {patient_id}.mhd under {self.root}")
        return read_image_file(self._files[patient_id])

    def annotations(self, patient_id: str, scan: CTScan | None = None):
        """Annotated nodules as a DataFrame (world mm; voxel z, y, x and ``inside`` with a scan)."""
        return self._table(self._annotations, patient_id, scan, "diameter_mm")

    def candidates(self, patient_id: str, scan: CTScan | None = None):
        """Candidate locations (``class`` 1 = nodule) as a DataFrame, like :meth:`annotations`."""
        return self._table(self._candidates, patient_id, scan, "class")

    def _table(self, rows, patient_id: str, scan: CTScan | None, value: str):
        import pandas as pd

        picked = [r for r in rows or [] if r["seriesuid"] == patient_id]
        table = pd.DataFrame({
            "seriesuid": [r["seriesuid"] for r in picked],
            "coordX": [float(r["coordX"]) for r in picked],
            "coordY": [float(r["coordY"]) for r in picked],
            "coordZ": [float(r["coordZ"]) for r in picked],
            value: [float(r[value]) if value == "diameter_mm" else int(r[value])
                    for r in picked],
        })
        if scan is not None:
            zyx = np.array([scan.world_to_voxel(p) for p in
                            table[["coordX", "coordY", "coordZ"]].to_numpy()]).reshape(-1, 3)
            table["z"], table["y"], table["x"] = zyx[:, 0], zyx[:, 1], zyx[:, 2]
            table["inside"] = np.all((zyx > -0.5) & (zyx < np.array(scan.shape) - 0.5), axis=1)
        return table

    def nodule_mask(self, patient_id: str, scan: CTScan) -> np.ndarray | None:
        """Spheres of the annotated diameters: 0 background, k = k-th annotation (CSV order)."""
        if self._annotations is None:
            return None
        table = self.annotations(patient_id, scan)
        out = np.zeros(scan.shape, dtype=np.int16)
        for k, row in enumerate(table.itertuples(index=False), start=1):
            if not row.inside:
                self.findings.append(QCFinding(
                    "annotation_outside_volume", f"{patient_id}: nodule {k} at world "
                    f"({row.coordX:.1f}, {row.coordY:.1f}, {row.coordZ:.1f}) mm lies outside the "
                    f"volume (voxel z,y,x = {row.z:.1f}, {row.y:.1f}, {row.x:.1f}); left out",
                    "warning", scan.source))
                continue
            ball = sphere_mask(scan, np.array([row.coordX, row.coordY, row.coordZ]),
                               row.diameter_mm)
            out[ball & (out == 0)] = k
        return out

    def label(self, patient_id: str) -> int | None:
        if patient_id in self._labels:
            return self._labels[patient_id]
        if self.label_from_annotations and self._annotations is not None:
            return int(any(r["seriesuid"] == patient_id for r in self._annotations))
        return None
