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

What is wrong with an input is either an error that names the file and the reason
(:class:`DicomLoadError`), or -- when the rest of the series is fine -- a recorded
:class:`~lunglib.io.qc.QCFinding` in ``CTScan.qc``:

=============================================  ===================================================
input                                          outcome
=============================================  ===================================================
empty folder, no DICOM file, non-CT modality   ``DicomLoadError``
compressed pixel data, no decoder installed    ``DicomLoadError`` naming the ``pip install``
one file unreadable, truncated, no pixel data  slice skipped, ``unreadable_file`` /
                                               ``missing_pixel_data`` finding
every file unreadable or without pixel data    ``DicomLoadError`` naming a file
the same position twice, identical pixels      copy dropped, ``duplicate_positions`` finding
the same position twice, different pixels      ``DicomLoadError`` naming both files
missing slices, uneven spacing                 filled by linear interpolation onto a uniform grid
                                               spanning the same extent, ``missing_slices`` /
                                               ``uneven_spacing`` finding that states the gap
no RescaleSlope/RescaleIntercept               slope 1, intercept 0, ``missing_rescale`` finding
a single slice                                 ``DicomLoadError`` unless ``allow_single_slice``
mixed image sizes or orientations              ``DicomLoadError`` naming an odd file
=============================================  ===================================================

Nothing that identifies the patient is kept: a :class:`CTScan` holds a pseudonymous key (a
salted hash of the DICOM PatientID) and a de-identified metadata view.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder, pixel_array

from lunglib.io.qc import QCFinding

