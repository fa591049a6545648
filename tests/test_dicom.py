"""lunglib.io.dicom on real series and on series written here with pydicom, one defect at a time."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    MRImageStorage,
    generate_uid,
)
from scipy import ndimage

from lunglib.io.dicom import AIR_HU, CTScan, DicomLoadError, list_series, load_scan, load_scans
from lunglib.io.qc import QCFinding

SECRET_NAME = "SECRET^NAME"
SECRET_ID = "SECRET-ID"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FEET_FIRST = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # row axis flipped: the slice normal points to -z


# --------------------------------------------------------------------------------------------
# Writing test series


def make_slice(
    raw: np.ndarray,
    position: tuple[float, float, float],
    *,
    series_uid: str,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    instance: int = 1,
    orientation: tuple[float, ...] = AXIAL,
    pixel_spacing: tuple[float, float] = (0.75, 0.8),
    intercept: float | None = -1024.0,
    slope: float | None = 1.0,
    modality: str = "CT",
    series_number: int = 1,
    description: str = "test series",
    **tags: object,
) -> FileDataset:
    """One CT (or other modality) image with the geometry tags a scanner writes."""
    meta = FileMetaDataset()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = SECRET_NAME
    ds.PatientID = SECRET_ID
    ds.PatientBirthDate = "19400101"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(pixel_spacing)
    ds.SliceThickness = 2.5
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if slope is not None:
        ds.RescaleSlope = slope
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = raw.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if raw.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(raw).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def write_series(
    folder: Path,
    raws: list[np.ndarray],
    z_positions: list[float],
    *,
    names: list[str] | None = None,
    instances: list[int] | None = None,
    orientation: tuple[float, ...] = AXIAL,
    origin_xy: tuple[float, float] = (-100.0, -120.0),
    series_uid: str | None = None,
    **kwargs: object,
) -> list[Path]:
    """Write one series: slice k holds ``raws[k]`` at distance ``z_positions[k]`` along the
    slice normal from an in-plane origin (so any orientation gets correct positions)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(row, col)
    base = np.array([origin_xy[0], origin_xy[1], 0.0])
    names = names or [f"slice{k:03d}.dcm" for k in range(len(raws))]
    instances = instances or list(range(1, len(raws) + 1))
    paths = []
    for raw, z, name, number in zip(raws, z_positions, names, instances, strict=True):
        position = tuple(base + z * normal)
        ds = make_slice(raw, position, series_uid=series_uid, instance=number,
                        orientation=orientation, **kwargs)
        ds.save_as(folder / name, enforce_file_format=True)
        paths.append(folder / name)
    return paths


def gradient_raws(n: int, shape: tuple[int, int] = (16, 20), step: int = 10) -> list[np.ndarray]:
    """Slice k is uniform at raw value 1000 + step * k (HU -24 + step * k), with a marker pixel
    that tells rows from columns."""
    raws = []
    for k in range(n):
        raw = np.full(shape, 1000 + step * k, dtype=np.int16)
        raw[1, 2] = 3000
        raws.append(raw)
    return raws


@pytest.fixture()
def gradient_series(tmp_path: Path) -> tuple[Path, list[Path], list[float]]:
    z = [-50.0 + 2.5 * k for k in range(8)]
    paths = write_series(tmp_path / "case", gradient_raws(8), z)
    return tmp_path / "case", paths, z


# --------------------------------------------------------------------------------------------
# Real files


def test_ct_small_single_slice_needs_permission_and_keeps_hu():
    path = Path(get_testdata_file("CT_small.dcm"))
    with pytest.raises(DicomLoadError, match="single usable slice") as info:
        load_scan(path)
    assert path.name in str(info.value)

    scan = load_scan(path, allow_single_slice=True)
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(int) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert scan.hu.dtype == np.int16
    assert scan.shape == (1, 128, 128)
    np.testing.assert_array_equal(scan.hu[0], expected)
    assert scan.spacing == pytest.approx((float(ds.SliceThickness), *map(float, ds.PixelSpacing)))
    np.testing.assert_allclose(scan.origin, [float(v) for v in ds.ImagePositionPatient])


