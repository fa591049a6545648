"""Reading a chest CT from a folder of DICOM files, with its geometry right.

The three things students most often get wrong, and that this module gets right:

* **Slice order** comes from ``ImagePositionPatient`` projected on the slice normal
  (the cross product of the two ``ImageOrientationPatient`` direction cosines) -- never from file
  names, and not from ``InstanceNumber``, which some scanners number head-to-feet and others
  feet-to-head.
* **Slice spacing** comes from the distance between those positions. ``SliceThickness`` is the
  thickness of the reconstructed slab, which may differ from the step between slices.
* **Hounsfield units** come from ``RescaleSlope`` and ``RescaleIntercept``; values outside the
  scanner's field of view (``PixelPaddingValue``, the ``-2000`` style) become air.

Nothing that identifies the patient is kept: a :class:`CTScan` holds a pseudonymous key (a
salted hash of the DICOM PatientID) and a de-identified metadata view.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from lunglib.qc import QCFinding

AIR_HU = -1000
LOWEST_CT_HU = -1024
# Files that sit beside DICOM images in public datasets and are not images.
_NON_DICOM_SUFFIXES = {".xml", ".csv", ".txt", ".json", ".md", ".html", ".pdf", ".png", ".jpg"}
# Tags that stay in the de-identified view: acquisition facts a student needs, nothing personal.
_METADATA_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "KVP",
    "SliceThickness",
    "SeriesDescription",
    "BodyPartExamined",
    "Rows",
    "Columns",
)
_PSEUDONYM_SALT = os.environ.get("LUNGLIB_PSEUDONYM_SALT", "lunglib")
_DECODER_HINTS = {
    "JPEG 2000": "pip install pylibjpeg pylibjpeg-openjpeg",
    "JPEG-LS": "pip install pyjpegls",
    "JPEG": "pip install pylibjpeg pylibjpeg-libjpeg",
    "RLE": "pip install pylibjpeg pylibjpeg-rle",
}


class DicomLoadError(ValueError):
    """A DICOM folder or file could not be turned into a CT volume; the message says why."""


@dataclass
class SeriesInfo:
    """What :func:`list_series` found for one series (no patient identifiers)."""

    series_uid: str
    description: str
    modality: str
    n_images: int
    rows: int
    columns: int
    axial: bool
    convolution_kernel: str = ""

    def __str__(self) -> str:
        kind = "axial" if self.axial else "non-axial"
        return (
            f"{self.modality} {kind} series '{self.description}' ({self.n_images} images, "
            f"{self.rows}x{self.columns}, kernel {self.convolution_kernel or '?'}) "
            f"uid {self.series_uid}"
        )


@dataclass
class CTScan:
    """One CT series as a Hounsfield-unit volume with its geometry.

    Attributes
    ----------
    hu : ndarray of int16, shape (z, y, x)
        Hounsfield units; z runs along the slice normal, in increasing position.
    spacing : tuple of float
        Voxel size in mm, (z, y, x). The z spacing is measured from slice positions.
    origin : tuple of float
        Patient-coordinate (x, y, z) position in mm of voxel (0, 0, 0), DICOM LPS convention.
    direction : ndarray, shape (3, 3)
        Columns are the patient-coordinate directions of the x (column), y (row) and z (slice)
        index axes -- the same convention as SimpleITK's ``GetDirection``.
    series_uid : str
        SeriesInstanceUID of the series that was loaded.
    patient_key : str
        Pseudonymous, stable key derived from the PatientID by a salted hash.
    slice_uids : list of str
        SOPInstanceUID of each z slice (empty string for slices lunglib had to fill in).
    qc : list of QCFinding
        What was found and repaired while loading.
    metadata : dict
        A de-identified view of acquisition facts (modality, kernel, thickness, ...).
    source : str
        The folder or file the scan came from.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    series_uid: str
    patient_key: str
    slice_uids: list[str] = field(default_factory=list)
    qc: list[QCFinding] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def describe(self) -> dict[str, object]:
        """De-identified summary, safe to print, log or save."""
        return {
            "patient_key": self.patient_key,
            "shape_zyx": self.shape,
            "spacing_zyx_mm": tuple(round(s, 4) for s in self.spacing),
            "extent_zyx_mm": tuple(round(n * s, 1) for n, s in zip(self.shape, self.spacing)),
            **self.metadata,
            "qc": [str(f) for f in self.qc if f.severity != "info"] or "ok",
        }

    def __repr__(self) -> str:
        return (
            f"CTScan(patient_key={self.patient_key!r}, shape={self.shape}, "
            f"spacing={tuple(round(s, 3) for s in self.spacing)}, qc={len(self.qc)} findings)"
        )

    def world_to_voxel(self, xyz_mm: Sequence[float]) -> np.ndarray:
        """Patient (x, y, z) mm to fractional voxel index (z, y, x)."""
        offset = np.asarray(xyz_mm, dtype=float) - np.asarray(self.origin)
        ijk = np.linalg.solve(self.direction * np.asarray(self.spacing[::-1]), offset)
        return ijk[::-1]

    def voxel_to_world(self, zyx: Sequence[float]) -> np.ndarray:
        """Fractional voxel index (z, y, x) to patient (x, y, z) mm."""
        ijk = np.asarray(zyx, dtype=float)[::-1]
        return np.asarray(self.origin) + (self.direction * np.asarray(self.spacing[::-1])) @ ijk

    def to_sitk(self):
        """The volume as a SimpleITK image with the same geometry."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.hu)
        image.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(d) for d in self.direction.ravel()))
        return image


def pseudonymize(patient_id: str) -> str:
    """Stable pseudonymous key for a patient identifier (salted SHA-256, 10 hex digits)."""
    digest = hashlib.sha256(f"{_PSEUDONYM_SALT}:{patient_id}".encode()).hexdigest()
    return f"pt-{digest[:10]}"


# --------------------------------------------------------------------------------------------
# Reading headers


@dataclass
class _Header:
    path: Path
    ds: Dataset


def _candidate_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return [p for p in files if p.suffix.lower() not in _NON_DICOM_SUFFIXES]


def _read_header(path: Path) -> _Header | QCFinding:
    try:
        # defer_size keeps pixel data on disk until the chosen series needs it.
        ds = pydicom.dcmread(path, defer_size="2 KB")
    except InvalidDicomError:
        return QCFinding("not_dicom", "not a DICOM file; ignored", "info", str(path))
    except Exception as exc:  # truncated or corrupt files raise many kinds of errors
        return QCFinding(
            "unreadable_file", f"could not be read ({type(exc).__name__}: {exc}); skipped",
            "warning", str(path),
        )
    if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
        return QCFinding("not_dicom", "no DICOM image header; ignored", "info", str(path))
    return _Header(path, ds)


def _read_headers(path: Path) -> tuple[list[_Header], list[QCFinding]]:
    path = Path(path)
    if not path.exists():
        raise DicomLoadError(f"{path}: no such file or folder")
    files = _candidate_files(path)
    if not files:
        raise DicomLoadError(
            f"{path}: the folder is empty (no files besides annotations); "
            "point load_scan at the folder that holds one patient's .dcm files"
        )
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        results = list(pool.map(_read_header, files))
    headers = [r for r in results if isinstance(r, _Header)]
    findings = [r for r in results if isinstance(r, QCFinding)]
    if not headers:
        unreadable = [f for f in findings if f.code == "unreadable_file"]
        reason = unreadable[0].message if unreadable else "none of them is a DICOM file"
        raise DicomLoadError(
            f"{path}: no readable DICOM files among {len(files)} file(s) "
            f"(first: {files[0].name}: {reason})"
        )
    return headers, findings


def _normal(ds: Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else None


def _is_axial(ds: Dataset) -> bool:
    n = _normal(ds)
    return n is not None and abs(n[2]) > 0.9


def _is_localizer(ds: Dataset) -> bool:
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    return "LOCALIZER" in image_type


def _group_by_series(headers: list[_Header]) -> dict[str, list[_Header]]:
    groups: dict[str, list[_Header]] = {}
    for h in headers:
        groups.setdefault(str(h.ds.get("SeriesInstanceUID", "unknown")), []).append(h)
    return groups


def _series_info(uid: str, members: list[_Header]) -> SeriesInfo:
    ds = members[0].ds
    return SeriesInfo(
        series_uid=uid,
        description=str(ds.get("SeriesDescription", "")),
        modality=str(ds.get("Modality", "")),
        n_images=len(members),
        rows=int(ds.get("Rows", 0)),
        columns=int(ds.get("Columns", 0)),
        axial=_is_axial(ds),
        convolution_kernel=str(ds.get("ConvolutionKernel", "")),
    )


def list_series(path: str | os.PathLike) -> list[SeriesInfo]:
    """List every image series in a folder (recursively), largest first.

    Parameters
    ----------
    path : path-like
        A folder of DICOM files (any depth), or one file.

    Returns
    -------
    list of SeriesInfo
    """
    headers, _ = _read_headers(Path(path))
    infos = [_series_info(uid, members) for uid, members in _group_by_series(headers).items()]
    return sorted(infos, key=lambda s: (-s.n_images, s.series_uid))


def _choose_series(
    path: Path,
    groups: dict[str, list[_Header]],
    series_uid: str | None,
    series_description: str | None,
) -> str:
    infos = {uid: _series_info(uid, m) for uid, m in groups.items()}
    listing = "\n  ".join(str(i) for i in sorted(infos.values(), key=lambda s: -s.n_images))
    if series_uid is not None:
        if series_uid not in groups:
            raise DicomLoadError(f"{path}: no series with uid {series_uid}; found:\n  {listing}")
        return series_uid
    if series_description is not None:
        wanted = series_description.lower()
        hits = [u for u, i in infos.items() if wanted in i.description.lower()]
        if len(hits) != 1:
            what = "no series" if not hits else f"{len(hits)} series"
            raise DicomLoadError(
                f"{path}: {what} with a description containing '{series_description}'; "
                f"found:\n  {listing}\nchoose one by series_uid"
            )
        return hits[0]
    ct_axial = [u for u, i in infos.items() if i.modality == "CT" and i.axial]
    if not ct_axial:
        modalities = sorted({i.modality or "?" for i in infos.values()})
        if all(i.modality != "CT" for i in infos.values()):
            raise DicomLoadError(
                f"{path}: no CT series here (modalities found: {', '.join(modalities)}); "
                f"lunglib reads CT. Found:\n  {listing}"
            )
        raise DicomLoadError(
            f"{path}: no axial CT series (only reformats or localizers); "
            f"choose one explicitly by series_uid. Found:\n  {listing}"
        )
    return max(ct_axial, key=lambda u: (infos[u].n_images, u))


# --------------------------------------------------------------------------------------------
# Pixels and geometry


def _decoder_hint(ds: Dataset) -> str:
    name = str(getattr(ds.file_meta, "TransferSyntaxUID", "unknown"))
    try:
        name = ds.file_meta.TransferSyntaxUID.name
    except AttributeError:
        pass
    for key, hint in _DECODER_HINTS.items():
        if key.lower() in name.lower():
            return f"the pixel data is compressed as {name}; install a decoder: {hint}"
    return f"the pixel data uses transfer syntax {name}, which no installed decoder handles"


def _slice_hu(h: _Header) -> tuple[np.ndarray, list[QCFinding]]:
    """Decode one file to HU (float32), with padding set to air."""
    ds = h.ds
    findings: list[QCFinding] = []
    if "PixelData" not in ds:
        raise DicomLoadError(f"{h.path}: the file has no pixel data (PixelData element missing)")
    try:
        raw = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        if ds.file_meta.get("TransferSyntaxUID") and ds.file_meta.TransferSyntaxUID.is_compressed:
            raise DicomLoadError(f"{h.path}: {_decoder_hint(ds)}") from exc
        raise DicomLoadError(f"{h.path}: pixel data could not be decoded ({exc})") from exc
    except Exception as exc:  # truncated pixel data and friends
        raise DicomLoadError(f"{h.path}: pixel data is damaged or truncated ({exc})") from exc
    if raw.ndim != 2:
        raise DicomLoadError(f"{h.path}: expected one 2D image per file, got shape {raw.shape}")
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    if slope is None or intercept is None:
        findings.append(
            QCFinding(
                "missing_rescale",
                "RescaleSlope/RescaleIntercept absent; assumed slope 1 and intercept 0 "
                "(if air reads near 0 instead of -1000, the stored values are unsigned)",
                "warning",
                str(h.path),
            )
        )
    slope = float(slope) if slope is not None else 1.0
    intercept = float(intercept) if intercept is not None else 0.0
    padding = np.zeros(raw.shape, dtype=bool)
    pad_value = ds.get("PixelPaddingValue")
    if pad_value is not None:
        pad_limit = ds.get("PixelPaddingRangeLimit")
        if pad_limit is None:
            padding |= raw == pad_value
        else:
            lo, hi = sorted((int(pad_value), int(pad_limit)))
            padding |= (raw >= lo) & (raw <= hi)
    hu = raw.astype(np.float32) * slope + intercept
    padding |= hu < LOWEST_CT_HU  # outside the reconstruction circle
    hu[padding] = AIR_HU
    return hu, findings


def _positions(headers: list[_Header], normal: np.ndarray) -> np.ndarray:
    return np.array([float(np.dot(np.asarray(h.ds.ImagePositionPatient, float), normal))
                     for h in headers])


def _fill_to_uniform_grid(
    stack: np.ndarray, z: np.ndarray, step: float
) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate slices onto a uniform z grid with the given step."""
    n = int(round((z[-1] - z[0]) / step)) + 1
    grid = z[0] + step * np.arange(n)
    upper = np.clip(np.searchsorted(z, grid, side="left"), 1, len(z) - 1)
    lower = upper - 1
    weight = ((grid - z[lower]) / (z[upper] - z[lower])).astype(np.float32)[:, None, None]
    return stack[lower] * (1 - weight) + stack[upper] * weight, grid


