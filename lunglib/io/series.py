"""Finding the DICOM files in a folder, reading their headers and choosing one CT series.

The first stages of :func:`lunglib.io.dicom.load_scan`:

* :func:`read_headers` reads every candidate file once (headers, and pixel bytes unless the
  folder is very large) and turns what cannot be read into :class:`~lunglib.io.qc.QCFinding`
  objects instead of errors, so that one damaged file does not cost the whole series. Its
  ``reader`` is pydicom (the reference) or dicomsdl (:mod:`~lunglib.io.fastread`, which parses
  plain files several times faster and leaves every other file to pydicom); either way each
  file becomes one :class:`Header` holding the same values;
* :func:`choose_series` groups the files by SeriesInstanceUID, picks the series to load (the one
  asked for, or the axial CT series with the most images), drops localizer images from it and
  refuses anything that is not CT.

:func:`list_series` shows the same grouping and the same preference order without loading pixels.
"""

from __future__ import annotations

import functools
import os
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

from lunglib.io.deid import safe_description
from lunglib.io.qc import QCFinding

_T = TypeVar("_T")
_R = TypeVar("_R")
# Files that sit beside DICOM images in public datasets and are not images.
_NON_DICOM_SUFFIXES = {".xml", ".csv", ".txt", ".json", ".md", ".html", ".pdf", ".png", ".jpg"}
# pydicom's parsing holds the GIL, so on local disks (or files in the page cache) a thread pool
# costs more than it overlaps and one thread is the default; slow network storage may gain from
# more (``workers=``).
_READ_WORKERS = 1
# Folders up to this many bytes are read whole, each file once; above it the pixel bytes stay on
# disk until the chosen series decodes them, so that series that are not loaded never sit in
# memory.
_READ_WHOLE_LIMIT = 2 * 1024**3

#: The largest image lunglib reads: CT slices are 512 x 512, rarely 1024 or 2048 pixels a side.
#: A header claiming more is damaged or hostile (65535 x 65535 would need 8 GiB per slice).
MAX_IMAGE_SIDE = 4096
#: The largest file read as one CT image: MAX_IMAGE_SIDE squared at 16 bits is 32 MiB, plus a
#: header. A bigger file (a slice zero-padded to gigabytes, which pydicom would parse for
#: minutes as empty data elements) is skipped without being read.
MAX_IMAGE_FILE_BYTES = 64 * 2**20


class DicomLoadError(ValueError):
    """A DICOM folder or file could not be turned into a CT volume; the message says why."""


class ReaderUnfit(Exception):
    """The dicomsdl reader cannot read this series exactly as pydicom does; the message says
    why, without file names or patient data. :func:`~lunglib.io.dicom.load_scan` then reads the
    series with pydicom and records the reason in the scan's metadata."""


@dataclass
class SeriesInfo:
    """What :func:`list_series` found for one series (no patient identifiers; the description
    shown keeps only CT vocabulary and technical codes, :mod:`lunglib.io.deid`)."""

    series_uid: str
    description: str
    modality: str
    n_images: int
    rows: int
    columns: int
    axial: bool
    convolution_kernel: str = ""
    series_number: int | None = None
    #: The SeriesDescription as written, for choosing a series by it; never printed (the
    #: ``description`` shown is :func:`lunglib.io.deid.safe_description` of it).
    raw_description: str = field(default="", repr=False, compare=False)

    def __str__(self) -> str:
        kind = "axial" if self.axial else "non-axial"
        number = f"#{self.series_number} " if self.series_number is not None else ""
        return (
            f"{self.modality} {kind} series {number}'{self.description}' ({self.n_images} images, "
            f"{self.rows}x{self.columns}, kernel {self.convolution_kernel or '?'}) "
            f"uid {self.series_uid}"
        )


# --------------------------------------------------------------------------------------------
# Reading headers


#: Transfer syntaxes whose pixel data are the stored values, little endian, one after another.
NATIVE_LITTLE_ENDIAN = (
    str(pydicom.uid.ImplicitVRLittleEndian), str(pydicom.uid.ExplicitVRLittleEndian))


