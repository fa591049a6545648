"""Save segmentation masks for viewers: NIfTI (any tool) and DICOM SEG (3D Slicer, OHIF).

Both writers take the mask in the voxel grid of a :class:`lunglib.CTScan` (z, y, x) and write
atomically (temporary file in the target folder, then :func:`os.replace`).

Privacy note: a DICOM SEG is a DICOM object that belongs with its source series, and the
standard requires it to repeat the source's Patient and Study modules (patient name, id, birth
date, sex, study UID...). :func:`save_dicom_seg` therefore copies them from the source files
into the SEG -- it is meant for the user's own PACS or viewer, beside the images it came from.
Nothing from those modules is printed or returned by lunglib.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lunglib.io.atomic import atomic_path
from lunglib.io.dicom import CTScan


def _atomic(path: Path, write) -> Path:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then move it in place."""
    with atomic_path(path, keep_suffix=True) as tmp:
        write(str(tmp))
    return Path(path)


def _check_mask(mask: np.ndarray, scan: CTScan) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != scan.shape:
        raise ValueError(
            f"mask shape {mask.shape} differs from the scan's {scan.shape}; segment in the "
            "scan's voxel grid (or resample the mask back to it) before exporting"
        )
    if mask.dtype.kind == "f":
        if not np.all(np.isin(np.unique(mask), (0.0, 1.0))):
            raise ValueError("mask holds probabilities; threshold it (e.g. prob > 0.5) first")
        mask = mask.astype(np.uint8)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if mask.min() < 0:
        raise ValueError("mask has negative values; use 0 for background and k for segment k")
    return mask