def load_scan(
    path: str | os.PathLike,
    series_uid: str | None = None,
    series_description: str | None = None,
    allow_single_slice: bool = False,
    spacing_tolerance: float = 0.01,
) -> CTScan:
    """Load one patient's CT series from a folder of DICOM files.

    Parameters
    ----------
    path : path-like
        Folder holding the patient's DICOM files (searched recursively), or a single file.
    series_uid : str, optional
        Load this SeriesInstanceUID. By default the axial CT series with the most images.
    series_description : str, optional
        Load the one series whose SeriesDescription contains this text (case-insensitive).
    allow_single_slice : bool, default False
        Accept a series of one image (a volume of depth 1, z spacing from SliceThickness).
    spacing_tolerance : float, default 0.01
        Relative deviation of a slice step from the median step above which spacing counts as
        uneven.

    Returns
    -------
    CTScan

    Raises
    ------
    DicomLoadError
        When no usable CT volume can be read; the message names the file and the reason.
    """
    path = Path(path)
    headers, findings = _read_headers(path)
    groups = _group_by_series(headers)
    uid = _choose_series(path, groups, series_uid, series_description)
    if len(groups) > 1:
        others = len(groups) - 1
        findings.append(QCFinding(
            "several_series", f"{others} other series in the folder; loaded {uid} "
            "(see list_series)", "info"))
    members = groups[uid]
    localizers = [h for h in members if _is_localizer(h.ds)]
    if localizers and len(localizers) < len(members):
        members = [h for h in members if not _is_localizer(h.ds)]
        findings.append(QCFinding("localizer_dropped",
                                  f"{len(localizers)} localizer image(s) left out", "info"))
    modality = str(members[0].ds.get("Modality", ""))
    if modality != "CT":
        raise DicomLoadError(
            f"{members[0].path}: modality is '{modality or 'missing'}', not CT; lunglib reads CT"
        )

    sizes = Counter((int(h.ds.get("Rows", 0)), int(h.ds.get("Columns", 0))) for h in members)
    if len(sizes) > 1:
        (common, _), *_ = sizes.most_common()
        odd = next(h for h in members if (h.ds.get("Rows"), h.ds.get("Columns")) != common)
        listing = ", ".join(f"{r}x{c} ({n} files)" for (r, c), n in sizes.most_common())
        raise DicomLoadError(
            f"{odd.path}: image size {odd.ds.get('Rows')}x{odd.ds.get('Columns')} differs from "
            f"the rest of series {uid}: mixed image sizes {listing}"
        )

    first = members[0].ds
    normal = _normal(first)
    if normal is None:
        raise DicomLoadError(
            f"{members[0].path}: ImageOrientationPatient missing or invalid; "
            "slice order and spacing cannot be known"
        )
    missing_position = [h for h in members if "ImagePositionPatient" not in h.ds]
    if missing_position:
        raise DicomLoadError(
            f"{missing_position[0].path}: ImagePositionPatient missing; slice order cannot be "
            "known (file names and InstanceNumber are not reliable)"
        )

    # Decode pixels; a damaged file is skipped and recorded if the rest of the series is fine.
    decoded: list[tuple[_Header, np.ndarray]] = []
    for h in members:
        try:
            hu, slice_findings = _slice_hu(h)
        except DicomLoadError as exc:
            if "install a decoder" in str(exc) or "no pixel data" in str(exc) and len(members) == 1:
                raise
            if "install a decoder" in str(exc):
                raise
            findings.append(QCFinding("unreadable_file", f"{exc}; slice skipped", "warning",
                                      str(h.path)))
            continue
        findings.extend(slice_findings[:1] if not decoded else [])
        decoded.append((h, hu))
    if not decoded:
        raise DicomLoadError(f"{path}: no slice of series {uid} has readable pixel data")

    z = _positions([h for h, _ in decoded], normal)
    order = np.argsort(z, kind="stable")
    decoded = [decoded[i] for i in order]
    z = z[order]

    duplicates = np.flatnonzero(np.isclose(np.diff(z), 0.0, atol=1e-3)) + 1
    if len(duplicates):
        findings.append(QCFinding(
            "duplicate_positions",
            f"{len(duplicates)} slice(s) share a position with another slice; kept the first",
            "warning", str(decoded[duplicates[0]][0].path)))
        keep = np.setdiff1d(np.arange(len(decoded)), duplicates)
        decoded = [decoded[i] for i in keep]
        z = z[keep]

    row_spacing, col_spacing = (float(v) for v in first.get("PixelSpacing", [1.0, 1.0]))
    if "PixelSpacing" not in first:
        findings.append(QCFinding("missing_pixel_spacing",
                                  "PixelSpacing absent; assumed 1 mm", "warning"))
    stack = np.stack([hu for _, hu in decoded])
    slice_uids = [str(h.ds.get("SOPInstanceUID", "")) for h, _ in decoded]

    if len(decoded) == 1:
        if not allow_single_slice:
            raise DicomLoadError(
                f"{decoded[0][0].path}: the series has a single slice; a CT volume needs several "
                "(pass allow_single_slice=True to read it as a one-slice volume)"
            )
        z_spacing = float(first.get("SliceThickness", 1.0) or 1.0)
        findings.append(QCFinding("single_slice", "single-slice series; z spacing taken from "
                                  "SliceThickness", "info"))
    else:
        steps = np.diff(z)
        z_spacing = float(np.median(steps))
        uneven = np.abs(steps - z_spacing) > spacing_tolerance * z_spacing
        if uneven.any():
            gaps = [(float(z[i]), float(z[i + 1])) for i in np.flatnonzero(uneven)]
            ratio = steps[uneven] / z_spacing
            if np.allclose(ratio, np.round(ratio), atol=spacing_tolerance) and (ratio > 1).all():
                code = "missing_slices"
                n_missing = int(np.round(ratio).sum() - len(ratio))
                what = f"{n_missing} slice(s) missing"
            else:
                code = "uneven_spacing"
                what = f"uneven slice spacing (steps {steps.min():.3f} to {steps.max():.3f} mm)"
            where = ", ".join(f"{a:.2f}..{b:.2f} mm" for a, b in gaps[:5])
            stack, z = _fill_to_uniform_grid(stack, z, z_spacing)
            filled = set(np.round(z, 3)) - {round(float(h), 3) for h in _positions(
                [h for h, _ in decoded], normal)}
            uid_by_z = {round(float(zz), 3): u for zz, u in zip(
                _positions([h for h, _ in decoded], normal), slice_uids)}
            slice_uids = [uid_by_z.get(round(float(zz), 3), "") for zz in z]
            findings.append(QCFinding(
                code, f"{what} at {where}; {len(filled)} slice(s) interpolated onto a uniform "
                f"{z_spacing:.3f} mm grid", "warning"))

    origin_ds = decoded[0][0].ds
    origin = np.asarray(origin_ds.ImagePositionPatient, float)
    if len(z) and len(decoded) > 1:
        # After filling, the first grid position equals the first decoded slice's position.
        origin = origin + normal * (z[0] - float(np.dot(origin, normal)))
    iop = np.asarray(first.ImageOrientationPatient, float)
    direction = np.column_stack([iop[:3], iop[3:], normal])
    hu_volume = np.clip(np.rint(stack), -32768, 32767).astype(np.int16)

    patient_id = str(first.get("PatientID", "")) or str(first.get("StudyInstanceUID", uid))
    metadata: dict[str, object] = {}
    for tag in _METADATA_TAGS:
        value = first.get(tag)
        if value is not None and value != "":
            metadata[tag] = value if isinstance(value, (int, float, str)) else str(value)
    metadata["n_files"] = len(members)
    return CTScan(
        hu=hu_volume,
        spacing=(z_spacing, row_spacing, col_spacing),
        origin=tuple(float(o) for o in origin),  # type: ignore[arg-type]
        direction=direction,
        series_uid=uid,
        patient_key=pseudonymize(patient_id),
        slice_uids=slice_uids,
        qc=findings,
        metadata=metadata,
        source=str(path),
    )


def load_scans(paths: Iterable[str | os.PathLike], **kwargs) -> dict[str, CTScan | QCFinding]:
    """Load several scans; a scan that fails becomes an error :class:`QCFinding`, not a crash."""
    out: dict[str, CTScan | QCFinding] = {}
    for p in paths:
        try:
            out[str(p)] = load_scan(p, **kwargs)
        except DicomLoadError as exc:
            out[str(p)] = QCFinding("load_failed", str(exc), "error", str(p))
    return out
