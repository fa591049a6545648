"""The dicomsdl reader (lunglib.io.fastread) reads a series exactly as the pydicom reader does --
voxel for voxel, with the same geometry and findings -- or leaves it to pydicom and says why.

Checked on every real series in ``../shared/data``, on pydicom's bundled test files (each file's
header values and pixels, every CT series of the bundle, and the single-frame MR files relabelled
CT to exercise every transfer syntax through ``load_scan``), and on series written here.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataelem import DataElement
from pydicom.uid import ImplicitVRLittleEndian, RLELossless
from test_dicom import gradient_raws, write_series

from lunglib.io import fastread
from lunglib.io.dicom import CTScan, DicomLoadError, list_series, load_scan
from lunglib.io.pixels import decode_slices
from lunglib.io.series import Header, ReaderUnfit, read_headers

BUNDLE = Path(get_testdata_file("CT_small.dcm")).parent
# Header fields that say how a header was read, not what it holds.
_HOW_READ = {"reader", "declined", "pixel_offset", "dataset"}

pytestmark = pytest.mark.skipif(fastread.unavailable() is not None,
                                reason=f"dicomsdl not usable: {fastread.unavailable()}")


def assert_same_scan(fast: CTScan, reference: CTScan) -> None:
    """Everything a scan holds is equal, except the record of which reader read it."""
    assert fast.hu.dtype == reference.hu.dtype == np.int16
    np.testing.assert_array_equal(fast.hu, reference.hu)
    assert fast.spacing == reference.spacing
    assert fast.origin == reference.origin
    np.testing.assert_array_equal(fast.direction, reference.direction)
    corners = np.array([[0, 0, 0], np.asarray(fast.shape) - 1])
    np.testing.assert_array_equal(fast.voxel_to_world(corners), reference.voxel_to_world(corners))
    assert fast.slice_uids == reference.slice_uids
    assert fast.qc == reference.qc
    assert (fast.series_uid, fast.patient_key, fast.source) == (
        reference.series_uid, reference.patient_key, reference.source)
    strip = ("reader", "reader_note")
    assert {k: v for k, v in fast.metadata.items() if k not in strip} == {
        k: v for k, v in reference.metadata.items() if k not in strip}
    assert reference.metadata["reader"] == "pydicom"


def header_values(h: Header) -> str:
    """A header's values as text (``repr`` of floats is exact, and NaN equals NaN here)."""
    return repr({f.name: getattr(h, f.name) for f in fields(Header) if f.name not in _HOW_READ})


# --------------------------------------------------------------------------------------------
# Real series


def _real_series(shared_data: Path) -> list[tuple[Path, str]]:
    """(collection folder, series uid) of every series in the real data."""
    found = []
    for folder in sorted(p for p in shared_data.iterdir() if p.is_dir()):
        try:
            found += [(folder, s.series_uid) for s in list_series(folder, reader="pydicom")]
        except DicomLoadError:  # no DICOM image here (the nodule patches)
            continue
    return found


def test_every_real_series_reads_the_same_with_dicomsdl(shared_data: Path):
    series = _real_series(shared_data)
    # LIDC-IDRI-0001 and Lung-PET-CT-Dx A0002's two reconstructions, at least
    assert len(series) >= 3, f"expected the real series of ../shared/data, found {series}"
    for folder, uid in series:
        reference = load_scan(folder, series_uid=uid, reader="pydicom")
        fast = load_scan(folder, series_uid=uid, reader="dicomsdl")  # raises if it cannot
        assert_same_scan(fast, reference)
        assert fast.metadata["reader"] == "dicomsdl" and "reader_note" not in fast.metadata
        assert fast.shape[0] >= 30


def test_default_reader_on_a_real_patient_folder_is_dicomsdl(lidc_case_dir: Path,
                                                            pet_ct_dx_dir: Path):
    for folder in (lidc_case_dir, pet_ct_dx_dir):  # beside the images: XML, CSV, a LICENSE
        scan = load_scan(folder)
        assert scan.metadata["reader"] == "dicomsdl"
        assert scan.describe()["reader"] == "dicomsdl"  # shown where the scan is summarized
        assert_same_scan(scan, load_scan(folder, reader="pydicom"))
        assert list_series(folder) == list_series(folder, reader="pydicom")


# --------------------------------------------------------------------------------------------
# pydicom's bundled test files


def _bundled_files() -> list[Path]:
    return sorted(Path(f) for f in get_testdata_files() if Path(f).is_file())


# pydicom's own warnings about its deliberately odd test files
bundle_warnings = pytest.mark.filterwarnings("ignore:Expected explicit VR", "ignore:Invalid value")


