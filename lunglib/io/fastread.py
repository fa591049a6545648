"""The fast DICOM reader: dicomsdl parses the headers, plain pixel bytes go into the volume.

pydicom parses a header element by element in Python, which is most of what
:func:`~lunglib.io.dicom.load_scan` spends on a CT series. dicomsdl parses it in C++. This module
reads each file's :class:`~lunglib.io.series.Header` with dicomsdl and, for a *plain* file, reads
its pixel bytes directly into the HU volume, so a series is read with one header parse and one
``readinto`` per file. The HU conversion and every check after the header are shared with the
pydicom reader, which stays the reference and the fallback.

Exactness is by construction, not by approximation:

* dicomsdl only finds the elements; the values are converted from their raw bytes by the same
  functions the pydicom reader uses (:func:`~lunglib.io.series.raw_decimals`,
  :func:`~lunglib.io.series.raw_uid`, pydicom's own text converter for ImageType), or are plain
  integers (Rows, BitsStored, ...). Anything out of the ordinary -- no ``DICM`` prefix, a header
  dicomsdl cannot parse, a big-endian or deflated dataset, a value of an unexpected type or
  width -- leaves the file to pydicom.
* A file is *plain* when its transfer syntax is native little endian, its pixel layout is one
  frame of one 16-bit sample (:meth:`~lunglib.io.series.PixelLayout.problem`, the rule the
  pydicom reader uses to read pixels without ``pixel_array``), and its last ``12`` (explicit VR)
  or ``8`` (implicit VR) + ``Rows x Columns x 2`` bytes are exactly a PixelData element of that
  length. The stored values are then those bytes, as ``pydicom``'s ``pixel_array`` gives them;
  with fewer bits stored than allocated the bytes are checked to have clean high bits, as the
  pydicom reader checks them.
* dicomsdl is told to stop parsing before the pixel data and is never asked for it: dicomsdl
  0.109 crashes the process (a segmentation fault, not an exception) on a file whose pixel data
  is cut short, such as pydicom's ``MR_truncated.dcm``. The check of the file's end above is
  what keeps such a file away from it.

A series is read with dicomsdl only when every one of its files is plain (:func:`series_problem`);
otherwise :func:`~lunglib.io.dicom.load_scan` reads it with pydicom and records why in the
scan's metadata (``reader``, ``reader_note``). ``load_scan(..., reader="pydicom")`` or the
environment variable ``LUNGLIB_DICOM_READER=pydicom`` forces the reference reader. The series-
level tags taken from one file (modality, description, the de-identified metadata, PatientID
for the pseudonym) are read by pydicom from that file's header, so they are pydicom's values.

dicomsdl's own error log is switched off when it is first used: the files it cannot parse are
read by pydicom, whose findings say what is wrong with them.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pydicom.uid
from pydicom.values import convert_string

from lunglib.io.series import (
    NATIVE_LITTLE_ENDIAN,
    Header,
    PixelLayout,
    ReaderUnfit,
    is_localizer,
    raw_decimals,
    raw_uid,
)

if TYPE_CHECKING:
    import dicomsdl

#: The readers :func:`~lunglib.io.dicom.load_scan` accepts: ``"auto"`` (dicomsdl where it reads
#: the series exactly as pydicom does, pydicom otherwise), ``"dicomsdl"`` (an error where it
#: cannot) and ``"pydicom"`` (the reference).
READERS = ("auto", "dicomsdl", "pydicom")
#: Environment variable naming the reader when ``reader=`` is not given.
READER_ENV = "LUNGLIB_DICOM_READER"

# dicomsdl parses the header up to (not including) this tag: the pixel data stay unread.
_BEFORE_PIXELS = 0x7FE00000
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
_ICON_IMAGE_SEQUENCE = 0x00880200  # holds a PixelData element of its own
# Integers read in one call: TransferSyntaxUID (text), Rows, Columns, BitsAllocated,
# BitsStored, SamplesPerPixel, PixelRepresentation.
_VALUES = [0x00020010, 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280002, 0x00280103]
# The DS (decimal string) and UI elements, converted from their raw bytes.
_IOP, _IPP, _PIXEL_SPACING = 0x00200037, 0x00200032, 0x00280030
_SLOPE, _INTERCEPT = 0x00281053, 0x00281052
_SERIES_UID, _SOP_UID, _IMAGE_TYPE = 0x0020000E, 0x00080018, 0x00080008
_PADDING = (0x00280120, 0x00280121)  # PixelPaddingValue, PixelPaddingRangeLimit
_FRAMES = 0x00280008
_IMPLICIT = str(pydicom.uid.ImplicitVRLittleEndian)
_VR_NONE, _VR_SS, _VR_US = 0, 23, 32  # int(dicomsdl.VR.NONE), int(...SS), int(...US)


def requested_reader(reader: str | None) -> str:
    """The reader asked for: ``reader``, else ``$LUNGLIB_DICOM_READER``, else ``"auto"``.

    Raises
    ------
    ValueError
        When it is not one of :data:`READERS`.
    """
    from_env = reader is None
    choice = (os.environ.get(READER_ENV, "") or "auto") if from_env else reader
    if choice not in READERS:
        where = f" (from ${READER_ENV})" if from_env else ""
        raise ValueError(f"reader must be one of {', '.join(READERS)}, got {choice!r}{where}")
    return choice


@functools.cache
def unavailable() -> str | None:
    """Why the dicomsdl reader cannot be used in this Python (None when it can)."""
    if sys.byteorder != "little":  # the pixel bytes are read as they are stored
        return "this machine is big-endian"
    try:
        import dicomsdl
    except Exception as exc:  # not installed, or a build that does not load on this platform
        return f"dicomsdl cannot be imported ({type(exc).__name__}: {exc})".splitlines()[0]
    # Its errors become QC findings through pydicom; dicomsdl's own log would repeat them.
    dicomsdl.set_loglevel(dicomsdl.LogLevel.DISABLE)
    return None


def _syntax_name(syntax: str) -> str:
    return pydicom.uid.UID(syntax).name if syntax else "missing"


def _little_endian_dataset(syntax: str) -> bool:
    """Whether the dataset (not the pixels) of this transfer syntax is little endian and not
    deflated: native little endian and the encapsulated (compressed) syntaxes."""
    if syntax in NATIVE_LITTLE_ENDIAN:
        return True
    uid = pydicom.uid.UID(syntax)
    try:
        return uid.is_encapsulated and uid.is_little_endian and not uid.is_deflated
    except ValueError:  # not a transfer syntax pydicom knows
        return False


def _int_or_none(value: object) -> int | None:
    """A value dicomsdl converted to an int (or None when absent); anything else raises."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value  # type: ignore[return-value]
    raise ValueError(f"not one integer: {value!r}")