def save_nifti(mask: np.ndarray, scan: CTScan, path: str | os.PathLike) -> Path:
    """Write ``mask`` as a NIfTI file (``.nii`` or ``.nii.gz``) with the scan's geometry.

    Spacing, origin and direction come from :meth:`CTScan.to_sitk`, so the mask overlays the
    CT in any viewer. Label values are kept (uint8 when they fit, else uint16).

    Returns
    -------
    Path
        The written file.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"{path}: NIfTI files end in .nii or .nii.gz")
    mask = _check_mask(mask, scan)
    dtype = np.uint8 if mask.max(initial=0) <= 255 else np.uint16
    image = sitk.GetImageFromArray(mask.astype(dtype))
    image.CopyInformation(scan.to_sitk())
    return _atomic(path, lambda tmp: sitk.WriteImage(image, tmp, useCompression=True))


def _source_datasets(source, scan: CTScan) -> list:
    """Source datasets of the scan's slices, in the scan's z order."""
    import pydicom

    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: source DICOM folder or file not found")
        source = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*")
                                                          if p.is_file())
    by_uid = {}
    for item in source:
        if isinstance(item, pydicom.Dataset):
            ds = item
        else:
            try:
                ds = pydicom.dcmread(item)
            except Exception:  # not DICOM (e.g. an XML annotation beside the slices)
                continue
        if str(ds.get("SeriesInstanceUID", "")) == scan.series_uid:
            by_uid[str(ds.SOPInstanceUID)] = ds
    missing = [uid for uid in scan.slice_uids if uid and uid not in by_uid]
    if not by_uid or missing:
        raise ValueError(
            f"the source files lack {len(missing) or len(scan.slice_uids)} slice(s) of series "
            f"{scan.series_uid}; pass the folder the scan was loaded from ({scan.source})"
        )
    return [by_uid.get(uid) for uid in scan.slice_uids]


def save_dicom_seg(
    mask: np.ndarray,
    scan: CTScan,
    path: str | os.PathLike,
    source: str | os.PathLike | Sequence | None = None,
    segment_labels: Sequence[str] | None = None,
    algorithm_name: str | None = "lunglib U-Net",
    series_description: str = "lunglib nodule segmentation",
    series_number: int = 900,
    identified: bool = False,
) -> Path:
    """Write ``mask`` as a binary DICOM Segmentation referencing the scan's source series.

    The DICOM standard has a SEG repeat the source's patient and study modules, so that a
    PACS files it with the images. By default lunglib replaces what identifies the patient:
    PatientName and PatientID become the scan's pseudonymous key (``scan.patient_key``), the
    other patient and visit tags (birth date, sex, age, accession number, institution,
    physicians, study id) are emptied or removed. The study, series and image UIDs stay: the
    SEG must reference its source images to be drawn over them. ``identified=True`` keeps the
    patient module as the standard has it, for a SEG that goes back to your own PACS -- that
    file then carries the patient's name and ID.

    Parameters
    ----------
    mask : ndarray (z, y, x)
        In the scan's voxel grid: 0 background, k > 0 segment k (a 0/1 mask is one segment).
    scan : CTScan
        The loaded scan; its ``slice_uids`` give the z order of the source slices.
    path : path-like
        The ``.dcm`` file to write.
    source : path, or sequence of paths or pydicom Datasets, optional
        The source series' DICOM files (pixel data not needed). Default ``scan.source``, the
        folder it was loaded from.
    segment_labels : sequence of str, optional
        One label per segment value 1..K; default ``"nodule"`` for a single segment and
        ``"nodule k"`` otherwise.
    algorithm_name : str or None, default "lunglib U-Net"
        Recorded as the segmentation algorithm (type AUTOMATIC); ``None`` marks the
        segments MANUAL (e.g. a ground-truth mask).
    series_description, series_number
        Of the new SEG series.
    identified : bool, default False
        Keep the source's patient module (name, ID, birth date ...) instead of the pseudonym.

    Returns
    -------
    Path
        The written file. Frames are stored only for slices where a segment is present.

    Raises
    ------
    ValueError
        When the mask does not fit the scan, labels are missing, or the mask covers a slice
        the loader had to fill in (it has no source image to reference).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from lunglib._version import __version__

    mask = _check_mask(mask, scan)
    n_segments = int(mask.max(initial=0))
    if n_segments == 0:
        raise ValueError("mask is empty: a DICOM SEG needs at least one segment")
    present = sorted(int(v) for v in np.unique(mask) if v)
    if segment_labels is None:
        segment_labels = ["nodule"] if n_segments == 1 else [
            f"nodule {k}" for k in range(1, n_segments + 1)]
    if len(segment_labels) != n_segments:
        raise ValueError(
            f"{len(segment_labels)} segment label(s) for segment values 1..{n_segments}"
        )
    if len(scan.slice_uids) != scan.shape[0]:
        raise ValueError(f"scan has {len(scan.slice_uids)} slice UIDs for {scan.shape[0]} slices")
    filled = [z for z, uid in enumerate(scan.slice_uids) if not uid]
    if filled and mask[filled].any():
        raise ValueError(
            f"mask covers slice(s) {filled[:5]} that the loader filled in (no source image to "
            "reference); clear them or export as NIfTI instead"
        )
    keep = [z for z, uid in enumerate(scan.slice_uids) if uid]
    datasets = _source_datasets(scan.source if source is None else source, scan)
    datasets = [datasets[z] for z in keep]

    if algorithm_name is None:
        algorithm_type, algorithm = hd.seg.SegmentAlgorithmTypeValues.MANUAL, None
    else:
        algorithm_type = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        algorithm = hd.AlgorithmIdentificationSequence(
            name=algorithm_name, version=__version__,
            family=codes.cid7162.ArtificialIntelligence,
        )
    # highdicom numbers segments 1..K without gaps: renumber the values present, keep labels.
    lut = np.zeros(n_segments + 1, dtype=mask.dtype)
    lut[present] = np.arange(1, len(present) + 1)
    mask = lut[mask]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(segment_labels[value - 1]),
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Nodule,
            algorithm_type=algorithm_type,
            algorithm_identification=algorithm,
        )
        for number, value in enumerate(present, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=mask[keep],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lunglib",
        manufacturer_model_name="lunglib",
        software_versions=__version__,
        device_serial_number="none",
        series_description=series_description,
    )
    if not identified:
        _deidentify(seg, scan.patient_key)
    return _atomic(Path(path), lambda tmp: seg.save_as(tmp))


#: Patient and visit tags of a SEG's copied modules: Type 2 ones must stay, empty; the others go.
_IDENTIFYING_TYPE2 = ("PatientBirthDate", "PatientSex", "AccessionNumber",
                      "ReferringPhysicianName", "StudyID")
_IDENTIFYING_OPTIONAL = ("OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
                         "PatientAge", "PatientWeight", "PatientSize", "PatientAddress",
                         "PatientBirthName", "PatientMotherBirthName", "PatientComments",
                         "EthnicGroup", "InstitutionName", "InstitutionAddress",
                         "InstitutionalDepartmentName", "PerformingPhysicianName",
                         "NameOfPhysiciansReadingStudy", "OperatorsName", "StudyDescription",
                         "IssuerOfPatientID", "MilitaryRank", "PatientTelephoneNumbers")


def _deidentify(seg, pseudonym: str) -> None:
    """Replace the copied patient module by the pseudonym (see :func:`save_dicom_seg`)."""
    seg.PatientName = pseudonym
    seg.PatientID = pseudonym
    for keyword in _IDENTIFYING_TYPE2:
        setattr(seg, keyword, "")
    for dataset in [seg, *seg.get("ContributingEquipmentSequence", [])]:  # the source's device
        for keyword in _IDENTIFYING_OPTIONAL:
            if keyword in dataset:
                delattr(dataset, keyword)
    seg.PatientIdentityRemoved = "YES"
    seg.DeidentificationMethod = "lunglib: patient module replaced by a keyed-hash pseudonym"
