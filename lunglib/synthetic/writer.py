"""A phantom written as one axial CT series, the way a scanner writes it, with fake identities.

Every value in the files derives from the patient's spec (seed-derived UIDs and file names,
fixed dates), so the same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lunglib.synthetic.phantom import PatientSpec, Phantom
from lunglib.synthetic.scanner import RESCALE_INTERCEPT

PATIENT_NAME_PREFIX = "SYNTHETIC^DO-NOT-USE"
MANUFACTURER = "lunglib synthetic phantom"
"""The Manufacturer tag of every series this writer makes: how a scan is told to be synthetic."""


def is_synthetic_scan(metadata: Mapping[str, object]) -> bool:
    """Whether a loaded scan's metadata (``CTScan.metadata``) says this writer made it."""
    return metadata.get("Manufacturer") == MANUFACTURER


def _uid(spec: PatientSpec, *parts: object) -> str:
    return generate_uid(entropy_srcs=[f"lunglib-synthetic:{spec.seed}:{spec.index}",
                                      *(str(p) for p in parts)])


def _file_name(spec: PatientSpec, k: int) -> str:
    digest = hashlib.sha1(f"{spec.seed}:{spec.index}:{k}".encode()).hexdigest()
    return f"{digest[:24]}.dcm"


def fake_patient_name(spec: PatientSpec) -> str:
    """The obviously fake PatientName written into every file of the patient."""
    return f"{PATIENT_NAME_PREFIX}^{spec.index + 1}"


def fake_patient_id(spec: PatientSpec) -> str:
    """A fake PatientID, deliberately different from the folder name."""
    return "SYN" + hashlib.sha1(f"pid:{spec.seed}:{spec.index}".encode()).hexdigest()[:10].upper()


def write_dicom_series(phantom: Phantom, folder: str | os.PathLike) -> list[Path]:
    """Write the phantom as one axial CT series, one file per slice, the way a scanner does.

    RescaleIntercept -1024, slope 1, signed 16-bit pixels, ImagePositionPatient per slice,
    InstanceNumber from head to feet, fixed dates and seed-derived UIDs (so the same seed gives
    byte-identical files), and file names that do not sort in z order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec, geom = phantom.spec, phantom.geometry
    nz = geom.shape[0]
    study_uid, series_uid = _uid(spec, "study"), _uid(spec, "series")
    frame_uid = _uid(spec, "frame")
    day = 1 + (spec.seed * 31 + spec.index) % 28
    study_date = f"2000{1 + spec.index % 12:02d}{day:02d}"
    stored = (phantom.hu.astype(np.int32) - RESCALE_INTERCEPT).astype(np.int16)
    template = ds = Dataset()  # the elements every slice shares; per-slice ones are added below
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
    ds.StudyTime = ds.SeriesTime = "093000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "SYNTH-CT"
    ds.InstitutionName = "NOT A REAL HOSPITAL"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC CHEST CT"
    ds.SeriesDescription = "AXIAL CHEST SYNTHETIC"
    ds.PatientName = fake_patient_name(spec)
    ds.PatientID = fake_patient_id(spec)
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "NO"  # it is fake, not removed: privacy code must still hide it
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = f"{geom.slice_thickness:g}"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = geom.shape[1], geom.shape[2]
    ds.PixelSpacing = [f"{geom.spacing[1]:.4f}", f"{geom.spacing[2]:.4f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1600"
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    shared = list(template.items())
    paths = []
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = _uid(spec, "slice", k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "LUNGLIB_SYNTH"
        ds = FileDataset(None, dict(shared), file_meta=meta, preamble=b"\0" * 128)
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.ContentTime = ds.AcquisitionTime = f"0930{k % 60:02d}"
        ds.InstanceNumber = nz - k  # numbered head to feet: do not sort by it
        z_mm = geom.origin[2] + k * geom.spacing[0]
        ds.ImagePositionPatient = [f"{geom.origin[0]:.4f}", f"{geom.origin[1]:.4f}", f"{z_mm:.4f}"]
        ds.SliceLocation = f"{z_mm:.4f}"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = folder / _file_name(spec, k)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths
