"""Decoding a series' pixel data into Hounsfield units.

The decoding stages of :func:`lunglib.io.dicom.load_scan`:

* :func:`check_decoders` refuses a compressed series at once, with the ``pip install`` that
  adds a decoder, instead of failing on every slice;
* :func:`decode_slices` converts every slice straight into one int16 volume with
  ``RescaleSlope``/``RescaleIntercept``; values below the lowest CT number and the scanner's
  padding (``PixelPaddingValue``) become air. A file whose pixels cannot be read is skipped and
  recorded; only a series without any usable slice is an error.

The stored values come from pydicom (the reference: a view of plain 16-bit pixel bytes, else
``pixel_array``) or, for a series :mod:`~lunglib.io.fastread` read, straight from the file into
the volume; the HU conversion is one function for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, pixel_array

from lunglib.io import fastread
from lunglib.io.qc import QCFinding
from lunglib.io.series import DicomLoadError, Header, ReaderUnfit, short_error, thread_map

AIR_HU = -1000
LOWEST_CT_HU = -1024
# pip packages that give pydicom a decoder for each family of compressed transfer syntaxes.
_DECODER_PACKAGES: tuple[tuple[Sequence[str], str], ...] = (
    (pydicom.uid.JPEG2000TransferSyntaxes, "pylibjpeg pylibjpeg-openjpeg"),
    (pydicom.uid.JPEGLSTransferSyntaxes, "pyjpegls"),
    (pydicom.uid.JPEGTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg"),
    (pydicom.uid.RLETransferSyntaxes, "pylibjpeg pylibjpeg-rle"),
)


class _SkipSlice(Exception):
    """One file of the series cannot be used; the rest may still be fine."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _transfer_syntax(h: Header) -> pydicom.uid.UID | None:
    return pydicom.uid.UID(h.syntax) if h.syntax else None


def _install_hint(syntax: pydicom.uid.UID) -> str:
    for family, packages in _DECODER_PACKAGES:
        if syntax in family:
            return f"pip install {packages}"
    return "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls"


def _check_decoder(h: Header) -> None:
    """Raise when ``h`` is compressed and pydicom has no decoder for its transfer syntax."""
    syntax = _transfer_syntax(h)
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


def check_decoders(members: list[Header]) -> None:
    """Raise at once when the series is compressed and no decoder reads it.

    One file per transfer syntax is checked (the first file of the series that uses it), and
    the error names that file and the ``pip install`` that adds a decoder.

    Raises
    ------
    DicomLoadError
        For the first transfer syntax in the series without an installed decoder.
    """
    first_by_syntax = {h.syntax: h for h in reversed(members)}
    for h in first_by_syntax.values():
        _check_decoder(h)


def _padding_range(padding: tuple[int, ...], raw: np.ndarray) -> tuple[int, int] | None:
    """Stored values marking padding (PixelPaddingValue [.. PixelPaddingRangeLimit]), if any."""
    values = list(padding)
    if not values:
        return None
    if raw.dtype.kind == "i":
        # Often written as US even when pixels are signed: 63536 stands for -2000.
        bits = raw.dtype.itemsize * 8
        values = [v - 2**bits if v >= 2 ** (bits - 1) else v for v in values]
    return min(values), max(values)


def _native_pixels(h: Header, ds: Dataset, shape: tuple[int, ...]) -> np.ndarray | None:
    """The pixel bytes of a plain 16-bit little-endian image as a read-only array, or None.

    This is what ``pixel_array(ds, view_only=True)`` returns for the layout almost every CT
    is stored in: one frame, one sample, all 16 allocated bits used. pydicom first gathers
    about twenty decoding options from the header, which costs more per file than the view
    itself; here only the tags that decide the layout are read
    (:class:`~lunglib.io.series.PixelLayout`). With fewer bits stored than allocated (12 of 16
    is common) pydicom clears the unused high bits; the view is used only when they are clear
    already (or, for signed pixels, a proper sign extension), so the values are the same.
    Anything else -- compressed, big endian, 8 or 32 bits, several frames or samples, too few
    bytes, unused bits in use -- returns None and goes to pydicom.
    """
    layout = h.layout
    if layout is None or layout.problem() is not None:
        return None
    data = ds.PixelData
    n_values = shape[0] * shape[1]
    if not isinstance(data, bytes) or len(data) < 2 * n_values:
        return None
    dtype = "<i2" if layout.signed else "<u2"
    raw = np.frombuffer(data, dtype=dtype, count=n_values).reshape(shape)
    return raw if layout.bits_clear(raw) else None


def _pydicom_stored_values(h: Header, shape: tuple[int, ...]) -> np.ndarray:
    """The stored values of a file read by pydicom: a view of plain pixel bytes, else
    ``pixel_array`` (which decodes compressed data)."""
    ds = h.ds
    if "PixelData" not in ds:
        raise _SkipSlice("missing_pixel_data", "the file has no pixel data (PixelData missing)")
    syntax = _transfer_syntax(h) or pydicom.uid.ImplicitVRLittleEndian
    try:
        # A read-only view of uncompressed pixel bytes, not a copy: the HU conversion writes
        # into the volume anyway (compressed data is decoded as usual).
        raw = _native_pixels(h, ds, shape)
        if raw is None:
            raw = pixel_array(ds, view_only=True)
    except Exception as exc:  # truncated bytes, corrupt compressed streams, bad group 0028
        reason = f"pixel data is damaged or truncated ({short_error(exc)})"
        if syntax.is_compressed:
            reason += (
                f"; it is compressed as {syntax.name}: if the file is intact, another decoder "
                f"may read it ({_install_hint(syntax)})"
            )
        raise _SkipSlice("unreadable_file", reason) from exc
    return raw


