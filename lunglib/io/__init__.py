"""Reading and writing: DICOM series in, masks out, atomic writes and QC findings.

:mod:`~lunglib.io.dicom` reads a CT series into Hounsfield units with its geometry, through the
stages in :mod:`~lunglib.io.series` (headers, series choice), :mod:`~lunglib.io.geometry` (slice
order, duplicates, spacing) and :mod:`~lunglib.io.pixels` (decoding to HU), with pydicom or,
for plain files, the faster dicomsdl (:mod:`~lunglib.io.fastread`);
:mod:`~lunglib.io.image` reads one-file volumes (NIfTI, NRRD, MetaImage) with SimpleITK;
:mod:`~lunglib.io.export` writes masks as NIfTI or DICOM SEG; :mod:`~lunglib.io.qc` is the one
record of a data-quality problem; :mod:`~lunglib.io.atomic` writes files all-or-nothing.
"""

from lunglib.io.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from lunglib.io.dicom import CTScan, load_scan, load_scans, pseudonymize
from lunglib.io.export import save_dicom_seg, save_nifti
from lunglib.io.image import IMAGE_SUFFIXES, read_image_file
from lunglib.io.pixels import AIR_HU, LOWEST_CT_HU
from lunglib.io.qc import QCFinding, summarize
from lunglib.io.series import DicomLoadError, SeriesInfo, list_series

__all__ = [
    "AIR_HU",
    "IMAGE_SUFFIXES",
    "LOWEST_CT_HU",
    "CTScan",
    "DicomLoadError",
    "QCFinding",
    "SeriesInfo",
    "atomic_path",
    "list_series",
    "load_scan",
    "load_scans",
    "pseudonymize",
    "read_image_file",
    "save_dicom_seg",
    "save_nifti",
    "summarize",
    "write_bytes_atomic",
    "write_text_atomic",
]
