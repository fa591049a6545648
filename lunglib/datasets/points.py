"""Nodule locations from annotation files, placed in the voxel grid of a given scan.

``lunglib characterize SCAN --at x,y,z`` and ``--from ANNOTATION_FILE`` need nodule positions in
the scan that is being looked at, whatever the annotations were written for. This module reads
the annotation formats of the public datasets (and a plain CSV of points) and answers, for one
loaded :class:`~lunglib.io.dicom.CTScan`, one row per nodule: its centre as voxel indices and as
patient millimetres, its size where the format has one, and -- where the format outlines or boxes
the nodule -- a label volume in the scan's grid.

====================  ============================================  ==============================
kind                  file                                          where a nodule is
====================  ============================================  ==============================
``"lidc_xml"``        LIDC-IDRI readers' XML (``LidcReadMessage``)  centroid of the readers'
                                                                    consensus outline
``"voc_boxes"``       PASCAL-VOC XML named by SOPInstanceUID, or a  centroid of the boxed voxels
                      folder of them (Lung-PET-CT-Dx)               of one tumour
``"luna16_csv"``      ``seriesuid,coordX,coordY,coordZ,             the given point (patient mm)
                      diameter_mm`` (LUNA16 ``annotations.csv``)
``"points_csv"``      any other CSV with ``x_mm,y_mm,z_mm``         the given point
                      (patient mm) or ``x,y,z`` (voxel column, row,
                      slice)
====================  ============================================  ==============================

Conventions (the ones :class:`~lunglib.io.dicom.CTScan` uses):

* patient coordinates are DICOM LPS millimetres, (x, y, z) -- the frame of LIDC's z positions,
  of LUNA16's ``coordX..coordZ`` and of ``CTScan.origin``. Slicer shows RAS: negate x and y;
* voxel indices in the table are (z, y, x) = (slice, row, column) of ``scan.hu``; a user types
  them -- on the command line or in a CSV -- in the order viewers (ITK-SNAP, ImageJ) show:
  x, y, z = column, row, slice.

LIDC outlines are placed slice by slice, by the slice's SOPInstanceUID or failing that by its z
position (:func:`~lunglib.datasets.lidc.slice_index_map`), so the XML also places its nodules in a
NIfTI/NRRD/MetaImage export of the series. VOC boxes carry nothing but the SOPInstanceUID of their
slice, so they need the DICOM series itself.

Nothing that identifies the patient enters the table (no PatientID, no UIDs, no file names).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lunglib.datasets.lidc import codes_to_mask, slice_index_map
from lunglib.datasets.lidc_xml import decode_codes, group_marks, key_z_mm, parse_lidc_xml
from lunglib.datasets.luna16 import ANNOTATION_COLUMNS
from lunglib.datasets.lung_pet_ct_dx import parse_voc
from lunglib.io.dicom import CTScan
from lunglib.io.geometry import sphere_diameter_mm
from lunglib.io.image import image_suffix

if TYPE_CHECKING:
    import pandas as pd

KINDS = ("lidc_xml", "luna16_csv", "voc_boxes", "points_csv")
"""The annotation kinds :func:`read_annotation_points` recognises."""

POSITION_COLUMNS = ("nodule", "z", "y", "x", "x_mm", "y_mm", "z_mm", "diameter_mm")
"""The columns every :attr:`AnnotationPoints.table` starts with."""

ACCEPTED_FORMATS = (
    "an LIDC-IDRI readers' XML (.xml, root LidcReadMessage); "
    "a PASCAL-VOC box file (.xml, root annotation, named <SOPInstanceUID>.xml) or a folder of "
    "them (Lung-PET-CT-Dx); "
    "a LUNA16 CSV (.csv with columns seriesuid,coordX,coordY,coordZ,diameter_mm); "
    "a CSV of points (.csv with columns x_mm,y_mm,z_mm in patient LPS mm, or x,y,z as voxel "
    "column,row,slice; optional diameter_mm, label, name)"
)

_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_POINT = re.compile(rf"^{_NUMBER},{_NUMBER},{_NUMBER}$")


@dataclass
class AnnotationPoints:
    """Nodules of one annotation file, placed in one scan's voxel grid.

    Attributes
    ----------
    table : DataFrame
        One row per nodule. Columns :data:`POSITION_COLUMNS`: ``nodule`` (int, the value of the
        nodule in ``labels``; 1..n in file order, for LIDC the nodule numbers of
        :meth:`~lunglib.datasets.lidc.LIDCDataset.nodule_mask`), ``z, y, x`` (fractional voxel
        indices in the scan), ``x_mm, y_mm, z_mm`` (patient LPS mm), ``diameter_mm`` (NaN when
        the format gives no size). Then the kind's own columns: LIDC ``n_readers``,
        ``median_malignancy``, ``malignancy_by_reader`` (text such as ``"5,5,5,4"``, 0 = that
        reader did not outline it); VOC ``class``, ``n_boxes``, ``n_slices``,
        ``box_long_side_mm``; points CSV ``label`` and ``name`` when the file has them.
    labels : ndarray of int16 or None
        Shape of ``scan.hu``: 0 background, k inside nodule k (LIDC: the consensus outline; VOC:
        the tumour's filled boxes). ``None`` for the point formats, which have no extent.
    kind : str
        One of :data:`KINDS`.
    notes : list of str
        What could not be used and was left out (outlines on slices the scan lacks, boxes on
        other series, ...): reading goes on, and these say what the table lacks.
    """

    table: pd.DataFrame
    labels: np.ndarray | None
    kind: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)


# --------------------------------------------------------------------------------------------
# Geometry helpers


def _extent_text(scan: CTScan) -> str:
    """The volume's extent in voxels (x, y, z order, as typed) and in patient mm."""
    nz, ny, nx = scan.shape
    corners = np.array([[z, y, x] for z in (-0.5, nz - 0.5) for y in (-0.5, ny - 0.5)
                        for x in (-0.5, nx - 0.5)])
    world = scan.voxel_to_world(corners)
    lo, hi = world.min(axis=0), world.max(axis=0)
    return (f"voxels x 0..{nx - 1}, y 0..{ny - 1}, z 0..{nz - 1}; patient LPS "
            f"x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}, "
            f"z {lo[2]:.1f}..{hi[2]:.1f} mm")


def _inside(zyx: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Whether (n, 3) voxel indices fall in the volume (within half a voxel of its centres)."""
    zyx = np.atleast_2d(zyx)
    return np.all((zyx > -0.5) & (zyx < np.asarray(shape) - 0.5), axis=1)


def parse_point(text: str, scan: CTScan, voxel: bool = False) -> tuple[float, float, float]:
    """One point typed by a user (``"x,y,z"``), as a voxel index (z, y, x) of ``scan``.

    Parameters
    ----------
    text : str
        Three comma-separated numbers; spaces are allowed (``"-60.5, 120, -110"``).
    scan : CTScan
        The scan the point is in.
    voxel : bool, default False
        False: patient coordinates x, y, z in mm (DICOM LPS, the frame of the DICOM headers and
        of LUNA16's CSVs), converted with :meth:`CTScan.world_to_voxel`. True: voxel indices
        given as x, y, z = column, row, slice -- the order viewers such as ITK-SNAP and ImageJ
        show them in -- and returned reordered.

    Returns
    -------
    tuple of float
        (z, y, x) fractional voxel indices, the order of ``scan.hu``.

    Raises
    ------
    ValueError
        Naming the text: when it is not three numbers, or when the point lies outside the volume
        (the message gives the volume's extent in voxels and in mm).
    """
    match = _POINT.match(text or "")
    unit = "voxel column,row,slice" if voxel else "patient LPS mm"
    if match is None:
        raise ValueError(f"point {text!r} is not three comma-separated numbers x,y,z ({unit}), "
                         "e.g. '-60.5,120,-110'")
    xyz = np.array([float(v) for v in match.groups()])
    if not np.all(np.isfinite(xyz)):
        raise ValueError(f"point {text!r} has a coordinate that is not a finite number")
    zyx = xyz[::-1].copy() if voxel else np.asarray(scan.world_to_voxel(xyz), dtype=float)
    if not _inside(zyx, scan.shape)[0]:
        where = ", ".join(f"{a} {v:.1f}" for a, v in zip("xyz", zyx[::-1], strict=True))
        hint = "" if voxel else " (coordinates are LPS: from RAS, as in Slicer, negate x and y)"
        raise ValueError(f"point {text!r} ({unit}) lies outside the volume: it is at voxel "
                         f"{where}; the volume spans {_extent_text(scan)}{hint}")
    return float(zyx[0]), float(zyx[1]), float(zyx[2])


def label_centres(labels: np.ndarray, scan: CTScan) -> pd.DataFrame:
    """Centre and equivalent diameter of each label of a label volume in ``scan``'s grid.

    The centre is the centroid of the label's voxels (voxel indices, then patient mm through
    :meth:`CTScan.voxel_to_world`); the diameter is that of the sphere of the label's volume
    (:func:`~lunglib.io.geometry.sphere_diameter_mm`).
    :func:`lunglib.evaluation.detection.nodule_centres` uses it for LUNA16-style scoring.

    Returns
    -------
    DataFrame
        Columns :data:`POSITION_COLUMNS`, one row per label present, in label order.
    """
    import pandas as pd
    from scipy import ndimage

    labels = np.asarray(labels)
    rows = []
    voxel_mm3 = float(np.prod(scan.spacing))  # any object with spacing and voxel_to_world
    for k, box in enumerate(ndimage.find_objects(labels.astype(np.int32)), start=1):
        if box is None:
            continue
        idx = np.argwhere(labels[box] == k)
        zyx = idx.mean(axis=0) + np.array([s.start for s in box], dtype=float)
        x, y, z = scan.voxel_to_world(zyx)
        rows.append({"nodule": k, "z": zyx[0], "y": zyx[1], "x": zyx[2], "x_mm": float(x),
                     "y_mm": float(y), "z_mm": float(z),
                     "diameter_mm": sphere_diameter_mm(len(idx) * voxel_mm3)})
    return pd.DataFrame(rows, columns=list(POSITION_COLUMNS))


def _points_table(zyx: np.ndarray, scan: CTScan, diameters: np.ndarray) -> pd.DataFrame:
    """:data:`POSITION_COLUMNS` for points given as (n, 3) voxel indices."""
    import pandas as pd

    zyx = np.asarray(zyx, dtype=float).reshape(-1, 3)
    xyz = np.asarray(scan.voxel_to_world(zyx), dtype=float).reshape(-1, 3)
    return pd.DataFrame({
        "nodule": np.arange(1, len(zyx) + 1, dtype=int),
        "z": zyx[:, 0], "y": zyx[:, 1], "x": zyx[:, 2],
        "x_mm": xyz[:, 0], "y_mm": xyz[:, 1], "z_mm": xyz[:, 2],
        "diameter_mm": np.asarray(diameters, dtype=float),
    }, columns=list(POSITION_COLUMNS))


def _check_inside(
    zyx: np.ndarray, scan: CTScan, path: Path, what: str, rows: np.ndarray | None = None
) -> None:
    """Raise naming the data rows (1-based, as in the file) whose points lie outside the volume.

    ``rows`` gives the file's row number of each point (default 1..n).
    """
    rows = np.arange(1, len(zyx) + 1) if rows is None else np.asarray(rows)
    outside = np.flatnonzero(~_inside(zyx, scan.shape))
    if outside.size:
        listed = ", ".join(str(rows[i]) for i in outside[:10])
        more = f" (and {outside.size - 10} more)" if outside.size > 10 else ""
        raise ValueError(f"{path}: {outside.size} {what} lie outside the scan (data row(s) "
                         f"{listed}{more}); the volume spans {_extent_text(scan)}")


# --------------------------------------------------------------------------------------------
# The formats


def _lidc(path: Path, scan: CTScan, consensus_fraction: float) -> AnnotationPoints:
    """LIDC readers' XML: consensus outlines of the nodules >= 3 mm, as LIDCDataset builds them."""
    read = parse_lidc_xml(path)
    notes = [f.message for f in read.findings]
    marks = [m for s in read.sessions for m in s if not m.is_small]
    n_small = sum(m.is_small for s in read.sessions for m in s)
    if n_small:
        notes.append(f"{n_small} reader mark(s) of nodules < 3 mm (a single point, no outline) "
                     "left out, as in LIDCDataset")
    if (any(scan.slice_uids) and read.series_uid and read.series_uid != scan.series_uid):
        notes.append("the XML annotates another series than the scan; outlines were placed by "
                     "z position and may not match")
    nodules = group_marks(marks)
    z_map, missing = slice_index_map(scan, marks)
    if missing:
        where = ", ".join(f"{key_z_mm(k):.2f}" for k in missing[:5])
        notes.append(f"{len(missing)} outlined slice(s) (z = {where} mm) match no slice of the "
                     "scan (by SOPInstanceUID or z position); those outlines were left out")
    for mark in marks:
        _, rows, cols = decode_codes(mark.voxel_codes())
        outside = int(((rows >= scan.shape[1]) | (cols >= scan.shape[2])).sum())
        if outside:
            notes.append(f"reader {mark.session}: {outside} outlined pixel(s) lie outside the "
                         f"{scan.shape[1]}x{scan.shape[2]} image; clipped")
    labels = np.zeros(scan.shape, dtype=np.int16)
    for n in nodules:
        mask = codes_to_mask(n.consensus_codes(consensus_fraction), scan.shape, z_map)[0]
        labels[mask & (labels == 0)] = n.index
    table = label_centres(labels, scan)
    placed = set(table["nodule"])
    for n in nodules:
        if n.index not in placed:
            notes.append(f"nodule {n.index}: no consensus voxel lies on a slice of the scan; "
                         "left out of the table")
    by_index = {n.index: n for n in nodules}
    table["n_readers"] = [by_index[k].n_readers for k in table["nodule"]]
    table["median_malignancy"] = [
        np.nan if (m := by_index[k].median_malignancy) is None else m for k in table["nodule"]]
    table["malignancy_by_reader"] = [
        ",".join(str(v) for v in by_index[k].malignancy_by_session()) for k in table["nodule"]]
    return AnnotationPoints(table, labels, "lidc_xml", notes)


def _voc(path: Path, scan: CTScan) -> AnnotationPoints:
    """PASCAL-VOC boxes (Lung-PET-CT-Dx): boxes on neighbouring slices that overlap in-plane
    are one tumour."""
    from scipy import ndimage

    files = sorted(path.glob("*.xml")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: a folder without .xml files; accepted: {ACCEPTED_FORMATS}")
    if not any(scan.slice_uids):
        raise ValueError(
            f"{path}: PASCAL-VOC boxes are addressed by the SOPInstanceUID of their slice (the "
            "file name), which a scan read from a NIfTI/NRRD/MetaImage file does not have; load "
            "the DICOM series the boxes were drawn on")
    where = {uid: k for k, uid in enumerate(scan.slice_uids) if uid}
    notes: list[str] = []
    boxes: list[dict[str, object]] = []
    elsewhere: list[str] = []
    for xml in files:
        parsed = parse_voc(xml)  # ValueError naming the file when it is not VOC
        if xml.stem not in where:
            if parsed:
                elsewhere.append(xml.name)
            continue
        boxes.extend({"slice": where[xml.stem], **box} for box in parsed)
    if elsewhere:
        notes.append(f"{len(elsewhere)} box file(s) name slices that are not in this series "
                     "(another series of the study); their boxes were left out -- load that "
                     "series with --series-uid to use them")
    if not boxes:
        raise ValueError(
            f"{path}: none of the {len(files)} box file(s) names a slice of the scan's series "
            "(files are named by SOPInstanceUID); the boxes belong to another series of the "
            "study -- load that one")
    rows, cols = scan.shape[1:]
    mask = np.zeros(scan.shape, dtype=bool)
    clipped = 0
    for box in boxes:
        x0, x1 = sorted((int(box["xmin"]), int(box["xmax"])))
        y0, y1 = sorted((int(box["ymin"]), int(box["ymax"])))
        clip = (max(x0, 0), min(x1, cols - 1), max(y0, 0), min(y1, rows - 1))
        clipped += clip != (x0, x1, y0, y1)
        box.update(xmin=clip[0], xmax=clip[1], ymin=clip[2], ymax=clip[3])
        if clip[0] <= clip[1] and clip[2] <= clip[3]:
            mask[box["slice"], clip[2]:clip[3] + 1, clip[0]:clip[1] + 1] = True
    if clipped:
        notes.append(f"{clipped} box(es) reach outside the {rows}x{cols} image; clipped")
    labels, _ = ndimage.label(mask)  # face-connected: overlapping boxes on adjacent slices join
    labels = labels.astype(np.int16)
    table = label_centres(labels, scan)
    table["diameter_mm"] = np.nan  # a box is no outline: no volume to take a diameter from
    row_mm, col_mm = scan.spacing[1], scan.spacing[2]
    per_tumour: dict[int, list[dict[str, object]]] = {}
    for box in boxes:
        if box["xmin"] <= box["xmax"] and box["ymin"] <= box["ymax"]:
            k = int(labels[box["slice"], box["ymin"], box["xmin"]])
            per_tumour.setdefault(k, []).append(box)
    table["class"] = [",".join(sorted({str(b["class"]) for b in per_tumour[k]}))
                      for k in table["nodule"]]
    table["n_boxes"] = [len(per_tumour[k]) for k in table["nodule"]]
    table["n_slices"] = [len({b["slice"] for b in per_tumour[k]}) for k in table["nodule"]]
    table["box_long_side_mm"] = [
        max(max((int(b["xmax"]) - int(b["xmin"]) + 1) * col_mm,
                (int(b["ymax"]) - int(b["ymin"]) + 1) * row_mm) for b in per_tumour[k])
        for k in table["nodule"]]
    return AnnotationPoints(table, labels, "voc_boxes", notes)


def _scan_names(scan: CTScan) -> set[str]:
    """The ids LUNA16 could know the scan by: its series uid, and a volume file's name."""
    names = {scan.series_uid}
    source = Path(scan.source) if scan.source else None
    if source is not None and (suffix := image_suffix(source)) is not None:
        names.add(source.name[: -len(suffix)])
    return {n for n in names if n}


def _luna16(path: Path, frame: pd.DataFrame, scan: CTScan) -> AnnotationPoints:
    """LUNA16 ``annotations.csv``: the rows of this scan's series, in patient mm."""
    names = _scan_names(scan)
    picked = frame[frame["seriesuid"].astype(str).str.strip().isin(names)]
    if picked.empty:
        looked = " or ".join(sorted(names)) or "(the scan has no series uid)"
        raise ValueError(f"{path}: no row has seriesuid {looked} (the scan's series); the file "
                         f"lists {frame['seriesuid'].nunique()} other series")
    xyz = _numbers(picked[["coordX", "coordY", "coordZ"]], path)
    zyx = np.asarray(scan.world_to_voxel(xyz), dtype=float).reshape(-1, 3)
    _check_inside(zyx, scan, path, "nodule(s) of this series", picked.index.to_numpy() + 1)
    diameters = _numbers(picked[["diameter_mm"]], path, allow_nan=True)[:, 0]
    table = _points_table(zyx, scan, diameters)
    table[["x_mm", "y_mm", "z_mm"]] = xyz  # as written, not through the round trip
    return AnnotationPoints(table, None, "luna16_csv", [])


def _numbers(frame: pd.DataFrame, path: Path, allow_nan: bool = False) -> np.ndarray:
    """The columns as floats; a ValueError naming the file and column for text, infinities and
    (unless ``allow_nan``) blanks, which become NaN."""
    import pandas as pd

    out = np.empty(frame.shape, dtype=float)
    for j, column in enumerate(frame.columns):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        blank = frame[column].isna().to_numpy()
        bad = np.isinf(values) | (np.isnan(values) & ~(blank & allow_nan))
        if bad.any():
            raise ValueError(f"{path}: column {column!r} has a value that is not a finite number "
                             f"(data row {int(np.flatnonzero(bad)[0]) + 1})")
        out[:, j] = values
    return out


def _points(path: Path, frame: pd.DataFrame, scan: CTScan) -> AnnotationPoints:
    """A CSV of points: ``x_mm,y_mm,z_mm`` (patient mm) or ``x,y,z`` (voxel column,row,slice)."""
    lower = {str(c).strip().lower(): c for c in frame.columns}
    notes: list[str] = []
    if frame.empty:
        raise ValueError(f"{path}: the CSV has a header but no rows")
    mm = [lower.get(c) for c in ("x_mm", "y_mm", "z_mm")]
    vox = [lower.get(c) for c in ("x", "y", "z")]
    if all(mm):
        xyz = _numbers(frame[mm], path)
        zyx = np.asarray(scan.world_to_voxel(xyz), dtype=float).reshape(-1, 3)
        if all(vox):
            notes.append("both x_mm,y_mm,z_mm and x,y,z columns: the millimetres were used")
    elif all(vox):
        xyz = None
        zyx = _numbers(frame[vox], path)[:, ::-1].copy()
    else:
        raise ValueError(f"{path}: a CSV of points needs columns x_mm,y_mm,z_mm (patient LPS mm) "
                         f"or x,y,z (voxel column,row,slice); found {list(frame.columns)}. "
                         f"Accepted: {ACCEPTED_FORMATS}")
    _check_inside(zyx, scan, path, "point(s)")
    if "diameter_mm" in lower:
        diameters = _numbers(frame[[lower["diameter_mm"]]], path, allow_nan=True)[:, 0]
    else:
        diameters = np.full(len(frame), np.nan)
    table = _points_table(zyx, scan, diameters)
    if xyz is not None:
        table[["x_mm", "y_mm", "z_mm"]] = xyz
    for extra in ("label", "name"):
        if extra in lower:
            table[extra] = frame[lower[extra]].to_numpy()
    return AnnotationPoints(table, None, "points_csv", notes)


def _xml_root(path: Path) -> str:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ValueError(f"{path}: not a readable XML file ({exc}); accepted: "
                         f"{ACCEPTED_FORMATS}") from exc
    return root.tag.split("}")[-1]


def read_annotation_points(
    path: str | os.PathLike, scan: CTScan, consensus_fraction: float = 0.5
) -> AnnotationPoints:
    """Read the nodules of an annotation file into ``scan``'s voxel grid.

    The kind is told by the file itself (see the module docstring): an ``.xml`` by its root
    element (``LidcReadMessage``: LIDC; ``annotation``: PASCAL VOC), a folder as a folder of VOC
    files, a ``.csv`` by its header (LUNA16's columns, else a CSV of points).

    Parameters
    ----------
    path : path-like
        The annotation file, or a folder of VOC box files (Lung-PET-CT-Dx's
        ``Annotation/<patient>/``).
    scan : CTScan
        The scan to place the nodules in (from :func:`lunglib.load_scan`): a DICOM series, or for
        LIDC XML, LUNA16 and point CSVs also a NIfTI/NRRD/MetaImage volume.
    consensus_fraction : float, default 0.5
        LIDC only: a voxel belongs to a nodule's outline when at least this fraction of the
        readers who outlined the nodule included it (as ``LIDCDataset``).

    Returns
    -------
    AnnotationPoints
        The table of nodules (voxel and mm centres, size), the label volume where the format
        has an extent, the kind, and notes on what was left out.

    Notes
    -----
    * LIDC: only nodules >= 3 mm (outlined) are read; nodules < 3 mm and non-nodules are single
      points without ratings. Centres are the centroids of the consensus masks and
      ``diameter_mm`` the diameter of the sphere of their volume -- the masks, numbers and
      ratings are those of :class:`~lunglib.datasets.lidc.LIDCDataset`. Outlines on slices the
      scan lacks are left out with a note.
    * VOC: every box lies on the slice its file is named after. Boxes on adjacent slices that
      overlap in-plane form one tumour (connected components of the filled boxes). The centre is
      the centroid of the tumour's boxed voxels; ``diameter_mm`` is NaN, because a box bounds a
      tumour without outlining it, and ``box_long_side_mm`` gives the longest in-plane box side
      instead.
    * LUNA16: rows whose ``seriesuid`` is the scan's series uid, or for a scan read from a
      volume file, the file's name without its ending (LUNA16 names its ``.mhd`` files so).
    * Point CSVs: ``x_mm,y_mm,z_mm`` win over ``x,y,z`` when a file has both (as the table this
      function returns does, written with ``to_csv``).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        Naming the file: a format not listed above (the message lists those accepted), a file
        that cannot be read as its kind, no rows for this scan, points outside the volume, VOC
        boxes with a scan that has no SOPInstanceUIDs.
    """
    import pandas as pd

    if not 0 < consensus_fraction <= 1:
        raise ValueError(f"consensus_fraction must be in (0, 1], got {consensus_fraction}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such annotation file or folder")
    if path.is_dir():
        if not any(path.glob("*.xml")):
            raise ValueError(f"{path}: a folder without .xml box files; accepted: "
                             f"{ACCEPTED_FORMATS}")
        return _voc(path, scan)
    suffix = path.suffix.lower()
    if suffix == ".xml":
        root = _xml_root(path)
        if root == "LidcReadMessage":
            return _lidc(path, scan, consensus_fraction)
        if root == "annotation":
            return _voc(path, scan)
        raise ValueError(f"{path}: XML with root element {root}, neither an LIDC read "
                         f"(LidcReadMessage) nor PASCAL VOC (annotation); accepted: "
                         f"{ACCEPTED_FORMATS}")
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype={"seriesuid": str}, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a readable CSV file ({exc})") from exc
        frame.columns = [str(c).strip() for c in frame.columns]
        if all(c in frame.columns for c in ANNOTATION_COLUMNS):
            return _luna16(path, frame, scan)
        return _points(path, frame, scan)
    raise ValueError(f"{path}: not an annotation file lunglib reads; accepted: {ACCEPTED_FORMATS}")


__all__ = [
    "ACCEPTED_FORMATS",
    "KINDS",
    "POSITION_COLUMNS",
    "AnnotationPoints",
    "label_centres",
    "parse_point",
    "read_annotation_points",
]
