"""Decoding a series' pixel data into Hounsfield units.

The decoding stages of :func:`lunglib.io.dicom.load_scan`:

* :func:`check_decoders` refuses a compressed series at once, with the ``pip install`` that
  adds a decoder, instead of failing on every slice;
* :func:`decode_slices` converts every slice straight into one int16 volume with
  ``RescaleSlope``/``RescaleIntercept``; values below the lowest CT number and the scanner's
  padding (``PixelPaddingValue``) become air. A file whose pixels cannot be read is skipped and
  recorded; only a series without any usable slice is an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydicom
import pydicom.uid
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder, pixel_array

from lunglib.io.qc import QCFinding
from lunglib.io.series import DicomLoadError, Header, decimals, short_error, thread_map

AIR_HU = -1000
LOWEST_CT_HU = -1024
# pip packages that give pydicom a decoder for each family of compressed transfer syntaxes.
_DECODER_PACKAGES: tuple[tuple[Sequence[str], str], ...] = (
    (pydicom.uid.JPEG2000TransferSyntaxes, "pylibjpeg pylibjpeg-openjpeg"),
    (pydicom.uid.JPEGLSTransferSyntaxes, "pyjpegls"),
    (pydicom.uid.JPEGTransferSyntaxes, "pylibjpeg pylibjpeg-libjpeg"),
    (pydicom.uid.RLETransferSyntaxes, "pylibjpeg pylibjpeg-rle"),
)
_NATIVE_LITTLE_ENDIAN = (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian)


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


def _check_decoder(h: Header) -> None:
    """Raise when ``h`` is compressed and pydicom has no decoder for its transfer syntax."""
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


def check_decoders(members: list[Header]) -> None:
    """Raise at once when the series is compressed and no decoder reads it.

    One file per transfer syntax is checked (the first file of the series that uses it), and
    the error names that file and the ``pip install`` that adds a decoder.

    Raises
    ------
    DicomLoadError
        For the first transfer syntax in the series without an installed decoder.
    """
    first_by_syntax = {str(_transfer_syntax(h.ds)): h for h in reversed(members)}
    for h in first_by_syntax.values():
        _check_decoder(h)


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
    from its raw bytes when pydicom has not converted it yet (as ``decimals`` does)."""
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
    itself; here only the five tags that decide the layout are read. With fewer bits stored
    than allocated (12 of 16 is common) pydicom clears the unused high bits; the view is used
    only when they are clear already (or, for signed pixels, a proper sign extension), so the
    values are the same. Anything else -- compressed, big endian, 8 or 32 bits, several frames
    or samples, too few bytes, unused bits in use -- returns None and goes to pydicom.
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


def _slice_to_hu(h: Header, out: np.ndarray) -> bool:
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
        reason = f"pixel data is damaged or truncated ({short_error(exc)})"
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
    slope, intercept = decimals(ds, "RescaleSlope"), decimals(ds, "RescaleIntercept")
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
        slope, intercept = decimals(h.ds, "RescaleSlope"), decimals(h.ds, "RescaleIntercept")
        if slope is None and intercept is None:
            absent.append(h)
            continue
        values = (slope[0] if slope else 1.0, intercept[0] if intercept else 0.0)
        if not all(np.isfinite(values)) or values[0] == 0:
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
        h.ds.RescaleSlope, h.ds.RescaleIntercept = slope, intercept
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