def _padding(
    get: Callable[[int], dicomsdl.DataElement], signed: int | None, explicit: bool
) -> tuple[int, ...]:
    """PixelPaddingValue and PixelPaddingRangeLimit as pydicom gives them: US or SS as written
    (explicit VR) or as PixelRepresentation says (implicit VR, pydicom's rule)."""
    values = []
    for tag in _PADDING:
        elem = get(tag)
        raw = elem.toBytes()
        if not raw:  # absent or empty: pydicom gives no integer either
            continue
        if len(raw) != 2:
            raise ValueError("not one 16-bit value")
        if explicit:
            vr = int(elem.vr())  # an int: comparing dicomsdl's VR objects is slow
            if vr not in (_VR_US, _VR_SS):
                raise ValueError(f"VR {elem.vr()}")
            as_signed = vr == _VR_SS
        else:
            as_signed = signed != 0
        values.append(int.from_bytes(raw, "little", signed=as_signed))
    return tuple(values)


def _pixel_offset(f: BinaryIO, syntax: str, size: tuple[int, int], file_size: int) -> int | None:
    """Where the pixel bytes start when the file ends with exactly one PixelData element of
    ``Rows x Columns x 2`` bytes (None otherwise)."""
    n_bytes = 2 * size[0] * size[1]
    if not 0 < n_bytes < 0xFFFFFFFF:  # 0xFFFFFFFF: undefined length (encapsulated)
        return None
    length = n_bytes.to_bytes(4, "little")
    if syntax == _IMPLICIT:
        headers = [_PIXEL_DATA_TAG + length]
    else:
        headers = [_PIXEL_DATA_TAG + vr + b"\0\0" + length for vr in (b"OW", b"OB")]
    offset = file_size - n_bytes
    start = offset - len(headers[0])
    if start < 132:  # inside the preamble and prefix
        return None
    f.seek(start)
    return offset if f.read(len(headers[0])) in headers else None


def read_header(path: Path, file_size: int) -> Header | str:
    """The file's :class:`Header` parsed by dicomsdl, or why pydicom should read it instead.

    A header of a file whose pixels cannot be read directly (compressed, 8 bits, several
    frames, pixel data missing or cut short, ...) is still returned, its values being exact:
    :attr:`Header.declined` then says why and :attr:`Header.pixel_offset` is None.
    """
    if unavailable() is not None:
        return f"dicomsdl is not usable here ({unavailable()})"
    import dicomsdl

    try:
        with open(path, "rb", buffering=0) as f:
            if f.read(132)[128:] != b"DICM":
                return "no DICM prefix"
            try:
                dset = dicomsdl.open(str(path), load_until=_BEFORE_PIXELS)
            except Exception:  # a header dicomsdl cannot parse; pydicom names the problem
                return "dicomsdl could not parse the header"
            try:
                header = _header(path, dset)
            except Exception:  # a value of an unexpected type or width
                return "an unusual header value"
            if not isinstance(header, Header):
                return header
            if header.declined is None:
                header.pixel_offset = _pixel_offset(f, header.syntax, header.size, file_size)
                if header.pixel_offset is None:
                    header.declined = ("the pixel data is not one Rows x Columns x 2 element at "
                                       "the end of the file (missing, cut short or followed by "
                                       "other data)")
            return header
    except OSError as exc:
        return f"could not be read ({type(exc).__name__})"