def _central_lung_and_air(scan: CTScan) -> tuple[np.ndarray, np.ndarray]:
    """Lung parenchyma (air-like voxels enclosed by the body) and air outside the body, on the
    central slice, from plain thresholds and morphology."""
    mid = scan.hu[scan.shape[0] // 2]
    body = ndimage.binary_opening(mid > -400, iterations=2)
    labels, n = ndimage.label(body)
    largest = np.argmax(ndimage.sum(body, labels, range(1, n + 1))) + 1
    body = ndimage.binary_fill_holes(labels == largest)
    lung = body & (mid < -400)
    yy, xx = np.mgrid[: mid.shape[0], : mid.shape[1]]
    centre = np.array(mid.shape) / 2
    in_fov = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < (0.45 * mid.shape[0]) ** 2
    outside = in_fov & ~ndimage.binary_dilation(body, iterations=10)
    return mid[lung], mid[outside]


def _assert_ordered_uniform(scan: CTScan, folder: Path) -> None:
    by_uid = {}
    for f in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        by_uid[str(ds.SOPInstanceUID)] = np.array(ds.ImagePositionPatient, float)
    positions = [by_uid[u] for u in scan.slice_uids]
    z_along_normal = np.array([p @ scan.direction[:, 2] for p in positions])
    steps = np.diff(z_along_normal)
    assert (steps > 0).all()
    np.testing.assert_allclose(steps, scan.spacing[0], rtol=1e-3)
    for k in (0, len(positions) // 2, len(positions) - 1):
        np.testing.assert_allclose(scan.voxel_to_world((k, 0, 0)), positions[k], atol=1e-3)


def test_lidc_series_has_real_hu_and_geometry(lidc_case_dir: Path):
    scan = load_scan(lidc_case_dir)  # the readers' XML sits beside the images
    assert scan.shape == (133, 512, 512)
    assert scan.spacing == pytest.approx((2.5, 0.703125, 0.703125), rel=1e-4)
    assert [f for f in scan.qc if f.severity != "info"] == []
    lung, air = _central_lung_and_air(scan)
    assert lung.size > 10_000
    assert -950 <= np.median(lung) <= -700
    assert -1030 <= np.median(air) <= -950
    _assert_ordered_uniform(scan, lidc_case_dir)


def test_lidc_series_matches_simpleitk(lidc_case_dir: Path):
    import SimpleITK as sitk
    scan = load_scan(lidc_case_dir)
    series_dir = next(lidc_case_dir.rglob("*.dcm")).parent
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    image = reader.Execute()
    reference = sitk.GetArrayFromImage(image)
    assert (reference < -1024).any()  # this scanner writes -2048 outside its field of view
    np.testing.assert_array_equal(scan.hu, np.where(reference < -1024, AIR_HU, reference))
    np.testing.assert_allclose(scan.spacing[::-1], image.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(scan.origin, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(scan.direction.ravel(), image.GetDirection(), atol=1e-6)


def test_two_series_study_default_choice_and_listing(pet_ct_dx_dir: Path):
    series = list_series(pet_ct_dx_dir)
    assert len(series) == 2
    assert {s.convolution_kernel for s in series} == {"B70f", "B40f"}
    assert all(s.modality == "CT" and s.axial and s.n_images == 30 for s in series)
    # Equal slice counts: the lowest SeriesNumber is the documented tie-break.
    assert series[0].series_number < series[1].series_number

    scan = load_scan(pet_ct_dx_dir)
    assert scan.series_uid == series[0].series_uid
    note = next(f for f in scan.qc if f.code == "several_series")
    assert series[1].series_uid in note.message
    assert scan.shape == (30, 512, 512)
    lung, air = _central_lung_and_air(scan)
    assert -950 <= np.median(lung) <= -700
    assert -1030 <= np.median(air) <= -950
    _assert_ordered_uniform(scan, pet_ct_dx_dir)

    other = load_scan(pet_ct_dx_dir, series_description=series[1].convolution_kernel)
    assert other.series_uid == series[1].series_uid
    assert load_scan(pet_ct_dx_dir, series_uid=series[1].series_uid).series_uid == other.series_uid
    with pytest.raises(DicomLoadError, match="2 series with a description") as info:
        load_scan(pet_ct_dx_dir, series_description="ThoraxRoutine")
    assert series[0].series_uid in str(info.value) and series[1].series_uid in str(info.value)


# --------------------------------------------------------------------------------------------
# Geometry on written series


def test_order_ignores_file_names_and_instance_numbers(tmp_path: Path):
    n = 9
    z = [10.0 + 3.0 * k for k in range(n)]
    raws = gradient_raws(n)
    names = [f"img{k}.dcm" for k in random.Random(3).sample(range(100, 200), n)]
    write_series(tmp_path, raws, z, names=names, instances=list(range(n, 0, -1)))
    scan = load_scan(tmp_path)
    assert scan.shape == (n, 16, 20)
    np.testing.assert_array_equal(scan.hu[:, 0, 0], [r[0, 0] - 1024 for r in raws])
    assert scan.spacing[0] == pytest.approx(3.0)
    assert scan.hu[0, 1, 2] == 3000 - 1024  # rows are y, columns are x


def test_positions_decreasing_with_instance_number_still_sorted(tmp_path: Path):
    z = [100.0 - 5.0 * k for k in range(6)]  # InstanceNumber 1 is the top slice
    raws = gradient_raws(6)
    write_series(tmp_path, raws, z)
    scan = load_scan(tmp_path)
    np.testing.assert_array_equal(scan.hu[:, 0, 0], [r[0, 0] - 1024 for r in raws[::-1]])
    assert scan.origin[2] == pytest.approx(75.0)
    assert scan.voxel_to_world((5, 0, 0))[2] == pytest.approx(100.0)


def test_feet_first_orientation_matches_simpleitk(tmp_path: Path):
    import SimpleITK as sitk
    z = [2.0 * k for k in range(7)]
    raws = gradient_raws(7)
    paths = write_series(tmp_path, raws, z, orientation=FEET_FIRST)
    scan = load_scan(tmp_path)
    assert scan.direction[2, 2] == pytest.approx(-1.0)  # slice index runs feet-ward here
    np.testing.assert_array_equal(scan.hu[:, 0, 0], [r[0, 0] - 1024 for r in raws])
    for k, path in enumerate(paths):
        ipp = np.array(pydicom.dcmread(path).ImagePositionPatient, float)
        np.testing.assert_allclose(scan.voxel_to_world((k, 0, 0)), ipp, atol=1e-4)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    image = reader.Execute()
    np.testing.assert_array_equal(scan.hu, sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(scan.origin, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(scan.direction.ravel(), image.GetDirection(), atol=1e-6)


def test_world_voxel_round_trip_agrees_with_simpleitk(tmp_path: Path):
    angle = np.deg2rad(12)  # an oblique acquisition, to make every matrix entry count
    orientation = (np.cos(angle), np.sin(angle), 0.0, -np.sin(angle), np.cos(angle), 0.0)
    write_series(tmp_path, gradient_raws(5), [1.5 * k for k in range(5)],
                 orientation=orientation, pixel_spacing=(0.6, 0.9))
    scan = load_scan(tmp_path)
    image = scan.to_sitk()
    rng = np.random.default_rng(0)
    zyx = rng.uniform([0, 0, 0], scan.shape, size=(20, 3))
    xyz = scan.voxel_to_world(zyx)
    np.testing.assert_allclose(scan.world_to_voxel(xyz), zyx, atol=1e-9)
    for point, index in zip(xyz, zyx, strict=True):
        np.testing.assert_allclose(scan.voxel_to_world(index), point)
        sitk_index = image.TransformPhysicalPointToContinuousIndex(tuple(point))
        np.testing.assert_allclose(sitk_index[::-1], index, atol=1e-6)


def test_missing_slice_is_filled_and_known_slices_keep_their_place(
    gradient_series: tuple[Path, list[Path], list[float]],
):
    folder, paths, z = gradient_series
    full = load_scan(folder)
    dropped = paths[3]
    dropped.unlink()
    scan = load_scan(folder)
    assert scan.shape == full.shape
    assert scan.spacing == pytest.approx(full.spacing)
    finding = next(f for f in scan.qc if f.code == "missing_slices")
    assert "1 slice(s) missing" in finding.message
    assert f"{z[2]:.2f}..{z[4]:.2f} mm" in finding.message
    assert f"1 of {len(paths)} slices are linear interpolations" in finding.message
    assert scan.slice_uids[3] == ""
    # The filled slice is the linear interpolation of its neighbours: on this gradient, exact.
    np.testing.assert_array_equal(scan.hu[3], full.hu[3])
    for k, path in enumerate(paths):
        if path == dropped:
            continue
        ds = pydicom.dcmread(path)
        assert scan.slice_uids[k] == ds.SOPInstanceUID
        np.testing.assert_allclose(scan.voxel_to_world((k, 0, 0)),
                                   [float(v) for v in ds.ImagePositionPatient], atol=1e-4)
        np.testing.assert_array_equal(scan.hu[k], full.hu[k])


def test_uneven_spacing_is_resampled_over_the_same_extent(tmp_path: Path):
    z = [0.0, 2.0, 4.0, 6.0, 9.0, 11.0, 13.0]
    paths = write_series(tmp_path, gradient_raws(7), z)
    scan = load_scan(tmp_path)
    finding = next(f for f in scan.qc if f.code == "uneven_spacing")
    assert "6.00..9.00 mm" in finding.message
    first = [float(v) for v in pydicom.dcmread(paths[0]).ImagePositionPatient]
    last = [float(v) for v in pydicom.dcmread(paths[-1]).ImagePositionPatient]
    np.testing.assert_allclose(scan.voxel_to_world((0, 0, 0)), first, atol=1e-4)
    np.testing.assert_allclose(scan.voxel_to_world((scan.shape[0] - 1, 0, 0)), last, atol=1e-4)
    assert (scan.shape[0] - 1) * scan.spacing[0] == pytest.approx(13.0)
    # HU grows linearly with position (10 per slice, 5 per mm) everywhere on the new grid.
    grid_z = np.array([scan.voxel_to_world((k, 0, 0))[2] for k in range(scan.shape[0])])
    expected = np.interp(grid_z, z, [1000 + 10 * k - 1024 for k in range(7)])
    np.testing.assert_allclose(scan.hu[:, 0, 0], expected, atol=0.51)


def test_gantry_tilt_is_recorded(tmp_path: Path):
    folder = tmp_path / "tilted"
    raws = gradient_raws(6)
    for k, raw in enumerate(raws):
        ds = make_slice(raw, (-100.0, -120.0 + 1.5 * k, 2.5 * k), series_uid="1.2.3.4.5",
                        instance=k + 1)
        folder.mkdir(exist_ok=True)
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
    scan = load_scan(folder)
    assert any(f.code == "gantry_tilt" for f in scan.qc)


# --------------------------------------------------------------------------------------------
# HU conversion


def test_missing_rescale_is_recorded_and_raw_values_kept(tmp_path: Path):
    raws = gradient_raws(3)
    write_series(tmp_path, raws, [0.0, 1.0, 2.0], intercept=None, slope=None)
    scan = load_scan(tmp_path)
    np.testing.assert_array_equal(scan.hu, np.stack(raws))
    assert [f.code for f in scan.qc] == ["missing_rescale"]


def test_rescale_slope_and_fractional_intercept(tmp_path: Path):
    raws = [np.array([[0, 100], [500, 1001]], dtype=np.uint16)] * 2
    write_series(tmp_path, raws, [0.0, 1.0], slope=2.0, intercept=-1000.5)
    scan = load_scan(tmp_path)
    np.testing.assert_array_equal(scan.hu[0], np.rint(raws[0] * 2.0 - 1000.5))
    assert scan.hu[0, 0, 0] == -1000  # -1000.5 rounds to the even -1000


def test_padding_values_become_air(tmp_path: Path):
    raw = np.full((12, 12), 1100, dtype=np.uint16)
    raw[:2, :] = 0  # padding at a stored value that would read as -1024, inside the CT range
    raw[-2:, :] = 10  # real data just above it
    write_series(tmp_path / "pad", [raw, raw], [0.0, 1.0], PixelPaddingValue=0)
    scan = load_scan(tmp_path / "pad")
    assert (scan.hu[:, :2] == AIR_HU).all()
    assert (scan.hu[:, -2:] == 10 - 1024).all()
    assert (scan.hu[:, 4] == 1100 - 1024).all()

    signed = np.full((12, 12), 50, dtype=np.int16)
    signed[:3] = -2000  # the "-2000 outside the scan circle" style, intercept 0
    write_series(tmp_path / "circle", [signed, signed], [0.0, 1.0], intercept=0.0)
    scan = load_scan(tmp_path / "circle")
    assert (scan.hu[:, :3] == AIR_HU).all() and (scan.hu[:, 3:] == 50).all()

    extreme = np.full((12, 12), 1500, dtype=np.int16)
    extreme[0] = -32768  # with intercept -1024 this would wrap around in int16 arithmetic
    extreme[1] = 32767
    write_series(tmp_path / "extreme", [extreme, extreme], [0.0, 1.0])
    scan = load_scan(tmp_path / "extreme")
    assert (scan.hu[:, 0] == AIR_HU).all()
    assert (scan.hu[:, 1] == 32767 - 1024).all() and (scan.hu[:, 2:] == 1500 - 1024).all()


@pytest.mark.parametrize("signed", [False, True])
def test_fewer_bits_stored_read_as_pydicom_reads_them(tmp_path: Path, signed: bool):
    """12 of 16 bits stored: clean high bits, and high bits pydicom must clear or sign-extend."""
    dtype = np.int16 if signed else np.uint16
    values = [-2000, -1, 0, 1500, 2047] if signed else [0, 24, 1024, 2500, 4095]
    clean = np.resize(np.array(values, dtype=dtype), (6, 5))
    dirty = clean.copy()
    if signed:
        dirty[0] = np.array(values, np.int16) & 0x0FFF  # not sign-extended: positive in int16
    else:
        dirty[0] |= 0x3000  # stray bits above the 12 stored ones
    paths = write_series(tmp_path, [clean, dirty], [0.0, 2.0], BitsStored=12, HighBit=11,
                         intercept=0.0 if signed else -1024.0)
    scan = load_scan(tmp_path)
    offset = 0 if signed else -1024
    expected = [pydicom.dcmread(p).pixel_array.astype(np.int32) + offset for p in paths]
    np.testing.assert_array_equal(expected[1], expected[0])  # pydicom: the same image twice
    expected_hu = np.where(np.stack(expected) < -1024, AIR_HU, np.stack(expected))
    np.testing.assert_array_equal(scan.hu, expected_hu)


# --------------------------------------------------------------------------------------------
# Bad input


def test_missing_folder_empty_folder_and_no_dicom(tmp_path: Path):
    with pytest.raises(DicomLoadError, match="no such file or folder"):
        load_scan(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomLoadError, match="empty"):
        load_scan(tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.dat").write_text("not an image")
    (junk / "readme.xml").write_text("<xml/>")
    with pytest.raises(DicomLoadError, match="no readable DICOM image") as info:
        load_scan(junk)
    assert "notes.dat" in str(info.value)


def test_truncated_file_is_skipped_and_recorded(gradient_series):
    folder, paths, _ = gradient_series
    data = paths[-1].read_bytes()
    paths[-1].write_bytes(data[: len(data) - 200])  # cut inside the pixel data
    scan = load_scan(folder)
    assert scan.shape[0] == len(paths) - 1
    finding = next(f for f in scan.qc if f.code == "unreadable_file")
    assert finding.file == str(paths[-1]) and "truncated" in finding.message


def test_file_cut_inside_its_header_is_recorded(gradient_series):
    folder, paths, _ = gradient_series
    paths[0].write_bytes(paths[0].read_bytes()[:400])
    scan = load_scan(folder)
    assert scan.shape[0] == len(paths) - 1
    finding = next(f for f in scan.qc if f.file == str(paths[0]))
    assert finding.severity == "warning"


def test_missing_pixel_data_in_one_file_or_all(gradient_series):
    folder, paths, _ = gradient_series
    ds = pydicom.dcmread(paths[0])
    del ds.PixelData
    ds.save_as(paths[0])
    scan = load_scan(folder)
    assert scan.shape[0] == len(paths) - 1
    finding = next(f for f in scan.qc if f.code == "missing_pixel_data")
    assert finding.file == str(paths[0])

    for path in paths[1:]:
        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path)
    with pytest.raises(DicomLoadError, match="no pixel data") as info:
        load_scan(folder)
    assert paths[0].name in str(info.value)


def _compress_in_name_only(paths: list[Path], syntax: str) -> None:
    """Mark files as compressed with ``syntax`` and replace their pixels with garbage."""
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([b"\x00\x01garbage" * 40])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)


def test_compressed_series_error_names_file_and_package(gradient_series):
    folder, paths, _ = gradient_series
    _compress_in_name_only(paths, JPEG2000Lossless)
    # Whether or not a JPEG 2000 decoder is installed, the message names a file and what to
    # install; with a decoder, the garbage bytes fail to decode instead.
    with pytest.raises(DicomLoadError) as info:
        load_scan(folder)
    message = str(info.value)
    assert any(p.name in message for p in paths)
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in message


def test_compressed_without_decoder_fails_at_once(gradient_series):
    if get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder is installed here")
    folder, paths, _ = gradient_series
    _compress_in_name_only(paths[4:5], JPEGLosslessSV1)  # one compressed file is enough
    with pytest.raises(DicomLoadError, match="no installed decoder") as info:
        load_scan(folder)
    assert paths[4].name in str(info.value)
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in str(info.value)


def test_non_ct_modality_is_refused(tmp_path: Path):
    write_series(tmp_path, gradient_raws(3), [0.0, 1.0, 2.0], modality="MR")
    with pytest.raises(DicomLoadError, match="no CT series here .*MR, e.g. slice000.dcm"):
        load_scan(tmp_path)
    uid = list_series(tmp_path)[0].series_uid
    with pytest.raises(DicomLoadError, match="modality is 'MR', not CT") as info:
        load_scan(tmp_path, series_uid=uid)
    assert "slice000.dcm" in str(info.value)


def test_duplicate_positions(gradient_series):
    folder, paths, _ = gradient_series
    copy = folder / "copy_of_slice2.dcm"
    ds = pydicom.dcmread(paths[2])
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(copy)
    scan = load_scan(folder)
    assert scan.shape[0] == len(paths)
    finding = next(f for f in scan.qc if f.code == "duplicate_positions")
    assert finding.file in (str(copy), str(paths[2]))

    ds.PixelData = (ds.pixel_array + 7).astype(np.int16).tobytes()
    ds.save_as(copy)
    with pytest.raises(DicomLoadError, match="same position") as info:
        load_scan(folder)
    assert copy.name in str(info.value) and paths[2].name in str(info.value)


def _shrink(ds: pydicom.Dataset) -> None:
    ds.Rows, ds.Columns = 8, 8
    ds.PixelData = np.zeros((8, 8), np.int16).tobytes()


def _turn(ds: pydicom.Dataset) -> None:
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal image in an axial series


@pytest.mark.parametrize(("edit", "message"), [
    (_shrink, "mixed image sizes"),
    (_turn, "mixes orientations"),
])
def test_an_odd_file_in_the_series_is_named(gradient_series, edit, message):
    folder, paths, _ = gradient_series
    ds = pydicom.dcmread(paths[5])
    edit(ds)
    ds.save_as(paths[5])
    with pytest.raises(DicomLoadError, match=message) as info:
        load_scan(folder)
    assert paths[5].name in str(info.value)


def test_missing_position_skips_that_slice(gradient_series):
    folder, paths, _ = gradient_series
    ds = pydicom.dcmread(paths[-1])
    del ds.ImagePositionPatient
    ds.save_as(paths[-1])
    scan = load_scan(folder)
    assert scan.shape[0] == len(paths) - 1
    assert next(f for f in scan.qc if f.code == "missing_position").file == str(paths[-1])


def test_single_slice_series(tmp_path: Path):
    paths = write_series(tmp_path, gradient_raws(1), [5.0])
    with pytest.raises(DicomLoadError, match="single usable slice") as info:
        load_scan(tmp_path)
    assert paths[0].name in str(info.value)
    assert load_scan(tmp_path, allow_single_slice=True).spacing[0] == pytest.approx(2.5)


def test_load_scans_records_a_failure_and_goes_on(gradient_series, tmp_path: Path):
    folder, _, _ = gradient_series
    (tmp_path / "empty").mkdir()
    results = load_scans([folder, tmp_path / "empty"])
    assert isinstance(results[str(folder)], CTScan)
    failure = results[str(tmp_path / "empty")]
    assert failure.severity == "error" and "empty" in failure.message


# --------------------------------------------------------------------------------------------
# Several series


def test_several_series_default_tie_break_and_choice(tmp_path: Path):
    raws = gradient_raws(5)
    z = [2.0 * k for k in range(5)]
    write_series(tmp_path / "a", raws, z, series_number=7, description="lung B70f",
                 series_uid="1.2.3.9")
    write_series(tmp_path / "b", raws, z, series_number=3, description="mediastinum B30f",
                 series_uid="1.2.3.1")
    write_series(tmp_path / "c", raws[:4], z[:4], series_number=1, description="short",
                 series_uid="1.2.3.5")
    write_series(tmp_path / "d", raws * 2, [100.0 + k for k in range(10)], modality="MR",
                 series_uid="1.2.3.7")
    # More images wins among axial CT series; the MR series has more but is not CT.
    assert load_scan(tmp_path).series_uid == "1.2.3.1"  # 5 images each: lowest SeriesNumber
    assert [s.series_uid for s in list_series(tmp_path)] == [
        "1.2.3.7", "1.2.3.1", "1.2.3.9", "1.2.3.5"]
    assert load_scan(tmp_path, series_description="b70F").series_uid == "1.2.3.9"
    with pytest.raises(DicomLoadError, match="no series with uid 9.9"):
        load_scan(tmp_path, series_uid="9.9")


# --------------------------------------------------------------------------------------------
# Privacy


def test_no_patient_identifier_in_anything_shown(gradient_series):
    folder, paths, _ = gradient_series
    paths[-1].write_bytes(paths[-1].read_bytes()[:-300])  # some QC messages too
    scan = load_scan(folder)
    assert scan.qc
    shown = [
        repr(scan),
        str(scan),
        str(scan.describe()),
        str(scan.metadata),
        " ".join(str(f) for f in scan.qc),
        str(list_series(folder)),
        " ".join(str(s) for s in list_series(folder)),
    ]
    for text in shown:
        for secret in (SECRET_NAME, SECRET_ID, "SECRET", "19400101"):
            assert secret not in text
    assert scan.patient_key.startswith("pt-")
    assert not hasattr(scan, "ds")


def test_qc_finding_rejects_unknown_severity():
    assert str(QCFinding("x", "said", "info", "f.dcm")) == "info: x: said [f.dcm]"
    with pytest.raises(ValueError, match="severity must be"):
        QCFinding("x", "said", "fatal")


def test_workers_must_be_positive_and_threads_read_the_same_volume(gradient_series):
    folder, paths, _ = gradient_series
    single = load_scan(folder)
    assert single.shape[0] == len(paths)
    threaded = load_scan(folder, workers=3)
    np.testing.assert_array_equal(threaded.hu, single.hu)
    assert threaded.slice_uids == single.slice_uids
    with pytest.raises(ValueError, match="workers must be at least 1"):
        load_scan(folder, workers=0)


def test_large_folders_leave_pixels_on_disk_until_needed(gradient_series, monkeypatch):
    """Above the whole-read limit pixel bytes are deferred; results and skips are the same."""
    folder, paths, _ = gradient_series
    expected = load_scan(folder)
    paths[-1].write_bytes(paths[-1].read_bytes()[:-200])
    monkeypatch.setattr("lunglib.io.series._READ_WHOLE_LIMIT", 0)
    scan = load_scan(folder)
    np.testing.assert_array_equal(scan.hu, expected.hu[:-1])
    assert next(f for f in scan.qc if f.code == "unreadable_file").file == str(paths[-1])


# --------------------------------------------------------------------------------------------
# Geometry and rescale tags checked in every slice


def _edit(path: Path, **tags: object) -> None:
    """Rewrite one file with ``tags`` set (None deletes the tag)."""
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path)


def _raw_decimal(path: Path, keyword: str, text: bytes) -> None:
    """Write a DS element's bytes as given (pydicom's API refuses NaN)."""
    ds = pydicom.dcmread(path)
    ds.add(DataElement(ds[keyword].tag, "DS", text))
    ds.save_as(path)


def test_one_slice_with_another_pixel_spacing_is_refused_by_name(gradient_series):
    folder, paths, _ = gradient_series
    _edit(paths[3], PixelSpacing=[0.9, 0.9])
    with pytest.raises(DicomLoadError, match="PixelSpacing differs") as info:
        load_scan(folder)
    assert paths[3].name in str(info.value) and "0.9 x 0.9 mm (1 files)" in str(info.value)


def test_zero_pixel_spacing_is_refused_not_read_as_zero_mm(gradient_series):
    folder, paths, _ = gradient_series
    for path in paths:
        _edit(path, PixelSpacing=[0, 0])
    with pytest.raises(DicomLoadError, match="not two positive sizes") as info:
        load_scan(folder)
    assert paths[0].name in str(info.value)


def test_pixel_spacing_missing_in_one_file_takes_the_others_and_names_it(gradient_series):
    folder, paths, _ = gradient_series
    _edit(paths[2], PixelSpacing=None)
    scan = load_scan(folder)
    assert scan.spacing[1:] == (0.75, 0.8)
    finding = next(f for f in scan.qc if f.code == "missing_pixel_spacing")
    assert finding.file == str(paths[2]) and "0.75 x 0.8 mm" in finding.message


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_a_position_that_is_not_a_number_skips_that_slice(gradient_series):
    folder, paths, z = gradient_series
    _raw_decimal(paths[4], "ImagePositionPatient", b"-100\\-120\\NaN")
    scan = load_scan(folder)
    assert np.isfinite(scan.spacing).all() and scan.spacing[0] == pytest.approx(2.5)
    finding = next(f for f in scan.qc if f.code == "missing_position")
    assert finding.file == str(paths[4]) and "not finite" in finding.message
    # the gap is filled between its neighbours (HU -24 + 10k: slice 4 would be 16)
    assert scan.shape[0] == len(paths) and scan.hu[4, 5, 5] == 16


def test_one_slice_without_rescale_takes_the_series_rescale_and_is_named(gradient_series):
    folder, paths, _ = gradient_series
    _edit(paths[5], RescaleSlope=None, RescaleIntercept=None)
    scan = load_scan(folder)
    # slice k is HU -24 + 10 k with the series' intercept -1024; without it, 1026 (~1000 off)
    np.testing.assert_array_equal(scan.hu[:, 5, 5], [-24 + 10 * k for k in range(len(paths))])
    finding = next(f for f in scan.qc if f.code == "missing_rescale")
    assert finding.file == str(paths[5]) and "intercept -1024" in finding.message
    assert [f.code for f in scan.qc].count("missing_rescale") == 1


def test_one_slice_without_rescale_among_differing_ones_is_refused(gradient_series):
    folder, paths, _ = gradient_series
    _edit(paths[1], RescaleIntercept=-1000)
    _edit(paths[5], RescaleSlope=None, RescaleIntercept=None)
    with pytest.raises(DicomLoadError, match="2 different values") as info:
        load_scan(folder)
    assert paths[5].name in str(info.value)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize("slope", [b"0", b"NaN"])
def test_a_slope_that_cannot_give_hu_is_refused_by_name(gradient_series, slope: bytes):
    folder, paths, _ = gradient_series
    _raw_decimal(paths[6], "RescaleSlope", slope)
    with pytest.raises(DicomLoadError, match="cannot turn stored values into HU") as info:
        load_scan(folder)
    assert paths[6].name in str(info.value)


def test_an_empty_file_in_the_series_is_named(gradient_series):
    folder, paths, _ = gradient_series
    paths[2].write_bytes(b"")
    scan = load_scan(folder)
    finding = next(f for f in scan.qc if f.file == str(paths[2]))
    assert finding.code == "unreadable_file" and "empty (0 bytes)" in finding.message
    assert finding.severity == "warning"


def test_free_text_with_a_name_and_a_record_number_is_not_shown(tmp_path: Path):
    # PS3.15 removes free-text tags; lunglib shows SeriesDescription through an allow-list
    write_series(tmp_path, gradient_raws(3), [0.0, 2.5, 5.0],
                 description="ThoraxRoutine MUELLER^ANNA Anna Mueller 0047113 B70f")
    scan = load_scan(tmp_path)
    (info,) = list_series(tmp_path)
    shown = [str(scan.metadata), str(scan.describe()), str(info), repr(info), str([info])]
    for text in shown:
        for secret in ("MUELLER", "Mueller", "ANNA", "Anna", "0047113"):
            assert secret not in text, text
    assert scan.metadata["SeriesDescription"] == "ThoraxRoutine … B70f"
    assert info.description == "ThoraxRoutine … B70f"
    # choosing a series by its description still reads the whole text
    assert load_scan(tmp_path, series_description="mueller").series_uid == info.series_uid


def test_a_header_claiming_a_huge_image_is_refused_before_allocating(tmp_path: Path):
    paths = write_series(tmp_path, gradient_raws(3), [0.0, 2.5, 5.0])
    for path in paths:
        _edit(path, Rows=65535, Columns=65535)
    with pytest.raises(DicomLoadError, match="outside 1..4096 pixels") as info:
        load_scan(tmp_path)
    assert paths[0].name in str(info.value)


def test_a_file_too_big_for_one_image_is_skipped_unread(gradient_series, monkeypatch):
    import lunglib.io.series as series

    folder, paths, _ = gradient_series
    monkeypatch.setattr(series, "MAX_IMAGE_FILE_BYTES", 2**20)  # stands for 64 MB
    with open(paths[3], "ab") as padded:  # a slice zero-padded past the limit
        padded.write(b"\0" * (2**20 + 1))
    scan = load_scan(folder)
    finding = next(f for f in scan.qc if f.file == str(paths[3]))
    assert finding.code == "unreadable_file" and "skipped without reading it" in finding.message
    assert scan.shape[0] == len(paths)  # its place is filled between its neighbours