AIR_HU = -1000
_T = TypeVar("_T")
_R = TypeVar("_R")
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
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "Rows",
    "Columns",
)
_PSEUDONYM_SALT = os.environ.get("LUNGLIB_PSEUDONYM_SALT", "lunglib")
# pip packages that give pydicom a decoder for each family of compressed transfer syntaxes.
_DECODER_PACKAGES: tuple[tuple[Sequence[str], str], ...] = (
    (pydicom.uid.JPEG2000TransferSyntaxes, "pylibjpeg pylibjpeg-openjpeg"),
    (pydicom.uid.JPEGLSTransferSyntaxes, "pyjpegls"),
    (pydicom.uid.JPEGTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg"),
    (pydicom.uid.RLETransferSyntaxes, "pylibjpeg pylibjpeg-rle"),
)
_SAME_POSITION_MM = 0.01
_NATIVE_LITTLE_ENDIAN = (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian)
# pydicom's parsing holds the GIL: on local disks (or files in the page cache) a thread pool
# costs more than it overlaps (benchmarks/bench_load.py: 1.7x the floor's wall time with two
# threads, 1.1x with one), so one thread is the default; slow network storage may gain from more.
_READ_WORKERS = 1
_READ_WHOLE_LIMIT = 2 * 1024**3


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
    series_number: int | None = None

    def __str__(self) -> str:
        kind = "axial" if self.axial else "non-axial"
        number = f"#{self.series_number} " if self.series_number is not None else ""
        return (
            f"{self.modality} {kind} series {number}'{self.description}' ({self.n_images} images, "
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
        extent = np.asarray(self.shape) * np.asarray(self.spacing)
        return {
            "patient_key": self.patient_key,
            "shape_zyx": self.shape,
            "spacing_zyx_mm": tuple(round(s, 4) for s in self.spacing),
            "extent_zyx_mm": tuple(round(float(e), 1) for e in extent),
            **self.metadata,
            "qc": [str(f) for f in self.qc if f.severity != "info"] or "ok",
        }

    def __repr__(self) -> str:
        return (
            f"CTScan(patient_key={self.patient_key!r}, shape={self.shape}, "
            f"spacing={tuple(round(s, 3) for s in self.spacing)}, qc={len(self.qc)} findings)"
        )

    def _index_to_world(self) -> np.ndarray:
        # Maps an (x, y, z) index vector to a patient-coordinate offset in mm.
        return np.asarray(self.direction, float) * np.asarray(self.spacing[::-1], float)

    def world_to_voxel(self, xyz_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """Patient (x, y, z) mm to fractional voxel index (z, y, x).

        Accepts one point of shape (3,) or an array of points of shape (n, 3).
        """
        offset = np.asarray(xyz_mm, dtype=float) - np.asarray(self.origin, float)
        ijk = np.linalg.solve(self._index_to_world(), offset.T).T
        return ijk[..., ::-1]

    def voxel_to_world(self, zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        """Fractional voxel index (z, y, x) to patient (x, y, z) mm.

        Accepts one index of shape (3,) or an array of indices of shape (n, 3).
        """
        ijk = np.asarray(zyx, dtype=float)[..., ::-1]
        return np.asarray(self.origin, float) + ijk @ self._index_to_world().T

    def to_sitk(self):
        """The volume as a SimpleITK image with the same geometry."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.hu)
        image.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(d) for d in np.asarray(self.direction).ravel()))
        return image


def pseudonymize(patient_id: str) -> str:
    """Stable pseudonymous key for a patient identifier (salted SHA-256, 10 hex digits)."""
    digest = hashlib.sha256(f"{_PSEUDONYM_SALT}:{patient_id}".encode()).hexdigest()
    return f"pt-{digest[:10]}"


# --------------------------------------------------------------------------------------------
# Reading headers


@dataclass
class _Header:
    """One file's dataset plus the header values every step needs, converted once."""

    path: Path
    ds: Dataset
    series_uid: str
    sop_uid: str
    size: tuple[int, int]
    orientation: tuple[float, ...] | None
    position: tuple[float, ...] | None
    localizer: bool

    @classmethod
    def from_dataset(cls, path: Path, ds: Dataset) -> _Header:
        iop = _decimals(ds, "ImageOrientationPatient")
        ipp = _decimals(ds, "ImagePositionPatient")
        return cls(
            path=path,
            ds=ds,
            series_uid=_uid(ds, "SeriesInstanceUID"),
            sop_uid=_uid(ds, "SOPInstanceUID"),
            size=(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
            orientation=iop if iop is not None and len(iop) == 6 else None,
            position=ipp if ipp is not None and len(ipp) == 3 else None,
            localizer="LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])],
        )


def _decimals(ds: Dataset, keyword: str) -> tuple[float, ...] | None:
    """A DS (decimal string) element as floats, or None when absent or empty.

    Reads the raw ``b"1.0\\0.0\\..."`` bytes when pydicom has not converted them yet: building
    its validated ``DSfloat`` objects costs more than reading the file, for every file.
    """
    elem = ds.get_item(keyword)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return tuple(float(v) for v in value.split(b"\\")) if value.strip() else None
    if value is None or value == "":
        return None
    values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    return tuple(float(v) for v in values)


def _uid(ds: Dataset, keyword: str) -> str:
    """A UI element as text ("" when absent), skipping pydicom's per-value UID validation."""
    elem = ds.get_item(keyword)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    return value.decode("ascii").rstrip("\0 ") if isinstance(value, bytes) else str(value)


def _candidate_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [
        p for p in sorted(path.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]
    return [p for p in files if p.suffix.lower() not in _NON_DICOM_SUFFIXES]


def _read_header(path: Path, pixels: str) -> _Header | QCFinding:
    try:
        if pixels == "read":
            ds = pydicom.dcmread(path)
        elif pixels == "defer":  # pixel bytes stay on disk until the chosen series decodes them
            ds = pydicom.dcmread(path, defer_size="16 KB")
        else:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return QCFinding("not_dicom", "not a DICOM file; ignored", "info", str(path))
    except Exception as exc:  # truncated or corrupt headers raise many kinds of errors
        return QCFinding(
            "unreadable_file", f"could not be read ({_short(exc)}); skipped", "warning", str(path)
        )
    if "SeriesInstanceUID" not in ds:
        sop_class = getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
        if "PixelData" in ds or "Image Storage" in getattr(sop_class, "name", ""):
            return QCFinding(
                "unreadable_file", "an image file without SeriesInstanceUID (truncated "
                "header?); skipped", "warning", str(path))
        return QCFinding("not_dicom", "no DICOM image header; ignored", "info", str(path))
    try:
        return _Header.from_dataset(path, ds)
    except Exception as exc:  # a malformed value in one of the tags above
        return QCFinding("unreadable_file", f"invalid header value ({_short(exc)}); skipped",
                         "warning", str(path))


def _read_headers(
    path: Path, with_pixels: bool = True, workers: int | None = None
) -> tuple[list[_Header], list[QCFinding]]:
    """Read every candidate file's header (and, if ``with_pixels``, its pixel bytes).

    Reading each file once, whole, is the fastest; for folders larger than
    ``_READ_WHOLE_LIMIT`` bytes the pixel bytes are left on disk (deferred) instead, so that
    the series that are not loaded never sit in memory.
    """
    path = Path(path)
    if not path.exists():
        raise DicomLoadError(f"{path}: no such file or folder")
    files = _candidate_files(path)
    if not files:
        raise DicomLoadError(
            f"{path}: the folder is empty (no files besides annotations); "
            "point load_scan at the folder that holds one patient's .dcm files"
        )
    pixels = "skip"
    if with_pixels:
        pixels = "read" if sum(p.stat().st_size for p in files) <= _READ_WHOLE_LIMIT else "defer"
    results = _map(lambda p: _read_header(p, pixels), files, workers)
    headers = [r for r in results if isinstance(r, _Header)]
    findings = [r for r in results if isinstance(r, QCFinding)]
    if not headers:
        unreadable = [f for f in findings if f.code == "unreadable_file"]
        first = unreadable[0] if unreadable else findings[0]
        raise DicomLoadError(
            f"{path}: no readable DICOM image among {len(files)} file(s) "
            f"(first: {Path(first.file or '').name}: {first.message})"
        )
    return headers, findings


def _map(fn: Callable[[_T], _R], items: Iterable[_T], workers: int | None) -> list[_R]:
    """``list(map(fn, items))`` on a thread pool, or in this thread when ``workers`` is 1."""
    workers = workers or _READ_WORKERS
    if workers == 1:
        return list(map(fn, items))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _normal(iop: Sequence[float] | None) -> np.ndarray | None:
    if iop is None:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else None


def _is_axial(h: _Header) -> bool:
    n = _normal(h.orientation)
    return n is not None and abs(n[2]) > 0.9


def _group_by_series(headers: list[_Header]) -> dict[str, list[_Header]]:
    groups: dict[str, list[_Header]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    return groups


def _series_info(uid: str, members: list[_Header]) -> SeriesInfo:
    ds = members[0].ds
    number = ds.get("SeriesNumber")
    return SeriesInfo(
        series_uid=uid,
        description=str(ds.get("SeriesDescription", "")),
        modality=str(ds.get("Modality", "")),
        n_images=len(members),
        rows=members[0].size[0],
        columns=members[0].size[1],
        axial=_is_axial(members[0]),
        convolution_kernel=str(ds.get("ConvolutionKernel", "") or ""),
        series_number=int(number) if number not in (None, "") else None,
    )


def _preference(info: SeriesInfo) -> tuple:
    """Sort key of the default choice: most images, then lowest SeriesNumber, then uid."""
    number = info.series_number if info.series_number is not None else 2**31
    return (-info.n_images, number, info.series_uid)


def list_series(path: str | os.PathLike) -> list[SeriesInfo]:
    """List every image series in a folder (recursively), the default choice first.

    Parameters
    ----------
    path : path-like
        A folder of DICOM files (any depth), or one file.

    Returns
    -------
    list of SeriesInfo
        Sorted by the order :func:`load_scan` prefers (most images first). Holds no patient
        identifiers, so it is safe to print.
    """
    headers, _ = _read_headers(Path(path), with_pixels=False)
    infos = [_series_info(uid, members) for uid, members in _group_by_series(headers).items()]
    return sorted(infos, key=_preference)


def _choose_series(
    path: Path,
    groups: dict[str, list[_Header]],
    series_uid: str | None,
    series_description: str | None,
) -> tuple[str, list[SeriesInfo]]:
    infos = sorted((_series_info(uid, m) for uid, m in groups.items()), key=_preference)
    listing = "\n  ".join(str(i) for i in infos)
    if series_uid is not None:
        if series_uid not in groups:
            raise DicomLoadError(f"{path}: no series with uid {series_uid}; found:\n  {listing}")
        return series_uid, infos
    if series_description is not None:
        wanted = series_description.lower()
        hits = [i.series_uid for i in infos if wanted in i.description.lower()]
        if len(hits) != 1:
            what = "no series" if not hits else f"{len(hits)} series"
            raise DicomLoadError(
                f"{path}: {what} with a description containing '{series_description}'; "
                f"found:\n  {listing}\nchoose one by series_uid"
            )
        return hits[0], infos
    ct_axial = [i for i in infos if i.modality == "CT" and i.axial]
    if not ct_axial:
        if all(i.modality != "CT" for i in infos):
            modalities = sorted({i.modality or "missing" for i in infos})
            example = groups[infos[0].series_uid][0].path
            raise DicomLoadError(
                f"{path}: no CT series here (modality {', '.join(modalities)}, e.g. "
                f"{example.name}); lunglib reads CT. Found:\n  {listing}"
            )
        raise DicomLoadError(
            f"{path}: no axial CT series (only reformats or localizers); "
            f"choose one explicitly by series_uid. Found:\n  {listing}"
        )
    return ct_axial[0].series_uid, infos


# --------------------------------------------------------------------------------------------
# Pixels


class _SkipSlice(Exception):
    """One file of the series cannot be used; the rest may still be fine."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _transfer_syntax(ds: Dataset) -> pydicom.uid.UID | None:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return pydicom.uid.UID(str(uid)) if uid else None


def _install_hint(syntax: pydicom.uid.UID) -> str:
    for family, packages in _DECODER_PACKAGES:
        if syntax in family:
            return f"pip install {packages}"
    return "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls"


def _check_decoder(h: _Header) -> None:
    """Raise at once when the series is compressed and pydicom has no decoder for it."""
    syntax = _transfer_syntax(h.ds)
    if syntax is None or not syntax.is_compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise DicomLoadError(
            f"{h.path}: the pixel data is compressed as {syntax.name} and no installed "
            f"decoder reads it; install one: {_install_hint(syntax)}"
        )


def _padding_range(ds: Dataset, raw: np.ndarray) -> tuple[int, int] | None:
    """Stored values marking padding (PixelPaddingValue [.. PixelPaddingRangeLimit]), if any."""
    values = [ds.get("PixelPaddingValue"), ds.get("PixelPaddingRangeLimit")]
    values = [int(v) for v in values if isinstance(v, int)]
    if not values:
        return None
    if raw.dtype.kind == "i":
        # Often written as US even when pixels are signed: 63536 stands for -2000.
        bits = raw.dtype.itemsize * 8
        values = [v - 2**bits if v >= 2 ** (bits - 1) else v for v in values]
    return min(values), max(values)


def _little_endian_us(ds: Dataset, tag: int) -> int | None:
    """A one-value US element of a little-endian dataset as an int (None when absent), read
    from its raw bytes when pydicom has not converted it yet (as ``_decimals`` does)."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return int.from_bytes(value[:2], "little") if len(value) >= 2 else None
    return value if isinstance(value, int) else None


def _native_pixels(
    ds: Dataset, syntax: pydicom.uid.UID, shape: tuple[int, ...]
) -> np.ndarray | None:
    """The pixel bytes of a plain 16-bit little-endian image as a read-only array, or None.

    This is what ``pixel_array(ds, view_only=True)`` returns for the layout almost every CT
    is stored in: one frame, one sample, all 16 allocated bits used. pydicom first gathers
    about twenty decoding options from the header, which costs more per file than the view
    itself (about 0.3 ms, a fifth of the whole read); here only the five tags that decide
    the layout are read. With fewer bits stored than allocated (12 of 16 is common) pydicom
    clears the unused high bits; the view is used only when they are clear already (or, for
    signed pixels, a proper sign extension), so the values are the same. Anything else --
    compressed, big endian, 8 or 32 bits, several frames or samples, too few bytes, unused
    bits in use -- returns None and goes to pydicom.
    """
    if syntax not in _NATIVE_LITTLE_ENDIAN:
        return None
    bits_allocated, bits_stored, samples, signed = (_little_endian_us(ds, tag) for tag in (
        0x00280100, 0x00280101, 0x00280002, 0x00280103))  # tags: pydicom's keyword lookup is slow
    if bits_allocated != 16 or bits_stored is None or not 1 <= bits_stored <= 16 or (
        samples not in (None, 1) or signed not in (0, 1) or (
            0x00280008 in ds and ds.get("NumberOfFrames") != 1)
    ):
        return None
    data = ds.PixelData
    n_values = shape[0] * shape[1]
    if not isinstance(data, bytes) or len(data) < 2 * n_values:
        return None
    raw = np.frombuffer(data, dtype="<i2" if signed else "<u2", count=n_values).reshape(shape)
    if bits_stored < 16:
        low, high = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (
            0, (1 << bits_stored) - 1)
        if (signed and raw.min() < low) or raw.max() > high:
            return None
    return raw


def _slice_to_hu(h: _Header, out: np.ndarray) -> bool:
    """Decode one file into ``out`` (int16 HU, padding as air); True if it had rescale tags."""
    ds = h.ds
    if "PixelData" not in ds:
        raise _SkipSlice("missing_pixel_data", "the file has no pixel data (PixelData missing)")
    syntax = _transfer_syntax(ds) or pydicom.uid.ImplicitVRLittleEndian
    try:
        # A read-only view of uncompressed pixel bytes, not a copy: the HU conversion below
        # writes into the volume anyway (compressed data is decoded as usual).
        raw = _native_pixels(ds, syntax, out.shape)
        if raw is None:
            raw = pixel_array(ds, view_only=True)
    except Exception as exc:  # truncated bytes, corrupt compressed streams, bad group 0028
        reason = f"pixel data is damaged or truncated ({_short(exc)})"
        if syntax.is_compressed:
            reason += (
                f"; it is compressed as {syntax.name}: if the file is intact, another decoder "
                f"may read it ({_install_hint(syntax)})"
            )
        raise _SkipSlice("unreadable_file", reason) from exc
    if raw.shape != out.shape:
        raise _SkipSlice(
            "unreadable_file", f"expected one {out.shape[0]}x{out.shape[1]} image, got {raw.shape}"
        )
    slope, intercept = _decimals(ds, "RescaleSlope"), _decimals(ds, "RescaleIntercept")
    has_rescale = slope is not None and intercept is not None
    slope = slope[0] if slope is not None else 1.0
    intercept = intercept[0] if intercept is not None else 0.0
    padding = _padding_range(ds, raw)
    shift = int(intercept) if slope == 1 and intercept.is_integer() else None
    if shift is not None and shift <= 0 and (
        raw.dtype == np.int16 or (raw.dtype == np.uint16 and int(raw.max()) + shift < 2**15)
    ):
        # The common case, done in int16 without copies. Stored values below `threshold`
        # read below LOWEST_CT_HU and become air; the few int16 sums that wrap around are
        # among them.
        threshold = LOWEST_CT_HU - shift
        air = raw < threshold
        if padding is not None and padding[1] >= threshold:
            air |= (raw >= padding[0]) & (raw <= padding[1])
        np.add(raw.view(np.int16), np.int16(shift), out=out)
        np.copyto(out, np.int16(AIR_HU), where=air)
        return has_rescale
    hu = np.rint(raw.astype(np.float64) * slope + intercept)
    air = hu < LOWEST_CT_HU
    if padding is not None:
        air |= (raw >= padding[0]) & (raw <= padding[1])
    hu[air] = AIR_HU
    out[...] = np.minimum(hu, np.iinfo(np.int16).max)
    return has_rescale


# --------------------------------------------------------------------------------------------
# Geometry


def _fill_gaps(
    volume: np.ndarray, z: np.ndarray, uids: list[str], step: float, tolerance: float
) -> tuple[np.ndarray, float, list[str]]:
    """Resample slices at sorted positions ``z`` onto a uniform grid over the same extent.

    The grid runs from the first to the last slice in steps as close to ``step`` as fit.
    Slices that lie on it are copied unchanged (and keep their uid); the other grid slices are
    linear interpolations of their two neighbours (uid ``""``). Returns the volume, the grid
    step and the uid of each grid slice.
    """
    n = int(round((z[-1] - z[0]) / step)) + 1
    grid = np.linspace(z[0], z[-1], n)
    step = float(grid[1] - grid[0])
    out = np.empty((n, *volume.shape[1:]), dtype=np.int16)
    out_uids = [""] * n
    exact = np.zeros(n, dtype=bool)
    nearest = np.clip(np.rint((z - z[0]) / step).astype(int), 0, n - 1)
    for i in np.flatnonzero(np.abs(grid[nearest] - z) <= tolerance * step):
        out[nearest[i]], out_uids[nearest[i]], exact[nearest[i]] = volume[i], uids[i], True
    for k in np.flatnonzero(~exact):
        upper = int(np.clip(np.searchsorted(z, grid[k]), 1, len(z) - 1))
        weight = (grid[k] - z[upper - 1]) / (z[upper] - z[upper - 1])
        out[k] = np.rint(volume[upper - 1] * (1 - weight) + volume[upper] * weight)
    return out, step, out_uids


def _spacing_problem(
    z: np.ndarray, headers: list[_Header], step: float, tolerance: float
) -> tuple[str, str] | None:
    """``(code, description)`` of missing slices or uneven steps between positions ``z``."""
    steps = np.diff(z)
    uneven = np.abs(steps - step) > tolerance * step
    if not uneven.any():
        return None
    ratio = steps[uneven] / step
    where = ", ".join(
        f"{z[i]:.2f}..{z[i + 1]:.2f} mm (between {headers[i].path.name} and "
        f"{headers[i + 1].path.name})"
        for i in np.flatnonzero(uneven)[:5]
    )
    if (ratio > 1.5).all() and np.allclose(ratio, np.round(ratio), atol=tolerance * 10):
        n_missing = int(np.round(ratio).sum() - len(ratio))
        code, what = "missing_slices", f"{n_missing} slice(s) missing at {where}"
    else:
        code = "uneven_spacing"
        what = f"uneven slice spacing (steps {steps.min():.3f} to {steps.max():.3f} mm) at {where}"
    return code, what


def load_scan(
    path: str | os.PathLike,
    series_uid: str | None = None,
    series_description: str | None = None,
    allow_single_slice: bool = False,
    spacing_tolerance: float = 0.01,
    workers: int | None = None,
) -> CTScan:
    """Load one patient's CT series from a folder of DICOM files.

    Parameters
    ----------
    path : path-like
        Folder holding the patient's DICOM files (searched recursively), or a single file.
        Annotation files beside the images (LIDC XML, CSV) are ignored.
    series_uid : str, optional
        Load this SeriesInstanceUID.
    series_description : str, optional
        Load the one series whose SeriesDescription contains this text (case-insensitive).
    allow_single_slice : bool, default False
        Accept a series of one image (a volume of depth 1, z spacing from SliceThickness).
    spacing_tolerance : float, default 0.01
        Relative deviation of a slice step from the median step above which spacing counts as
        uneven.
    workers : int, optional
        Threads that read and decode files; default 1. Parsing holds Python's GIL, so more
        threads only help where reads wait on slow (network) storage.

    Returns
    -------
    CTScan
        Slices in increasing position along the slice normal, with a uniform z spacing.

    Raises
    ------
    DicomLoadError
        When no usable CT volume can be read; the message names the file and the reason.

    Notes
    -----
    Without ``series_uid`` or ``series_description`` the axial CT series with the most images
    is loaded. When several have as many (two reconstruction kernels of one acquisition), the
    lowest ``SeriesNumber`` wins -- the scanner's first reconstruction of the study -- and then
    the lowest uid, so the choice never depends on file names or reading order. A ``several_series``
    finding lists what else was found; :func:`list_series` lists them in the same order.
    """
    path = Path(path)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    headers, findings = _read_headers(path, workers=workers)
    groups = _group_by_series(headers)
    uid, infos = _choose_series(path, groups, series_uid, series_description)
    if len(infos) > 1:
        others = "; ".join(str(i) for i in infos if i.series_uid != uid)
        findings.append(QCFinding(
            "several_series", f"loaded {uid}; also in the folder: {others} "
            "(choose with series_uid= or series_description=)", "info"))
    members = groups[uid]
    localizers = [h for h in members if h.localizer]
    if localizers and len(localizers) < len(members):
        members = [h for h in members if not h.localizer]
        findings.append(QCFinding("localizer_dropped",
                                  f"{len(localizers)} localizer image(s) left out", "info"))
    first = members[0]
    modality = str(first.ds.get("Modality", ""))
    if modality != "CT":
        raise DicomLoadError(
            f"{first.path}: modality is '{modality or 'missing'}', not CT; lunglib reads CT"
        )
    _check_consistent(uid, members)
    first_by_syntax = {str(_transfer_syntax(h.ds)): h for h in reversed(members)}
    for h in first_by_syntax.values():
        _check_decoder(h)
    normal = _normal(first.orientation)
    assert normal is not None  # _check_consistent guarantees a valid orientation

    placed = []
    for h in members:
        if h.position is not None:
            placed.append(h)
        else:
            findings.append(QCFinding(
                "missing_position", "ImagePositionPatient missing, the slice cannot be placed "
                "(file names and InstanceNumber are not reliable); slice skipped", "warning",
                str(h.path)))
    if not placed:
        raise DicomLoadError(
            f"{first.path}: ImagePositionPatient missing in every file of series {uid}; "
            "slice order cannot be known"
        )
    positions = np.array([h.position for h in placed], dtype=float)
    z = positions @ normal
    order = np.argsort(z, kind="stable")
    placed, positions, z = [placed[i] for i in order], positions[order], z[order]

    # Decode every slice straight into the volume; a damaged file is skipped and recorded.
    volume = np.empty((len(placed), *first.size), dtype=np.int16)

    def decode(i: int) -> _SkipSlice | bool:
        try:
            return _slice_to_hu(placed[i], volume[i])
        except _SkipSlice as skip:
            return skip
        except Exception as exc:  # an invalid value in a tag the conversion reads
            return _SkipSlice("unreadable_file", f"could not be converted to HU ({_short(exc)})")

    outcomes = _map(decode, range(len(placed)), workers)
    skipped = [(h, o) for h, o in zip(placed, outcomes, strict=True) if isinstance(o, _SkipSlice)]
    if len(skipped) == len(placed):
        h, skip = skipped[0]
        raise DicomLoadError(
            f"{h.path}: {skip.reason}; none of the {len(placed)} image(s) of series {uid} "
            "has usable pixel data"
        )
    for h, skip in skipped:
        findings.append(QCFinding(skip.code, f"{skip.reason}; slice skipped", "warning",
                                  str(h.path)))
    if not all(o for o in outcomes if not isinstance(o, _SkipSlice)):
        findings.append(QCFinding(
            "missing_rescale", "RescaleSlope/RescaleIntercept absent; assumed slope 1 and "
            "intercept 0 (if air reads near 0 instead of -1000, the stored values are unsigned "
            "and need an intercept of -1024)", "warning", str(first.path)))
    keep = np.array([not isinstance(o, _SkipSlice) for o in outcomes])

    # The same position twice: a copied file is harmless, two different images are not.
    for i in np.flatnonzero(np.diff(z) < _SAME_POSITION_MM) + 1:
        j = i - 1
        while j > 0 and not keep[j]:
            j -= 1
        if not (keep[i] and keep[j]) or z[i] - z[j] >= _SAME_POSITION_MM:
            continue
        if not np.array_equal(volume[i], volume[j]):
            raise DicomLoadError(
                f"{placed[i].path}: same position ({z[i]:.2f} mm along the slice normal) as "
                f"{placed[j].path.name} but different pixels; series {uid} seems to mix "
                "acquisitions -- remove one of them or load another series"
            )
        keep[i] = False
        findings.append(QCFinding(
            "duplicate_positions", f"identical copy of {placed[j].path.name} at the same "
            "position; dropped", "warning", str(placed[i].path)))
    if not keep.all():
        volume = volume[keep]
        placed = [h for h, k in zip(placed, keep, strict=True) if k]
        positions, z = positions[keep], z[keep]
    slice_uids = [h.sop_uid for h in placed]

    row_spacing, col_spacing = (float(v) for v in first.ds.get("PixelSpacing", [1.0, 1.0]))
    if "PixelSpacing" not in first.ds:
        findings.append(QCFinding("missing_pixel_spacing", "PixelSpacing absent; assumed 1 mm",
                                  "warning", str(first.path)))
    if len(placed) == 1:
        if not allow_single_slice:
            raise DicomLoadError(
                f"{placed[0].path}: the series has a single usable slice; a CT volume needs "
                "several (pass allow_single_slice=True to read it as a one-slice volume)"
            )
        z_spacing = float(first.ds.get("SliceThickness", 1.0) or 1.0)
        findings.append(QCFinding("single_slice", "single-slice series; z spacing taken from "
                                  "SliceThickness", "info"))
    else:
        z_spacing = float(np.median(np.diff(z)))
        problem = _spacing_problem(z, placed, z_spacing, spacing_tolerance)
        if problem is not None:
            volume, z_spacing, slice_uids = _fill_gaps(
                volume, z, slice_uids, z_spacing, spacing_tolerance)
            code, what = problem
            findings.append(QCFinding(code, (
                f"{what}; resampled onto a uniform {z_spacing:.3f} mm grid over the same extent: "
                f"{slice_uids.count('')} of {len(slice_uids)} slices are linear interpolations "
                "(slice_uids '')"), "warning"))
        tilt = _in_plane_drift(positions, normal)
        if tilt > 0.5 * min(row_spacing, col_spacing):
            findings.append(QCFinding(
                "gantry_tilt", f"slice positions drift {tilt:.1f} mm sideways from the slice "
                "normal (gantry tilt); the volume is sheared and its geometry approximate",
                "warning"))

    iop = np.asarray(first.orientation, float)
    patient_id = str(first.ds.get("PatientID", "")) or str(first.ds.get("StudyInstanceUID", uid))
    metadata: dict[str, object] = {}
    for tag in _METADATA_TAGS:
        value = first.ds.get(tag)
        if value is not None and value != "":
            metadata[tag] = value if isinstance(value, (int, float, str)) else str(value)
    metadata["n_files"] = len(members)
    return CTScan(
        hu=volume,
        spacing=(z_spacing, row_spacing, col_spacing),
        origin=tuple(float(o) for o in positions[0]),  # type: ignore[arg-type]
        direction=np.column_stack([iop[:3], iop[3:], normal]),
        series_uid=uid,
        patient_key=pseudonymize(patient_id),
        slice_uids=slice_uids,
        qc=findings,
        metadata=metadata,
        source=str(path),
    )


def _check_consistent(uid: str, members: list[_Header]) -> None:
    """One image size and one orientation per series, or an error naming an odd file."""
    first = members[0]
    if _normal(first.orientation) is None:
        raise DicomLoadError(
            f"{first.path}: ImageOrientationPatient missing or invalid; "
            "slice order and spacing cannot be known"
        )
    sizes = Counter(h.size for h in members)
    if len(sizes) > 1:
        (common, _), *_ = sizes.most_common()
        odd = next(h for h in members if h.size != common)
        listing = ", ".join(f"{r}x{c} ({n} files)" for (r, c), n in sizes.most_common())
        raise DicomLoadError(
            f"{odd.path}: image size {odd.size[0]}x{odd.size[1]} differs from the rest of "
            f"series {uid}: mixed image sizes {listing}"
        )
    iop = np.asarray(first.orientation)
    same = [h.orientation is not None for h in members]
    if all(same):
        same = np.isclose([h.orientation for h in members], iop, atol=1e-3).all(axis=1)
    for h, ok in zip(members, same, strict=True):
        if not ok:
            raise DicomLoadError(
                f"{h.path}: ImageOrientationPatient {h.orientation} differs from "
                f"{first.orientation} in {first.path.name}; series {uid} mixes orientations"
            )


def _in_plane_drift(positions: np.ndarray, normal: np.ndarray) -> float:
    """Largest sideways offset (mm) of slice positions from the line along the normal."""
    offsets = positions - positions[0]
    sideways = offsets - np.outer(offsets @ normal, normal)
    return float(np.linalg.norm(sideways, axis=1).max())


def load_scans(paths: Iterable[str | os.PathLike], **kwargs) -> dict[str, CTScan | QCFinding]:
    """Load several scans; a scan that fails becomes an error :class:`QCFinding`, not a crash."""
    out: dict[str, CTScan | QCFinding] = {}
    for p in paths:
        try:
            out[str(p)] = load_scan(p, **kwargs)
        except DicomLoadError as exc:
            out[str(p)] = QCFinding("load_failed", str(exc), "error", str(p))
    return out