def _header(path: Path, dset: dicomsdl.DataSet) -> Header | str:
    """The :class:`Header` of a parsed dataset, or why pydicom should read the file.

    Absent and empty elements give the same values here, as they do in the pydicom reader,
    except where noted.
    """
    syntax, rows, columns, *layout = dset.getValues(_VALUES)
    syntax = syntax if isinstance(syntax, str) else ""
    if not _little_endian_dataset(syntax):
        return f"transfer syntax {_syntax_name(syntax)}"
    get = dset.getDataElement
    series = get(_SERIES_UID).toBytes()
    if not series:  # pydicom says what a file without one is
        return "no SeriesInstanceUID"
    rows, columns, bits_allocated, bits_stored, samples, signed = map(
        _int_or_none, (rows, columns, *layout))
    if syntax in NATIVE_LITTLE_ENDIAN:
        frames = get(_FRAMES)
        value = frames.toBytes()
        # absent: one frame; present but empty: not a number, which pydicom decodes itself
        single_frame = value.strip(b" \0") == b"1" if value else int(frames.vr()) == _VR_NONE
        pixel_layout = PixelLayout(bits_allocated, bits_stored, samples, signed, single_frame)
        declined = pixel_layout.problem()
    else:
        pixel_layout = None
        declined = f"compressed as {_syntax_name(syntax)}"
    if declined is None and get(_ICON_IMAGE_SEQUENCE).length() != 0:
        declined = "an icon image sequence holds a second PixelData element"
    iop, ipp = raw_decimals(get(_IOP).toBytes()), raw_decimals(get(_IPP).toBytes())
    slope, intercept = raw_decimals(get(_SLOPE).toBytes()), raw_decimals(get(_INTERCEPT).toBytes())
    image_type = get(_IMAGE_TYPE).toBytes()
    return Header(
        path=path,
        series_uid=raw_uid(series),
        sop_uid=raw_uid(get(_SOP_UID).toBytes()),
        size=(rows or 0, columns or 0),
        orientation=iop if iop is not None and len(iop) == 6 else None,
        position=ipp if ipp is not None and len(ipp) == 3 else None,
        # pydicom's conversion, skipped when the bytes cannot spell LOCALIZER in any case
        localizer=b"LOCALIZER" in image_type.upper() and is_localizer(
            convert_string(image_type, True)),
        pixel_spacing=raw_decimals(get(_PIXEL_SPACING).toBytes()),
        slope=slope[0] if slope is not None else None,
        intercept=intercept[0] if intercept is not None else None,
        padding=_padding(get, signed, explicit=syntax != _IMPLICIT),
        syntax=syntax,
        layout=pixel_layout,
        reader="dicomsdl",
        declined=declined,
    )


def series_problem(members: list[Header]) -> str | None:
    """Why the dicomsdl reader cannot read this series exactly as pydicom does (None when it
    can): the first reason among its files, with how many files share it."""
    reasons = [
        h.declined or ("read by pydicom" if h.reader != "dicomsdl" else None) for h in members
    ]
    first = next((r for r in reasons if r is not None), None)
    if first is None:
        return None
    return f"{first} ({reasons.count(first)} of {len(members)} files)"


def stored_values(h: Header, out: np.ndarray) -> np.ndarray:
    """Read the plain pixel bytes of ``h`` into ``out`` (int16, C-contiguous) and return them
    as the stored values -- ``out`` itself or its uint16 view -- exactly as pydicom's
    ``pixel_array`` gives them.

    Raises
    ------
    ReaderUnfit
        When the file changed since its header was read, or (fewer bits stored than allocated)
        its bytes use the bits above BitsStored, which pydicom masks or sign-extends.
    """
    layout = h.layout
    assert layout is not None and h.pixel_offset is not None, "not a plain file"
    try:
        with open(h.path, "rb", buffering=0) as f:
            f.seek(h.pixel_offset)
            n_read = f.readinto(out)  # type: ignore[arg-type]  -- its bytes, in place
    except OSError as exc:
        raise ReaderUnfit(f"a file could not be read again ({type(exc).__name__})") from exc
    if n_read != out.nbytes:
        raise ReaderUnfit("a file changed while the series was read")
    raw = out if layout.signed else out.view(np.uint16)
    if not layout.bits_clear(raw):
        raise ReaderUnfit(f"stored values use the bits above BitsStored ({layout.bits_stored})")
    return raw
