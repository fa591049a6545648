"""LIDC-IDRI readers' XML: outlines and ratings per reading session, grouped into nodules.

Each patient's CT was read by four radiologists in separate *reading sessions*. A session lists
the nodules its reader marked: nodules >= 3 mm with an outline on every slice (``roi`` elements
with ``edgeMap`` points, pixel coordinates, x = column, y = row) and nine characteristic ratings
including ``malignancy`` 1-5; nodules < 3 mm as one point; and non-nodules.

What this module builds from that, without the CT:

* :func:`parse_lidc_xml` -- every session's marks (:class:`ReaderMark`: outlines as
  :class:`Roi`, ratings), with QC findings for unusable ratings or outlines;
* voxel codes -- each outline filled (boundary pixels included, as in the shared patch set;
  ``inclusion=FALSE`` outlines cut holes) and packed as (z, row, column) integers, so marks can
  be intersected before any scan is loaded;
* :func:`group_marks` -- readers' marks grouped into physical nodules (:class:`LidcNodule`) by
  overlap: two marks from different sessions that share a voxel belong to the same nodule; a
  nodule's consensus is the voxels marked by at least a fraction of its readers;
* :func:`nodule_label` -- a nodule's label from its readers' median malignancy.

:mod:`lunglib.datasets.lidc` places these in a loaded scan's voxel grid.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from skimage.draw import polygon as fill_polygon

from lunglib.io.qc import QCFinding

CHARACTERISTICS = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)
# Voxel codes pack (z position in 1/100 mm, row, column) into one int64 so that readers' marks
# can be intersected without the CT: rows and columns are below 4096 in every CT.
_RC_BITS = 12
_Z_SCALE = 100


def _code(z_key: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return (np.int64(z_key) << (2 * _RC_BITS)) + (rows.astype(np.int64) << _RC_BITS) + cols


def decode_codes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unpack voxel codes into (z key, row, column) arrays."""
    z_key = codes >> (2 * _RC_BITS)
    rows = (codes >> _RC_BITS) & ((1 << _RC_BITS) - 1)
    cols = codes & ((1 << _RC_BITS) - 1)
    return z_key, rows, cols


def z_key(z_mm: float) -> int:
    """Slice key of a z position (mm rounded to 1/100 mm)."""
    return int(round(float(z_mm) * _Z_SCALE))


def key_z_mm(key: int) -> float:
    """The z position (mm) a slice key stands for."""
    return key / _Z_SCALE


@dataclass
class Roi:
    """One outline of one reader on one slice."""

    z_position: float
    sop_uid: str
    inclusion: bool
    xy: np.ndarray  # (n, 2) pixel coordinates, x = column, y = row

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the outline's filled area, boundary included."""
        x, y = self.xy[:, 0], self.xy[:, 1]
        rr, cc = fill_polygon(y, x)
        rows = np.concatenate([rr, y]).astype(np.int64)
        cols = np.concatenate([cc, x]).astype(np.int64)
        keep = (rows >= 0) & (cols >= 0)
        return rows[keep], cols[keep]


@dataclass
class ReaderMark:
    """One reader's mark of one nodule (a reading session's ``unblindedReadNodule``)."""

    session: int  # 1-based index of the reading session in the XML
    reader_nodule_id: str
    rois: list[Roi]
    characteristics: dict[str, int] = field(default_factory=dict)
    _codes: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def malignancy(self) -> int | None:
        return self.characteristics.get("malignancy")

    @property
    def is_small(self) -> bool:
        """A nodule < 3 mm: marked by a single point per slice, no outline, no ratings."""
        return all(len(r.xy) <= 1 for r in self.rois)

    def voxel_codes(self) -> np.ndarray:
        """Packed (z, row, col) codes of the voxels inside the outline (holes removed)."""
        if self._codes is None:
            self._codes = self._compute_codes()
        return self._codes

    def _compute_codes(self) -> np.ndarray:
        inside: dict[int, set[int]] = {}
        holes: dict[int, set[int]] = {}
        for roi in self.rois:
            rows, cols = roi.pixels()
            key = z_key(roi.z_position)
            target = inside if roi.inclusion else holes
            target.setdefault(key, set()).update(_code(key, rows, cols).tolist())
        if holes:
            # an exclusion outline removes its interior but its boundary stays part of the nodule
            for roi in self.rois:
                if not roi.inclusion:
                    key = z_key(roi.z_position)
                    x, y = roi.xy[:, 0], roi.xy[:, 1]
                    holes[key] -= set(_code(key, y, x).tolist())
        codes: set[int] = set()
        for key, values in inside.items():
            codes |= values - holes.get(key, set())
        return np.array(sorted(codes), dtype=np.int64)