def _slice_to_hu(h: Header, out: np.ndarray) -> bool:
    """Decode one file into ``out`` (int16 HU, padding as air); True if it had rescale tags."""
    if h.reader == "dicomsdl":
        raw = fastread.stored_values(h, out)  # in ``out`` itself: converted in place below
    else:
        raw = _pydicom_stored_values(h, out.shape)
    if raw.shape != out.shape:
        raise _SkipSlice(
            "unreadable_file", f"expected one {out.shape[0]}x{out.shape[1]} image, got {raw.shape}"
        )
    has_rescale = h.slope is not None and h.intercept is not None
    to_hu(raw, 1.0 if h.slope is None else h.slope, 0.0 if h.intercept is None else h.intercept,
          _padding_range(h.padding, raw), out)
    return has_rescale


def to_hu(
    raw: np.ndarray, slope: float, intercept: float, padding: tuple[int, int] | None,
    out: np.ndarray,
) -> None:
    """Write ``raw * slope + intercept`` (rounded, int16) into ``out``, with air (-1000) below
    LOWEST_CT_HU and at the stored ``padding`` values. ``raw`` may be ``out`` itself (or its
    uint16 view): every mask is taken before ``out`` is written."""
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
        return
    hu = np.rint(raw.astype(np.float64) * slope + intercept)
    air = hu < LOWEST_CT_HU
    if padding is not None:
        air |= (raw >= padding[0]) & (raw <= padding[1])
    hu[air] = AIR_HU
    out[...] = np.minimum(hu, np.iinfo(np.int16).max)


def check_rescale(uid: str, members: list[Header], findings: list[QCFinding]) -> None:
    """Check RescaleSlope and RescaleIntercept in every file, before any pixel is decoded.

    A slope or intercept that is not a finite number, or a slope of 0, would turn every pixel
    into the same or no value: an error naming the file. One slice without the two tags among
    slices that have them would otherwise read its stored values as HU -- ~1000 HU off its
    neighbours for the usual intercept of -1024. Where all the other slices agree on one slope
    and intercept, the repair is unambiguous: theirs is used for it (in memory; the file is not
    changed) and a ``missing_rescale`` finding names the slice. Where they disagree, the slice's
    HU cannot be known and the series is refused. A series without the tags anywhere is left
    to :func:`decode_slices` (slope 1, intercept 0, one finding for the series).

    Raises
    ------
    DicomLoadError
        Naming the file, for an invalid slope or intercept, or a slice without them among
        slices that disagree on theirs.
    """
    given: dict[tuple[float, float], int] = {}
    absent = []
    for h in members:
        if h.slope is None and h.intercept is None:
            absent.append(h)
            continue
        values = (1.0 if h.slope is None else h.slope, 0.0 if h.intercept is None else h.intercept)
        if not all(map(math.isfinite, values)) or values[0] == 0:
            raise DicomLoadError(
                f"{h.path}: RescaleSlope {values[0]:g} and RescaleIntercept {values[1]:g} cannot "
                "turn stored values into HU (a slope must be a finite non-zero number, the "
                "intercept finite); fix the tags or leave this file out")
        given[values] = given.get(values, 0) + 1
    if not absent or not given:
        return
    if len(given) > 1:
        raise DicomLoadError(
            f"{absent[0].path}: RescaleSlope/RescaleIntercept absent in this slice, while the "
            f"other slices of series {uid} use {len(given)} different values; its HU cannot be "
            "known (leave the file out)")
    (slope, intercept), = given
    for h in absent:
        h.slope, h.intercept = slope, intercept
        findings.append(QCFinding(
            "missing_rescale", f"RescaleSlope/RescaleIntercept absent in this slice; the "
            f"series' other {sum(given.values())} slices all give slope {slope:g} and intercept "
            f"{intercept:g}, used here (read as HU without them it would be {abs(intercept):g} "
            "HU off its neighbours)", "warning", str(h.path)))


def decode_slices(
    uid: str,
    placed: list[Header],
    first: Header,
    workers: int | None,
    findings: list[QCFinding],
) -> tuple[np.ndarray, np.ndarray]:
    """Decode every placed slice, in order, straight into one int16 HU volume.

    A file whose pixels are missing, damaged or of the wrong size is skipped with an
    ``unreadable_file`` or ``missing_pixel_data`` finding; a series without RescaleSlope or
    RescaleIntercept gets one ``missing_rescale`` finding naming ``first`` (the series' first
    file).

    Parameters
    ----------
    uid : str
        The series' uid, for the error message.
    placed : list of Header
        The slices in volume order.
    first : Header
        The series' first file: its image size is the volume's in-plane shape.
    workers : int or None
        Threads that decode (see :func:`~lunglib.io.series.thread_map`).
    findings : list of QCFinding
        Appended to.

    Returns
    -------
    volume : ndarray of int16, shape (len(placed), rows, columns)
        HU per slice; the rows of skipped slices are undefined.
    usable : ndarray of bool
        False for the skipped slices.

    Raises
    ------
    DicomLoadError
        When no slice has usable pixel data (naming the first file and its reason).
    """
    volume = np.empty((len(placed), *first.size), dtype=np.int16)

    def decode(i: int) -> _SkipSlice | bool:
        try:
            return _slice_to_hu(placed[i], volume[i])
        except _SkipSlice as skip:
            return skip
        except ReaderUnfit:  # the series goes back to pydicom as a whole
            raise
        except Exception as exc:  # an invalid value in a tag the conversion reads
            return _SkipSlice("unreadable_file",
                              f"could not be converted to HU ({short_error(exc)})")

    outcomes = thread_map(decode, range(len(placed)), workers)
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
    usable = np.array([not isinstance(o, _SkipSlice) for o in outcomes])
    return volume, usable
