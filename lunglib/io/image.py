"""One-file CT volumes -- NIfTI, NRRD, MetaImage -- read with SimpleITK into a :class:`CTScan`.

The formats that nnU-Net, TotalSegmentator and LUNA16 hand around: one file (or a MetaImage
header with its ``.raw``) per scan, values already in Hounsfield units, geometry in the header.
:func:`lunglib.io.dicom.load_scan` comes here for a path with one of :data:`IMAGE_SUFFIXES`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lunglib.io.dicom import CTScan
from lunglib.io.pixels import AIR_HU, LOWEST_CT_HU
from lunglib.io.pseudonym import pseudonymize
from lunglib.io.qc import QCFinding
from lunglib.io.series import DicomLoadError

IMAGE_SUFFIXES = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD",
                  ".mhd": "MetaImage", ".mha": "MetaImage"}
"""File endings read as one-file volumes, and the format each names."""


def image_suffix(path: str | os.PathLike) -> str | None:
    """The :data:`IMAGE_SUFFIXES` ending of ``path`` (``".nii.gz"``...), or None."""
    name = Path(path).name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), None)


def read_image_file(path: str | os.PathLike) -> CTScan:
    """Read a one-file CT volume with SimpleITK, geometry kept.

    Values below -1024 (outside the field of view) become air (-1000), as for DICOM. The scan
    is named by its file name without the ending, through :func:`pseudonymize` like a DICOM
    PatientID; ``metadata["format"]`` says which format it was.

    Raises
    ------
    DicomLoadError
        Naming the file: missing, unreadable (for MetaImage: its ``.raw`` missing or short), or
        not a 3D volume.
    """
    import SimpleITK as sitk

    path = Path(path)
    suffix = image_suffix(path)
    if suffix is None:
        raise DicomLoadError(f"{path}: not a volume file (expected one of "
                             f"{', '.join(IMAGE_SUFFIXES)})")
    if not path.is_file():
        raise DicomLoadError(f"{path}: no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        hint = ("; check that the .raw file named in its ElementDataFile line is beside it and "
                "complete") if IMAGE_SUFFIXES[suffix] == "MetaImage" else ""
        raise DicomLoadError(f"{path}: SimpleITK could not read it ({first}){hint}") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DicomLoadError(f"{path}: expected a 3D single-channel volume, got "
                             f"{image.GetDimension()}D with "
                             f"{image.GetNumberOfComponentsPerPixel()} channel(s)")
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    findings = []
    padding = array < LOWEST_CT_HU
    if padding.any():
        array = array.copy()
        array[padding] = AIR_HU
        findings.append(QCFinding("padding_to_air", f"{int(padding.sum())} voxel(s) below "
                                  f"{LOWEST_CT_HU} HU (outside the field of view) set to air",
                                  "info", str(path)))
    spacing = image.GetSpacing()
    name = path.name[: -len(suffix)]
    return CTScan(
        hu=np.clip(np.rint(array), -32768, 32767).astype(np.int16),
        spacing=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
        origin=tuple(float(o) for o in image.GetOrigin()),  # type: ignore[arg-type]
        direction=np.asarray(image.GetDirection(), dtype=float).reshape(3, 3),
        series_uid=name,
        patient_key=pseudonymize(name),
        slice_uids=[""] * array.shape[0],
        qc=findings,
        metadata={"Modality": "CT", "format": IMAGE_SUFFIXES[suffix]},
        source=str(path),
    )