@dataclass
class LidcRead:
    """A parsed LIDC XML file: the series it annotates and every session's marks."""

    path: Path
    series_uid: str
    study_uid: str
    sessions: list[list[ReaderMark]]
    findings: list[QCFinding] = field(default_factory=list)

    @property
    def marks(self) -> list[ReaderMark]:
        return [m for s in self.sessions for m in s]


def _text(element: ET.Element, tag: str, ns: dict[str, str]) -> str | None:
    child = element.find(tag, ns)
    return child.text.strip() if child is not None and child.text is not None else None


def parse_lidc_xml(path: str | Path) -> LidcRead:
    """Parse one LIDC-IDRI XML file (``LidcReadMessage``).

    Parameters
    ----------
    path : path-like
        The XML file.

    Returns
    -------
    LidcRead

    Raises
    ------
    ValueError
        When the file is not XML, or is not an LIDC CT read (e.g. a chest X-ray
        ``IdriReadMessage``); the message names the file.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ValueError(f"{path}: not a readable XML file ({exc})") from exc
    tag = root.tag.split("}")[-1]
    if tag != "LidcReadMessage":
        raise ValueError(f"{path}: root element is {tag}, not LidcReadMessage (not a CT read)")
    ns = {"l": root.tag[1:].split("}")[0]} if root.tag.startswith("{") else {"l": ""}
    p = "l:" if ns["l"] else ""
    header = root.find(f"{p}ResponseHeader", ns)
    series_uid = (_text(header, f"{p}SeriesInstanceUid", ns) if header is not None else "") or ""
    study_uid = (_text(header, f"{p}StudyInstanceUID", ns) if header is not None else "") or ""
    findings: list[QCFinding] = []
    sessions: list[list[ReaderMark]] = []
    for s_index, session in enumerate(root.findall(f"{p}readingSession", ns), start=1):
        marks = []
        for nodule in session.findall(f"{p}unblindedReadNodule", ns):
            nid = _text(nodule, f"{p}noduleID", ns) or "?"
            chars: dict[str, int] = {}
            char_el = nodule.find(f"{p}characteristics", ns)
            if char_el is not None:
                for name in CHARACTERISTICS:
                    value = _text(char_el, f"{p}{name}", ns)
                    if value:
                        try:
                            chars[name] = int(float(value))
                        except ValueError:
                            findings.append(QCFinding(
                                "bad_rating", f"session {s_index} nodule {nid}: {name}={value!r} "
                                "is not a number; ignored", "warning", str(path)))
            rois = []
            for roi in nodule.findall(f"{p}roi", ns):
                z_text = _text(roi, f"{p}imageZposition", ns)
                points = [
                    (int(float(_text(e, f"{p}xCoord", ns) or "nan")),
                     int(float(_text(e, f"{p}yCoord", ns) or "nan")))
                    for e in roi.findall(f"{p}edgeMap", ns)
                ]
                if z_text is None or not points:
                    findings.append(QCFinding(
                        "empty_roi", f"session {s_index} nodule {nid}: an outline without "
                        "z position or points; ignored", "warning", str(path)))
                    continue
                rois.append(Roi(
                    z_position=float(z_text),
                    sop_uid=_text(roi, f"{p}imageSOP_UID", ns) or "",
                    inclusion=(_text(roi, f"{p}inclusion", ns) or "TRUE").upper() == "TRUE",
                    xy=np.array(points, dtype=np.int64),
                ))
            if rois:
                marks.append(ReaderMark(s_index, nid, rois, chars))
        sessions.append(marks)
    return LidcRead(path, series_uid, study_uid, sessions, findings)


# --------------------------------------------------------------------------------------------
# Grouping readers' marks into nodules


@dataclass
class LidcNodule:
    """One physical nodule >= 3 mm: the marks of the readers who outlined it.

    Attributes
    ----------
    index : int
        1-based number of the nodule in the patient (its value in
        :meth:`~lunglib.datasets.lidc.LIDCDataset.nodule_mask`).
    marks : list of ReaderMark
        One mark per reading session that marked the nodule (rarely two, when a reader split it).
    """

    index: int
    marks: list[ReaderMark]

    @property
    def sessions(self) -> list[int]:
        return sorted({m.session for m in self.marks})

    @property
    def n_readers(self) -> int:
        return len(self.sessions)

    def malignancy_by_session(self, n_sessions: int = 4) -> list[int]:
        """Malignancy rating of each LIDC reader, in reader order (0 = that reader did not mark it).

        LIDC calls each radiologist's read a "reading session"; ``n_sessions`` is how many
        readers to report (four in LIDC-IDRI), more when the XML names more.
        """
        out = [0] * max(n_sessions, max(self.sessions))
        for m in self.marks:
            if m.malignancy is not None and out[m.session - 1] == 0:
                out[m.session - 1] = m.malignancy
        return out

    @property
    def malignancy(self) -> list[int]:
        """The readers' malignancy ratings (1-5), in session order."""
        return [v for v in self.malignancy_by_session() if v]

    @property
    def median_malignancy(self) -> float | None:
        ratings = self.malignancy
        return float(np.median(ratings)) if ratings else None

    def session_codes(self) -> dict[int, np.ndarray]:
        """Voxel codes per session (marks of one session united)."""
        out: dict[int, np.ndarray] = {}
        for m in self.marks:
            codes = m.voxel_codes()
            out[m.session] = np.union1d(out[m.session], codes) if m.session in out else codes
        return out

    def consensus_codes(self, fraction: float = 0.5) -> np.ndarray:
        """Voxels marked by at least ``fraction`` of the readers who marked this nodule."""
        per_session = list(self.session_codes().values())
        values, counts = np.unique(np.concatenate(per_session), return_counts=True)
        return values[counts >= math.ceil(fraction * len(per_session) - 1e-9)]