@bundle_warnings
def test_each_bundled_file_gives_the_same_header_and_pixels():
    """Per file: dicomsdl's header values equal pydicom's; where dicomsdl reads the pixels
    (plain files), the HU equal pydicom's; every other file says why it is left to pydicom."""
    plain, declined = {}, {}
    for path in _bundled_files():
        outcomes = []
        for reader in ("pydicom", "dicomsdl"):
            try:
                outcomes.append(read_headers(path, reader=reader))
            except DicomLoadError as error:
                outcomes.append(str(error))
        reference, fast = outcomes
        if isinstance(reference, str):  # not an image: the same error, the same findings
            assert fast == reference, path.name
            continue
        (ref_header,), ref_findings = reference
        (header,), findings = fast
        assert findings == ref_findings == [], path.name
        assert header_values(header) == header_values(ref_header), path.name
        if header.declined is not None:
            declined[path.name] = header.declined
            continue
        assert header.reader == "dicomsdl" and header.pixel_offset is not None
        ref_qc: list = []
        ref_volume, ref_usable = decode_slices("uid", [ref_header], ref_header, 1, ref_qc)
        qc: list = []
        try:
            volume, usable = decode_slices("uid", [header], header, 1, qc)
        except ReaderUnfit as unfit:  # bits above BitsStored in use: pydicom masks them
            declined[path.name] = str(unfit)
            continue
        np.testing.assert_array_equal(volume, ref_volume, err_msg=path.name)
        assert (usable.tolist(), qc) == (ref_usable.tolist(), ref_qc), path.name
        plain[path.name] = header.syntax
    # The bundle's plain images in both native syntaxes, the CT and MR series of its DICOMDIR
    # tests among them, are read by dicomsdl ...
    assert {"MR_small_implicit.dcm", "17106", "2392", "4919"} <= set(plain)
    assert set(plain.values()) == {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
    # ... and every other image is left to pydicom, with the reason.
    expected = {
        "MR_small_bigendian.dcm": "transfer syntax Explicit VR Big Endian",
        "MR_small_RLE.dcm": "compressed as RLE Lossless",
        "MR_small_jp2klossless.dcm": "compressed as JPEG 2000 Image Compression (Lossless Only)",
        "MR_truncated.dcm": "the pixel data is not one Rows x Columns x 2 element",
        "MR_small_padded.dcm": "the pixel data is not one Rows x Columns x 2 element",
        # a DataSetTrailingPadding element after the pixel data
        "CT_small.dcm": "the pixel data is not one Rows x Columns x 2 element",
        "MR_small.dcm": "the pixel data is not one Rows x Columns x 2 element",
        "rtdose.dcm": "BitsAllocated 32, not 16",
        "examples_palette.dcm": "BitsAllocated 8, not 16",
        "examples_overlay.dcm": "an icon image sequence holds a second PixelData element",
        "image_dfl.dcm": "transfer syntax Deflated Explicit VR Little Endian",
    }
    for name, reason in expected.items():
        assert declined.get(name, "").startswith(reason), (name, declined.get(name))


@bundle_warnings
def test_the_whole_bundle_and_each_of_its_ct_series_load_the_same():
    """``load_scan`` on pydicom's test-file folder: ~190 files of every kind, CT series among
    them; the default series and every CT series, whichever reader reads it, are the same."""
    fast, reference = load_scan(BUNDLE), load_scan(BUNDLE, reader="pydicom")
    assert_same_scan(fast, reference)
    assert fast.metadata["reader"] == "dicomsdl"
    assert list_series(BUNDLE) == list_series(BUNDLE, reader="pydicom")
    readers = {}
    for info in list_series(BUNDLE, reader="pydicom"):
        if info.modality != "CT":
            continue
        outcomes = []
        for reader in ("pydicom", "auto"):
            try:
                outcomes.append(load_scan(BUNDLE, series_uid=info.series_uid, reader=reader,
                                          allow_single_slice=True))
            except DicomLoadError as error:
                outcomes.append(str(error))
        reference, scan = outcomes
        if isinstance(reference, str):
            assert scan == reference
            continue
        assert_same_scan(scan, reference)
        readers[info.series_uid] = (scan.metadata["reader"], scan.metadata.get("reader_note"))
    used = [reader for reader, _ in readers.values()]
    assert used.count("dicomsdl") >= 2  # the DICOMDIR tests' two axial CT series
    assert used.count("pydicom") >= 1  # CT_small (trailing padding), the JPEG 2000 CTs
    for reader, note in readers.values():
        assert (note is None) == (reader == "dicomsdl")


_MODALITY = {  # the (0008,0060) Modality element "MR" in each encoding
    "explicit_le": b"\x08\x00\x60\x00CS\x02\x00",
    "implicit_le": b"\x08\x00\x60\x00\x02\x00\x00\x00",
    "explicit_be": b"\x00\x08\x00\x60CS\x00\x02",
}


def _relabelled_ct(name: str, folder: Path) -> Path:
    """The bundled file, byte for byte, except that its Modality reads CT instead of MR."""
    data = next(BUNDLE.rglob(name)).read_bytes()
    hits = [prefix for prefix in _MODALITY.values() if data.count(prefix + b"MR") == 1]
    assert len(hits) == 1, name
    out = folder / name
    out.write_bytes(data.replace(hits[0] + b"MR", hits[0] + b"CT"))
    return out


@pytest.mark.parametrize(("name", "reader", "note"), [
    ("4981", "dicomsdl", None),  # dicomdirtests/98892003/MR2, explicit VR
    ("MR_small_implicit.dcm", "dicomsdl", None),
    ("MR_small.dcm", "pydicom", "the pixel data is not one Rows x Columns x 2 element"),
    ("MR_small_bigendian.dcm", "pydicom", "transfer syntax Explicit VR Big Endian (1 of 1 files)"),
    ("MR_small_expb.dcm", "pydicom", "transfer syntax Explicit VR Big Endian (1 of 1 files)"),
    ("MR_small_RLE.dcm", "pydicom", "compressed as RLE Lossless (1 of 1 files)"),
    ("MR_small_padded.dcm", "pydicom", "the pixel data is not one Rows x Columns x 2 element"),
    ("MR_truncated.dcm", "pydicom", "the pixel data is not one Rows x Columns x 2 element"),
])
def test_each_transfer_syntax_through_load_scan(tmp_path: Path, name: str, reader: str,
                                                note: str | None):
    """pydicom's single-frame MR files as one-slice CT series: plain ones are read by dicomsdl,
    the others (big endian, compressed, padded or truncated pixel data) by pydicom, with the
    reason; the scan is the same either way. The truncated file is the one that crashes
    dicomsdl 0.109 when its pixel data is asked for."""
    path = _relabelled_ct(name, tmp_path)
    outcomes = []
    for choice in ("pydicom", "auto"):
        try:
            outcomes.append(load_scan(path, allow_single_slice=True, reader=choice))
        except DicomLoadError as error:
            outcomes.append(str(error))
    reference, scan = outcomes
    if name == "MR_truncated.dcm":  # pydicom cannot read its pixels either: the same error
        assert isinstance(reference, str) and scan == reference
        with pytest.raises(DicomLoadError, match="the pixel data is not one Rows x Columns"):
            load_scan(path, allow_single_slice=True, reader="dicomsdl")
        return
    assert_same_scan(scan, reference)
    assert scan.metadata["reader"] == reader
    assert scan.metadata.get("reader_note", "dicomsdl not used: ").startswith(
        f"dicomsdl not used: {note or ''}")
    assert str(path.parent) not in str(scan.metadata)  # the note names no file


# --------------------------------------------------------------------------------------------
# Written series: the cases real scanners write


def _set_padding(paths: list[Path], vr: str, value: int) -> None:
    """Write PixelPaddingValue with this VR (pydicom would otherwise pick US or SS itself)."""
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.add(DataElement(0x00280120, vr, value))
        ds.save_as(path)


@pytest.mark.parametrize("case", ["int16", "uint16_slope", "padding_us", "padding_ss",
                                  "padding_us_for_signed", "implicit", "bits12", "bits12_signed"])
def test_written_series_read_the_same(tmp_path: Path, case: str):
    """The layouts, rescales and paddings scanners write, dicomsdl against pydicom."""
    raws = gradient_raws(6, shape=(24, 20))
    kwargs: dict = {}
    if case in ("uint16_slope", "padding_us"):
        raws = [r.astype(np.uint16) for r in raws]
    if case == "uint16_slope":
        kwargs = {"slope": 2.5, "intercept": -1000.25}
    padded = case.startswith("padding") or case == "implicit"
    if padded and case != "padding_us":
        kwargs = {"intercept": 0.0}
    for raw in raws:  # stored 0 (or -1024) reads -1024 HU: air only as padding
        raw[:3] = (0 if case == "padding_us" else -1024) if padded else raw[:3]
    if case.startswith("bits12"):
        signed = case.endswith("signed")
        raws = [np.clip(r, -2048 if signed else 0, 2047).astype(np.int16 if signed else np.uint16)
                for r in raws]
        kwargs = {"BitsStored": 12, "HighBit": 11}
    paths = write_series(tmp_path, raws, [2.0 * k for k in range(6)], **kwargs)
    if case == "padding_us":
        _set_padding(paths, "US", 0)
    elif case == "padding_ss":
        _set_padding(paths, "SS", -1024)
    elif case in ("padding_us_for_signed", "implicit"):
        _set_padding(paths, "US", 2**16 - 1024)  # -1024 written as US, as GE scanners do
    if case == "implicit":
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(path, enforce_file_format=True)
        assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    scan, reference = load_scan(tmp_path), load_scan(tmp_path, reader="pydicom")
    assert_same_scan(scan, reference)
    assert scan.metadata["reader"] == "dicomsdl"
    if padded:
        assert (scan.hu[:, :3] == -1000).all() and (scan.hu[:, 3:] > -1000).all()


def test_bits_above_bits_stored_leave_the_series_to_pydicom(tmp_path: Path):
    raws = [np.full((6, 5), 1000, np.uint16) for _ in range(3)]
    raws[1][0] |= 0x3000  # stray bits above the 12 stored ones, which pydicom clears
    write_series(tmp_path, raws, [0.0, 2.0, 4.0], BitsStored=12, HighBit=11)
    scan = load_scan(tmp_path)
    assert scan.metadata["reader"] == "pydicom"
    assert scan.metadata["reader_note"] == (
        "dicomsdl not used: stored values use the bits above BitsStored (12)")
    assert_same_scan(scan, load_scan(tmp_path, reader="pydicom"))
    assert (scan.hu == 1000 - 1024).all()


def test_a_compressed_file_in_a_plain_series_leaves_it_to_pydicom(tmp_path: Path):
    paths = write_series(tmp_path, gradient_raws(4), [0.0, 2.0, 4.0, 6.0])
    ds = pydicom.dcmread(paths[2])
    ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.save_as(paths[2], enforce_file_format=True)
    scan = load_scan(tmp_path)
    assert_same_scan(scan, load_scan(tmp_path, reader="pydicom"))
    assert scan.metadata["reader"] == "pydicom"
    assert scan.metadata["reader_note"] == (
        "dicomsdl not used: compressed as RLE Lossless (1 of 4 files)")
    with pytest.raises(DicomLoadError, match=r"compressed as RLE Lossless \(1 of 4 files\)"):
        load_scan(tmp_path, reader="dicomsdl")


# --------------------------------------------------------------------------------------------
# Choosing the reader


def test_reader_argument_environment_and_availability(tmp_path: Path, monkeypatch):
    write_series(tmp_path, gradient_raws(3), [0.0, 2.0, 4.0])
    assert load_scan(tmp_path).metadata["reader"] == "dicomsdl"
    forced = load_scan(tmp_path, reader="pydicom")
    assert forced.metadata["reader"] == "pydicom" and "reader_note" not in forced.metadata
    monkeypatch.setenv(fastread.READER_ENV, "pydicom")
    assert load_scan(tmp_path).metadata["reader"] == "pydicom"
    assert load_scan(tmp_path, reader="auto").metadata["reader"] == "dicomsdl"  # argument wins
    monkeypatch.setenv(fastread.READER_ENV, "gdcm")
    with pytest.raises(ValueError, match=r"got 'gdcm' \(from \$LUNGLIB_DICOM_READER\)"):
        load_scan(tmp_path)
    monkeypatch.delenv(fastread.READER_ENV)
    with pytest.raises(ValueError, match="reader must be one of auto, dicomsdl, pydicom"):
        list_series(tmp_path, reader="fast")

    monkeypatch.setattr(fastread, "unavailable", lambda: "dicomsdl cannot be imported (test)")
    scan = load_scan(tmp_path)
    assert scan.metadata["reader"] == "pydicom"
    assert scan.metadata["reader_note"] == "dicomsdl not used: dicomsdl cannot be imported (test)"
    with pytest.raises(DicomLoadError, match="reader='dicomsdl' cannot read") as info:
        load_scan(tmp_path, reader="dicomsdl")
    assert str(tmp_path) in str(info.value)
    assert len(list_series(tmp_path)) == 1


def test_pydicom_failing_on_a_file_dicomsdl_read_leaves_the_series_to_pydicom(
    tmp_path: Path, monkeypatch
):
    """The series-level tags (modality, description, ...) come from one file read by pydicom;
    should pydicom fail there after dicomsdl did not, pydicom reads the whole series."""
    write_series(tmp_path, gradient_raws(3), [0.0, 2.0, 4.0])
    real = pydicom.dcmread

    def header_only_fails(path, *args, **kwargs):
        if kwargs.get("stop_before_pixels"):
            raise ValueError("a header pydicom cannot parse")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", header_only_fails)
    scan = load_scan(tmp_path)
    assert scan.metadata["reader"] == "pydicom"
    assert scan.metadata["reader_note"] == (
        "dicomsdl not used: pydicom could not read the header of a file dicomsdl read "
        "(ValueError)")
