"""Mask export: NIfTI round trip and DICOM SEG read back with pydicom and highdicom."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from lunglib.io.dicom import load_scan
from lunglib.io.export import save_dicom_seg, save_nifti

N_SLICES = 6


def write_ct_series(folder: Path, n: int = N_SLICES, step: float = 2.5) -> list[str]:
    """A small axial CT series made from pydicom's bundled CT_small.dcm, file names shuffled.

    Returns the SOPInstanceUIDs in increasing z order.
    """
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid, frame_uid = generate_uid(), generate_uid()
    x0, y0, z0 = (float(v) for v in template.ImagePositionPatient)
    uids = []
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"img{(k * 7919) % 1000:03d}.dcm" for k in range(n)]
    for k in range(n):
        ds = template.copy()
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n - k
        ds.ImagePositionPatient = [x0, y0, z0 + k * step]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = z0 + k * step
        ds.save_as(folder / names[k])
        uids.append(ds.SOPInstanceUID)
    return uids


@pytest.fixture
def ct_series(tmp_path: Path):
    folder = tmp_path / "case-01"
    uids = write_ct_series(folder)
    return folder, uids, load_scan(folder)


def two_nodules(shape) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[1:4, 20:30, 25:33] = 1
    mask[4, 50:54, 40:44] = 2
    return mask


def test_nifti_round_trip_keeps_labels_and_geometry(ct_series, tmp_path):
    _, _, scan = ct_series
    mask = two_nodules(scan.shape)
    path = save_nifti(mask, scan, tmp_path / "out" / "mask.nii.gz")
    image = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayFromImage(image), mask)
    assert image.GetSpacing() == pytest.approx(scan.spacing[::-1])
    assert image.GetOrigin() == pytest.approx(scan.origin)
    assert image.GetDirection() == pytest.approx(tuple(scan.direction.ravel()))
    assert [p.name for p in path.parent.iterdir()] == ["mask.nii.gz"]  # no temp file left
    with pytest.raises(ValueError, match="differs from the scan"):
        save_nifti(mask[:-1], scan, tmp_path / "bad.nii.gz")
    with pytest.raises(ValueError, match="probabilities"):
        save_nifti(mask * 0.4, scan, tmp_path / "bad.nii.gz")


def test_dicom_seg_reads_back_with_frames_references_and_mask(ct_series, tmp_path):
    folder, uids, scan = ct_series
    assert scan.slice_uids == uids
    mask = two_nodules(scan.shape)
    path = save_dicom_seg(mask, scan, tmp_path / "seg.dcm", segment_labels=["big", "small"])

    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG"
    # one frame per (segment, slice) where the segment is present: 3 + 1
    assert int(ds.NumberOfFrames) == 4
    referenced = ds.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == scan.series_uid
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} \
        == set(uids)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["big", "small"]

    seg = hd.seg.segread(path)
    assert seg.get_source_image_uids()
    back = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, skip_overlap_checks=True)
    assert np.array_equal(back, mask)


def test_dicom_seg_carries_the_pseudonym_unless_asked_for_the_patient_module(tmp_path):
    folder = tmp_path / "case-02"
    write_ct_series(folder)
    for path in sorted(folder.iterdir()):  # a source series with a real-looking patient module
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientID = "MUELLER^ANNA", "0047113"
        ds.PatientBirthDate, ds.AccessionNumber = "19400101", "ACC998877"
        ds.InstitutionName = "St. Elsewhere"
        ds.save_as(path)
    scan = load_scan(folder)
    mask = two_nodules(scan.shape)
    secrets = ("MUELLER", "ANNA", "0047113", "19400101", "ACC998877", "Elsewhere")

    default = save_dicom_seg(mask, scan, tmp_path / "seg.dcm")
    raw = default.read_bytes()
    assert not [s for s in secrets if s.encode() in raw]
    ds = pydicom.dcmread(default)
    assert ds.PatientID == scan.patient_key == str(ds.PatientName)
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientBirthDate == ""
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == scan.series_uid

    identified = save_dicom_seg(mask, scan, tmp_path / "seg_pacs.dcm", identified=True)
    assert pydicom.dcmread(identified).PatientID == "0047113"  # as the standard has it


def test_dicom_seg_from_explicit_source_datasets_and_errors(ct_series, tmp_path):
    folder, uids, scan = ct_series
    datasets = [pydicom.dcmread(p) for p in folder.iterdir()]
    mask = np.zeros(scan.shape, np.uint8)
    mask[2, 10:20, 10:20] = 3  # only value 3: stored as segment 1 with the third label
    path = save_dicom_seg(mask, scan, tmp_path / "seg.dcm", source=datasets,
                          segment_labels=["a", "b", "c"], algorithm_name=None)
    ds = pydicom.dcmread(path)
    assert int(ds.NumberOfFrames) == 1
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["c"]
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    frame_source = ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert frame_source.SourceImageSequence[0].ReferencedSOPInstanceUID == uids[2]

    with pytest.raises(ValueError, match="empty"):
        save_dicom_seg(np.zeros(scan.shape), scan, tmp_path / "x.dcm")
    with pytest.raises(ValueError, match="label"):
        save_dicom_seg(mask, scan, tmp_path / "x.dcm", segment_labels=["only one"])
    with pytest.raises(ValueError, match="lack"):
        save_dicom_seg(mask, scan, tmp_path / "x.dcm", source=datasets[:2])
    assert not (tmp_path / "x.dcm").exists()