def nodule_label(
    median_malignancy: float | None, benign_max: float = 2, malignant_min: float = 4
) -> int | None:
    """Nodule label from the readers' median malignancy.

    1 (malignant) when the median is >= ``malignant_min``, 0 (benign) when <= ``benign_max``,
    ``None`` (indeterminate) in between or without ratings.
    """
    if median_malignancy is None:
        return None
    if median_malignancy >= malignant_min:
        return 1
    if median_malignancy <= benign_max:
        return 0
    return None


def group_marks(marks: list[ReaderMark]) -> list[LidcNodule]:
    """Group readers' outlines (nodules >= 3 mm) into physical nodules by overlap.

    Two marks from different reading sessions that share at least one voxel are the same
    nodule; groups are closed transitively. Nodules are numbered from the top of the scan
    (highest z position first, as the slices are read), then by row and column.
    """
    big = [m for m in marks if not m.is_small]
    codes = [m.voxel_codes() for m in big]
    parent = list(range(len(big)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(big)):
        for j in range(i + 1, len(big)):
            if big[i].session != big[j].session and np.intersect1d(
                codes[i], codes[j], assume_unique=True
            ).size:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(big)):
        groups.setdefault(find(i), []).append(i)

    def centre(members: list[int]) -> tuple[float, float, float]:
        z, r, c = decode_codes(np.concatenate([codes[i] for i in members]))
        return (-float(z.mean()), float(r.mean()), float(c.mean()))

    ordered = sorted(groups.values(), key=centre)
    return [
        LidcNodule(k, sorted((big[i] for i in members), key=lambda m: m.session))
        for k, members in enumerate(ordered, start=1)
    ]