@dataclass(frozen=True)
class PixelLayout:
    """The tags that say how a natively stored image lays out its pixel bytes.

    Only files of a native little-endian transfer syntax have one (:attr:`Header.layout`); the
    values are read as written, None when a tag is absent.
    """

    bits_allocated: int | None
    bits_stored: int | None
    samples: int | None
    signed: int | None
    single_frame: bool

    def problem(self) -> str | None:
        """Why the pixel bytes are not one plain image of 16-bit stored values (None when they
        are): then they are read directly; otherwise pydicom's ``pixel_array`` decodes them."""
        if self.bits_allocated != 16:
            return f"BitsAllocated {self.bits_allocated}, not 16"
        if self.bits_stored is None or not 1 <= self.bits_stored <= 16:
            return f"BitsStored {self.bits_stored}, not 1 to 16"
        if self.samples not in (None, 1):
            return f"SamplesPerPixel {self.samples}, not 1"
        if self.signed not in (0, 1):
            return f"PixelRepresentation {self.signed}, not 0 or 1"
        if not self.single_frame:
            return "several frames in one file"
        return None

    def bits_clear(self, raw: np.ndarray) -> bool:
        """Whether the stored values ``raw`` (read as 16-bit) use only the BitsStored bits --
        high bits clear, or a proper sign extension -- so that they are what pydicom's
        ``pixel_array`` gives; pydicom masks or sign-extends the others."""
        bits = self.bits_stored or 16
        if bits >= 16:
            return True
        if self.signed:
            return bool(raw.min() >= -(1 << (bits - 1)) and raw.max() < 1 << (bits - 1))
        return bool(raw.max() < 1 << bits)


@dataclass
class Header:
    """One file's header values that every stage needs, converted once.

    The stages read these fields only, never the file's dataset, so the two readers (pydicom
    and dicomsdl) are interchangeable up to here: for the same file they give equal fields
    (``tests/test_fast_reader.py`` checks it on real and on pydicom's test files).
    """

    path: Path
    series_uid: str
    sop_uid: str
    size: tuple[int, int]
    orientation: tuple[float, ...] | None
    position: tuple[float, ...] | None
    localizer: bool
    pixel_spacing: tuple[float, ...] | None
    #: The first value of RescaleSlope and RescaleIntercept (None when absent).
    slope: float | None
    intercept: float | None
    #: PixelPaddingValue and PixelPaddingRangeLimit, those present, as integers.
    padding: tuple[int, ...]
    #: TransferSyntaxUID ("" when absent).
    syntax: str
    layout: PixelLayout | None
    #: "pydicom" or "dicomsdl": which library parsed the header.
    reader: str = "pydicom"
    #: Why the dicomsdl reader cannot give this file's stored values exactly as pydicom does
    #: (it left the file to pydicom, or its pixels are not plain); None when it can, or when
    #: the pydicom reader read the file.
    declined: str | None = None
    #: Where the pixel bytes start in the file (dicomsdl reader: checked against the file's end).
    pixel_offset: int | None = None
    #: The pydicom dataset: the file as read (pydicom reader), or its header read on first use of
    #: :attr:`ds` (dicomsdl reader: only the few files series-level tags are taken from).
    dataset: Dataset | None = field(default=None, repr=False, compare=False)

    @property
    def ds(self) -> Dataset:
        """The file's pydicom dataset, for the tags taken from one file of a series (modality,
        description, the de-identified metadata, PatientID for the pseudonym)."""
        if self.dataset is None:
            try:
                self.dataset = pydicom.dcmread(self.path, stop_before_pixels=True)
            except Exception as exc:  # damaged in a way dicomsdl did not notice
                raise ReaderUnfit("pydicom could not read the header of a file dicomsdl read "
                                  f"({type(exc).__name__})") from exc
        return self.dataset

    @classmethod
    def from_dataset(cls, path: Path, ds: Dataset) -> Header:
        """The header values of a file read by pydicom (the reference for every field)."""
        iop = decimals(ds, "ImageOrientationPatient")
        ipp = decimals(ds, "ImagePositionPatient")
        slope, intercept = decimals(ds, "RescaleSlope"), decimals(ds, "RescaleIntercept")
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        syntax = str(syntax) if syntax else ""
        padding = (ds.get("PixelPaddingValue"), ds.get("PixelPaddingRangeLimit"))
        return cls(
            path=path,
            dataset=ds,
            series_uid=_uid(ds, "SeriesInstanceUID"),
            sop_uid=_uid(ds, "SOPInstanceUID"),
            size=(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
            orientation=iop if iop is not None and len(iop) == 6 else None,
            position=ipp if ipp is not None and len(ipp) == 3 else None,
            localizer=is_localizer(ds.get("ImageType", [])),
            pixel_spacing=decimals(ds, "PixelSpacing"),
            slope=slope[0] if slope is not None else None,
            intercept=intercept[0] if intercept is not None else None,
            padding=tuple(int(v) for v in padding if isinstance(v, int)),
            syntax=syntax,
            # A file without a transfer syntax is decoded as implicit VR little endian.
            layout=_layout(ds) if syntax in ("", *NATIVE_LITTLE_ENDIAN) else None,
        )


def is_localizer(image_type: object) -> bool:
    """Whether an ImageType value (as pydicom converts it) marks a localizer (scout) image."""
    return "LOCALIZER" in [str(v).upper() for v in image_type]  # type: ignore[attr-defined]


def _little_endian_us(ds: Dataset, tag: int) -> int | None:
    """A one-value US element of a little-endian dataset as an int (None when absent), read
    from its raw bytes when pydicom has not converted it yet (as ``decimals`` does)."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return int.from_bytes(value[:2], "little") if len(value) >= 2 else None
    return value if isinstance(value, int) else None


def _layout(ds: Dataset) -> PixelLayout:
    """The pixel layout tags of a little-endian dataset (by tag: pydicom's keyword lookup is
    slow)."""
    try:
        single_frame = 0x00280008 not in ds or ds.get("NumberOfFrames") == 1
    except Exception:  # a NumberOfFrames that is not a number: pydicom decodes (or refuses) it
        single_frame = False
    return PixelLayout(
        bits_allocated=_little_endian_us(ds, 0x00280100),
        bits_stored=_little_endian_us(ds, 0x00280101),
        samples=_little_endian_us(ds, 0x00280002),
        signed=_little_endian_us(ds, 0x00280103),
        single_frame=single_frame,
    )


def decimals(ds: Dataset, keyword: str) -> tuple[float, ...] | None:
    """A DS (decimal string) element as floats, or None when absent or empty.

    Reads the raw ``b"1.0\\0.0\\..."`` bytes when pydicom has not converted them yet: building
    its validated ``DSfloat`` objects costs more than reading the file, for every file.
    """
    elem = ds.get_item(keyword)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        return raw_decimals(value)
    if value is None or value == "":
        return None
    values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    return tuple(float(v) for v in values)


def raw_decimals(value: bytes) -> tuple[float, ...] | None:
    """The floats of a DS element's raw bytes (``b"1.0\\0.0"``), None when empty; both readers
    convert DS values with this one function."""
    return tuple(map(float, value.split(b"\\"))) if value.strip() else None


def raw_uid(value: bytes) -> str:
    """The text of a UI element's raw bytes, trailing padding removed (both readers use it)."""
    return value.decode("ascii").rstrip("\0 ")


def _uid(ds: Dataset, keyword: str) -> str:
    """A UI element as text ("" when absent), skipping pydicom's per-value UID validation."""
    elem = ds.get_item(keyword)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    return raw_uid(value) if isinstance(value, bytes) else str(value)


def short_error(exc: BaseException) -> str:
    """The exception's type and the first line of its message, for a one-line finding."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def thread_map(fn: Callable[[_T], _R], items: Iterable[_T], workers: int | None) -> list[_R]:
    """``list(map(fn, items))`` on a thread pool, or in this thread when ``workers`` is 1."""
    workers = workers or _READ_WORKERS
    if workers == 1:
        return list(map(fn, items))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def _candidate_files(path: Path) -> list[Path]:
    """``path`` itself, or every file under it that is not hidden and not an annotation, in
    sorted path order. Like ``Path.rglob``, it does not descend into linked folders."""
    if path.is_file():
        return [path]
    files: list[Path] = []

    def walk(folder: Path) -> None:
        try:
            with os.scandir(folder) as entries:
                found = list(entries)
        except PermissionError:
            return
        for entry in found:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if not entry.is_symlink():
                    walk(folder / entry.name)
            elif entry.is_file() and Path(entry.name).suffix.lower() not in _NON_DICOM_SUFFIXES:
                files.append(folder / entry.name)

    walk(path)
    return sorted(files)


def _size_finding(path: Path, size: int) -> QCFinding | None:
    """The finding for a file that is empty or too big to be one CT image (None otherwise)."""
    if size == 0:
        return QCFinding("unreadable_file", "the file is empty (0 bytes); skipped", "warning",
                         str(path))
    if size > MAX_IMAGE_FILE_BYTES:
        return QCFinding(
            "unreadable_file", f"the file is {size / 2**20:.0f} MB, more than one CT image "
            f"can need ({MAX_IMAGE_SIDE} x {MAX_IMAGE_SIDE} pixels of 16 bits and a header "
            f"fit in {MAX_IMAGE_FILE_BYTES // 2**20} MB); skipped without reading it",
            "warning", str(path))
    return None


def _read_header(path: Path, pixels: str) -> Header | QCFinding:
    """One file's :class:`Header` read by pydicom, or the finding that says why it is not an
    image we can use.

    ``pixels`` is ``"read"`` (the whole file), ``"defer"`` (pixel bytes stay on disk until the
    chosen series decodes them) or ``"skip"`` (header only).
    """
    try:
        finding = _size_finding(path, path.stat().st_size)
        if finding is not None:
            return finding
        if pixels == "read":
            ds = pydicom.dcmread(path)
        elif pixels == "defer":
            ds = pydicom.dcmread(path, defer_size="16 KB")
        else:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        return QCFinding("not_dicom", "not a DICOM file; ignored", "info", str(path))
    except Exception as exc:  # truncated or corrupt headers raise many kinds of errors
        return QCFinding(
            "unreadable_file", f"could not be read ({short_error(exc)}); skipped", "warning",
            str(path)
        )
    if "SeriesInstanceUID" not in ds:
        sop_class = getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
        if "PixelData" in ds or "Image Storage" in getattr(sop_class, "name", ""):
            return QCFinding(
                "unreadable_file", "an image file without SeriesInstanceUID (truncated "
                "header?); skipped", "warning", str(path))
        return QCFinding("not_dicom", "no DICOM image header; ignored", "info", str(path))
    try:
        return Header.from_dataset(path, ds)
    except Exception as exc:  # a malformed value in one of the tags above
        return QCFinding("unreadable_file", f"invalid header value ({short_error(exc)}); skipped",
                         "warning", str(path))


def _read_header_fast(path: Path, pixels: Callable[[], str]) -> Header | QCFinding:
    """One file's :class:`Header` parsed by dicomsdl, or -- a file dicomsdl leaves alone -- read
    by pydicom as :func:`_read_header` reads it (so the findings are the same), with the reason
    in :attr:`Header.declined`."""
    from lunglib.io import fastread  # it builds Headers, so it imports this module

    try:
        size = path.stat().st_size
    except OSError:
        return _read_header(path, pixels())  # which names the error
    finding = _size_finding(path, size)
    if finding is not None:
        return finding
    outcome = fastread.read_header(path, size)
    if isinstance(outcome, Header):
        return outcome
    header = _read_header(path, pixels())
    if isinstance(header, Header):
        header.declined = outcome
    return header


def read_headers(
    path: Path, with_pixels: bool = True, workers: int | None = None, reader: str = "pydicom"
) -> tuple[list[Header], list[QCFinding]]:
    """Read every candidate file's header (and, if ``with_pixels``, its pixel bytes).

    With pydicom, reading each file once, whole, is the fastest; for folders larger than
    ``_READ_WHOLE_LIMIT`` bytes the pixel bytes are left on disk (deferred) instead. With
    dicomsdl (``reader="dicomsdl"``, see :mod:`~lunglib.io.fastread`) only the headers are read
    here: the pixels of the chosen series are read straight into the volume later. The files
    dicomsdl leaves alone are read by pydicom as the pydicom reader reads them, so the findings
    are the same.

    Returns
    -------
    headers : list of Header
        The image files, in sorted path order.
    findings : list of QCFinding
        One per file that is not DICOM (info) or could not be read (warning).

    Raises
    ------
    DicomLoadError
        When ``path`` does not exist, holds no candidate file, or no file is a readable image.
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

    @functools.cache
    def pixels() -> str:  # how pydicom reads: the dicomsdl reader asks only for files it declines
        if not with_pixels:
            return "skip"
        return "read" if sum(p.stat().st_size for p in files) <= _READ_WHOLE_LIMIT else "defer"

    if reader == "dicomsdl":
        results = thread_map(lambda p: _read_header_fast(p, pixels), files, workers)
    else:
        results = thread_map(lambda p: _read_header(p, pixels()), files, workers)
    headers = [r for r in results if isinstance(r, Header)]
    findings = [r for r in results if isinstance(r, QCFinding)]
    if not headers:
        unreadable = [f for f in findings if f.code == "unreadable_file"]
        first = unreadable[0] if unreadable else findings[0]
        raise DicomLoadError(
            f"{path}: no readable DICOM image among {len(files)} file(s) "
            f"(first: {Path(first.file or '').name}: {first.message})"
        )
    return headers, findings


# --------------------------------------------------------------------------------------------
# Grouping and choosing series


def slice_normal(iop: Sequence[float] | None) -> np.ndarray | None:
    """Unit normal of the image plane (row cosines x column cosines), None when degenerate."""
    if iop is None:
        return None
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else None


def _is_axial(h: Header) -> bool:
    n = slice_normal(h.orientation)
    return n is not None and abs(n[2]) > 0.9


def _group_by_series(headers: list[Header]) -> dict[str, list[Header]]:
    """Headers by SeriesInstanceUID, each group in reading order."""
    groups: dict[str, list[Header]] = {}
    for h in headers:
        groups.setdefault(h.series_uid, []).append(h)
    return groups


def _series_info(uid: str, members: list[Header]) -> SeriesInfo:
    ds = members[0].ds
    number = ds.get("SeriesNumber")
    return SeriesInfo(
        series_uid=uid,
        description=safe_description(ds.get("SeriesDescription", "")),
        raw_description=str(ds.get("SeriesDescription", "") or ""),
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


def list_series(path: str | os.PathLike, reader: str | None = None) -> list[SeriesInfo]:
    """List every image series in a folder (recursively), the default choice first.

    Parameters
    ----------
    path : path-like
        A folder of DICOM files (any depth), or one file.
    reader : {"auto", "dicomsdl", "pydicom"}, optional
        Which library parses the headers, as for :func:`~lunglib.io.dicom.load_scan` (default
        ``$LUNGLIB_DICOM_READER``, else ``"auto"``); the listing is the same either way.

    Returns
    -------
    list of SeriesInfo
        Sorted by the order :func:`~lunglib.io.dicom.load_scan` prefers (most images first).
        Holds no patient identifiers, so it is safe to print.
    """
    from lunglib.io import fastread  # it builds Headers, so it imports this module

    choice = fastread.requested_reader(reader)
    if choice != "pydicom":
        try:
            if fastread.unavailable() is not None:
                raise ReaderUnfit(str(fastread.unavailable()))
            return _list_series(Path(path), "dicomsdl")
        except ReaderUnfit as unfit:
            if choice == "dicomsdl":
                raise DicomLoadError(
                    f"{path}: reader='dicomsdl' cannot list it ({unfit})") from unfit
    return _list_series(Path(path), "pydicom")


def _list_series(path: Path, reader: str) -> list[SeriesInfo]:
    headers, _ = read_headers(path, with_pixels=False, reader=reader)
    infos = [_series_info(uid, members) for uid, members in _group_by_series(headers).items()]
    return sorted(infos, key=_preference)


def _pick_series(
    path: Path,
    groups: dict[str, list[Header]],
    series_uid: str | None,
    series_description: str | None,
) -> tuple[str, list[SeriesInfo]]:
    """The uid to load (asked for, or the preferred axial CT) and every series, preferred first."""
    infos = sorted((_series_info(uid, m) for uid, m in groups.items()), key=_preference)
    listing = "\n  ".join(str(i) for i in infos)
    if series_uid is not None:
        if series_uid not in groups:
            raise DicomLoadError(f"{path}: no series with uid {series_uid}; found:\n  {listing}")
        return series_uid, infos
    if series_description is not None:
        wanted = series_description.lower()
        hits = [i.series_uid for i in infos if wanted in i.raw_description.lower()]
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


def choose_series(
    path: Path,
    headers: list[Header],
    series_uid: str | None,
    series_description: str | None,
    findings: list[QCFinding],
) -> tuple[str, list[Header]]:
    """The series to load and its image files, localizers left out.

    Without ``series_uid`` or ``series_description`` the axial CT series with the most images
    is chosen; ties go to the lowest SeriesNumber, then the lowest uid, so the choice never
    depends on file names or reading order. Localizer images (ImageType ``LOCALIZER``) sharing
    the series are dropped unless the series holds nothing else. Appends a ``several_series``
    and a ``localizer_dropped`` finding (info) to ``findings`` when they apply.

    Raises
    ------
    DicomLoadError
        When the asked-for series is missing or ambiguous, when there is no axial CT series
        to choose by default, or when the chosen series is not CT.
    """
    groups = _group_by_series(headers)
    uid, infos = _pick_series(path, groups, series_uid, series_description)
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
    return uid, members
