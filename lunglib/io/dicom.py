"""Reading a chest CT from a folder of DICOM files, with its geometry right.

The three things students most often get wrong, and that this module gets right:

* **Slice order** comes from ``ImagePositionPatient`` projected on the slice normal
  (the cross product of the two ``ImageOrientationPatient`` direction cosines) -- never from file
  names, and not from ``InstanceNumber``, which some scanners number head-to-feet and others
  feet-to-head.
* **Slice spacing** comes from the distance between those positions. ``SliceThickness`` is the
  thickness of the reconstructed slab, which may differ from the step between slices.
* **Hounsfield units** come from ``RescaleSlope`` and ``RescaleIntercept``; values outside the
  scanner's field of view (``PixelPaddingValue``, the ``-2000`` style) become air.

What is wrong with an input is either an error that names the file and the reason
(:class:`DicomLoadError`), or -- when the rest of the series is fine -- a recorded
:class:`~lunglib.io.qc.QCFinding` in ``CTScan.qc``:

=============================================  ===================================================
input                                          outcome
=============================================  ===================================================
empty folder, no DICOM file, non-CT modality   ``DicomLoadError``
compressed pixel data, no decoder installed    ``DicomLoadError`` naming the ``pip install``
one file unreadable, truncated, no pixel data  slice skipped, ``unreadable_file`` /
                                               ``missing_pixel_data`` finding
every file unreadable or without pixel data    ``DicomLoadError`` naming a file
the same position twice, identical pixels      copy dropped, ``duplicate_positions`` finding
the same position twice, different pixels      ``DicomLoadError`` naming both files
missing slices, uneven spacing                 filled by linear interpolation onto a uniform grid
                                               spanning the same extent, ``missing_slices`` /
                                               ``uneven_spacing`` finding that states the gap
no RescaleSlope/RescaleIntercept               slope 1, intercept 0, ``missing_rescale`` finding
one slice without them, the others agreeing    theirs used, ``missing_rescale`` finding naming it
one slice without them, the others differing   ``DicomLoadError`` naming the file
slope 0, or a non-finite slope or intercept    ``DicomLoadError`` naming the file
PixelSpacing differing between files, or not   ``DicomLoadError`` naming the odd file
two finite positive numbers
PixelSpacing missing in some files only        the others' (if they agree), finding naming each
ImagePositionPatient missing or not finite     slice skipped, ``missing_position`` finding
an empty (0-byte) file                         skipped, ``unreadable_file`` finding naming it
a file larger than one CT image can need       skipped unread, ``unreadable_file`` finding
(``MAX_IMAGE_FILE_BYTES``, 64 MB)
Rows or Columns beyond ``MAX_IMAGE_SIDE``      ``DicomLoadError`` naming the file
(4096)
a single slice                                 ``DicomLoadError`` unless ``allow_single_slice``
mixed image sizes or orientations              ``DicomLoadError`` naming an odd file
=============================================  ===================================================

Two libraries can read the files (:mod:`~lunglib.io.fastread`): dicomsdl, several times faster,
for a series whose files are all plain (uncompressed little-endian 16-bit images), and pydicom,
the reference, for everything else. The volume, geometry and findings are the same either way;
``CTScan.metadata["reader"]`` says which one read the scan and ``metadata["reader_note"]`` why
pydicom did when dicomsdl was asked first. ``load_scan(..., reader="pydicom")`` (or
``LUNGLIB_DICOM_READER=pydicom``) forces the reference.

Nothing that identifies the patient is kept: a :class:`CTScan` holds a pseudonymous key (a keyed
hash of the DICOM PatientID under this installation's secret, :mod:`lunglib.io.pseudonym`) and a
de-identified metadata view.

:func:`load_scan` is a short pipeline of named stages, each in the module of its job:
:mod:`~lunglib.io.series` reads headers and chooses the series, :mod:`~lunglib.io.geometry`
places, de-duplicates and spaces the slices, :mod:`~lunglib.io.pixels` decodes them to HU. This
module keeps the result (:class:`CTScan`) and re-exports the public names of the stage modules,
so ``from lunglib.io.dicom import load_scan, list_series, DicomLoadError`` is all a caller needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lunglib.io import fastread
from lunglib.io.deid import safe_description
from lunglib.io.geometry import (
    check_consistent,
    check_gantry_tilt,
    drop_duplicates,
    pixel_spacing,
    place_slices,
    slice_spacing,
)
from lunglib.io.pixels import AIR_HU, LOWEST_CT_HU, check_decoders, check_rescale, decode_slices
from lunglib.io.pseudonym import pseudonymize
from lunglib.io.qc import QCFinding
from lunglib.io.series import (
    DicomLoadError,
    Header,
    ReaderUnfit,
    SeriesInfo,
    choose_series,
    list_series,
    read_headers,
)

__all__ = [
    "AIR_HU",
    "LOWEST_CT_HU",
    "CTScan",
    "DicomLoadError",
    "SeriesInfo",
    "list_series",
    "load_scan",
    "load_scans",
    "pseudonymize",
]

# Tags that stay in the de-identified view (an allow-list): acquisition facts a student needs,
# nothing personal; the one free-text tag, SeriesDescription, is shown through safe_description.
_METADATA_TAGS = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "ConvolutionKernel",
    "KVP",
    "SliceThickness",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "Rows",
    "Columns",
)


@dataclass
class CTScan:
    """One CT series as a Hounsfield-unit volume with its geometry.

    Attributes
    ----------
    hu : ndarray of int16, shape (z, y, x)
        Hounsfield units; z runs along the slice normal, in increasing position.
    spacing : tuple of float
        Voxel size in mm, (z, y, x). The z spacing is measured from slice positions.
    origin : tuple of float
        Patient-coordinate (x, y, z) position in mm of voxel (0, 0, 0), DICOM LPS convention.
    direction : ndarray, shape (3, 3)
        Columns are the patient-coordinate directions of the x (column), y (row) and z (slice)
        index axes -- the same convention as SimpleITK's ``GetDirection``.
    series_uid : str
        SeriesInstanceUID of the series that was loaded.
    patient_key : str
        Pseudonymous, stable key derived from the PatientID by a salted hash.
    slice_uids : list of str
        SOPInstanceUID of each z slice (empty string for slices lunglib had to fill in).
    qc : list of QCFinding
        What was found and repaired while loading.
    metadata : dict
        A de-identified view of acquisition facts (modality, kernel, thickness, ...); for DICOM
        input also ``reader`` ("dicomsdl" or "pydicom", the library that read the files) and,
        when pydicom read a series dicomsdl was asked to, ``reader_note`` (why).
    source : str
        The folder or file the scan came from.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    series_uid: str
    patient_key: str
    slice_uids: list[str] = field(default_factory=list)
    qc: list[QCFinding] = field(default_factory=list)
    metadata: dict[str, object] = field(default_factory=dict)
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def describe(self) -> dict[str, object]:
        """De-identified summary, safe to print, log or save."""
        extent = np.asarray(self.shape) * np.asarray(self.spacing)
        return {
            "patient_key": self.patient_key,
            "shape_zyx": self.shape,
            "spacing_zyx_mm": tuple(round(s, 4) for s in self.spacing),
            "extent_zyx_mm": tuple(round(float(e), 1) for e in extent),
            **self.metadata,
            "qc": [str(f) for f in self.qc if f.severity != "info"] or "ok",
        }

    def __repr__(self) -> str:
        return (
            f"CTScan(patient_key={self.patient_key!r}, shape={self.shape}, "
            f"spacing={tuple(round(s, 3) for s in self.spacing)}, qc={len(self.qc)} findings)"
        )

    def _index_to_world(self) -> np.ndarray:
        # Maps an (x, y, z) index vector to a patient-coordinate offset in mm.
        return np.asarray(self.direction, float) * np.asarray(self.spacing[::-1], float)

    def world_to_voxel(self, xyz_mm: Sequence[float] | np.ndarray) -> np.ndarray:
        """Patient (x, y, z) mm to fractional voxel index (z, y, x).

        Accepts one point of shape (3,) or an array of points of shape (n, 3).
        """
        offset = np.asarray(xyz_mm, dtype=float) - np.asarray(self.origin, float)
        ijk = np.linalg.solve(self._index_to_world(), offset.T).T
        return ijk[..., ::-1]

    def voxel_to_world(self, zyx: Sequence[float] | np.ndarray) -> np.ndarray:
        """Fractional voxel index (z, y, x) to patient (x, y, z) mm.

        Accepts one index of shape (3,) or an array of indices of shape (n, 3).
        """
        ijk = np.asarray(zyx, dtype=float)[..., ::-1]
        return np.asarray(self.origin, float) + ijk @ self._index_to_world().T

    def to_sitk(self):
        """The volume as a SimpleITK image with the same geometry."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.hu)
        image.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(d) for d in np.asarray(self.direction).ravel()))
        return image


def _metadata(members: list[Header]) -> dict[str, object]:
    """The de-identified view of the first file's acquisition facts, plus the file count."""
    ds = members[0].ds
    metadata: dict[str, object] = {}
    for tag in _METADATA_TAGS:
        value = ds.get(tag)
        if value is not None and value != "":
            metadata[tag] = value if isinstance(value, (int, float, str)) else str(value)
    if "SeriesDescription" in metadata:  # free text: only CT words and codes are shown
        metadata["SeriesDescription"] = safe_description(metadata["SeriesDescription"])
    metadata["n_files"] = len(members)
    return metadata


def load_scan(
    path: str | os.PathLike,
    series_uid: str | None = None,
    series_description: str | None = None,
    allow_single_slice: bool = False,
    spacing_tolerance: float = 0.01,
    workers: int | None = None,
    reader: str | None = None,
) -> CTScan:
    """Load one patient's CT series from a folder of DICOM files (or one volume file).

    Parameters
    ----------
    path : path-like
        Folder holding the patient's DICOM files (searched recursively), or a single file: one
        DICOM image, or a whole volume as NIfTI (``.nii``, ``.nii.gz``), NRRD or MetaImage
        (``.mhd``, ``.mha``), read by :func:`lunglib.io.image.read_image_file` (the series
        arguments do not apply to it). Annotation files beside the images (LIDC XML, CSV) are
        ignored.
    series_uid : str, optional
        Load this SeriesInstanceUID.
    series_description : str, optional
        Load the one series whose SeriesDescription contains this text (case-insensitive).
    allow_single_slice : bool, default False
        Accept a series of one image (a volume of depth 1, z spacing from SliceThickness).
    spacing_tolerance : float, default 0.01
        Relative deviation of a slice step from the median step above which spacing counts as
        uneven.
    workers : int, optional
        Threads that read and decode files; default 1. Parsing holds Python's GIL, so more
        threads only help where reads wait on slow (network) storage.
    reader : {"auto", "dicomsdl", "pydicom"}, optional
        Which library reads the DICOM files; default ``$LUNGLIB_DICOM_READER``, else ``"auto"``:
        dicomsdl when the chosen series can be read by it exactly as pydicom reads it (every
        file uncompressed, little endian, one frame of 16-bit pixels, nothing unusual), pydicom
        otherwise. ``"dicomsdl"`` raises instead of falling back; ``"pydicom"`` always reads
        with the reference. ``metadata["reader"]`` records which one did.

    Returns
    -------
    CTScan
        Slices in increasing position along the slice normal, with a uniform z spacing.

    Raises
    ------
    DicomLoadError
        When no usable CT volume can be read; the message names the file and the reason.
        With ``reader="dicomsdl"``, also when dicomsdl cannot read the series exactly.
    ValueError
        For an unknown ``reader`` or ``workers`` below 1.

    Notes
    -----
    Without ``series_uid`` or ``series_description`` the axial CT series with the most images
    is loaded. When several have as many (two reconstruction kernels of one acquisition), the
    lowest ``SeriesNumber`` wins -- the scanner's first reconstruction of the study -- and then
    the lowest uid, so the choice never depends on file names or reading order. A ``several_series``
    finding lists what else was found; :func:`list_series` lists them in the same order.

    The stages, in order: read the headers, choose the series (localizers dropped), check that
    its files agree in size and orientation, that their pixels can be decoded and that every
    file's PixelSpacing and rescale tags are valid and consistent, place the slices along the
    slice normal, decode them to HU, drop duplicate copies, measure the
    spacing (filling gaps onto a uniform grid), record gantry tilt, and keep the de-identified
    metadata. The checks that need headers only run before any pixel is decoded, so a series
    that cannot be read fails at once. Every stage appends what it found and repaired to the
    scan's ``qc`` list.
    """
    path = Path(path)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    choice = fastread.requested_reader(reader)
    from lunglib.io import image  # imports CTScan from here: loaded on first use

    if image.image_suffix(path) is not None and not path.is_dir():
        return image.read_image_file(path)
    args = (path, series_uid, series_description, allow_single_slice, spacing_tolerance, workers)
    note = None
    if choice != "pydicom":
        try:
            if fastread.unavailable() is not None:
                raise ReaderUnfit(str(fastread.unavailable()))
            return _read_series(*args, reader="dicomsdl")
        except ReaderUnfit as unfit:
            note = f"dicomsdl not used: {unfit}"
            if choice == "dicomsdl":
                raise DicomLoadError(
                    f"{path}: reader='dicomsdl' cannot read this series exactly as pydicom "
                    f"does ({unfit}); use reader='auto' or 'pydicom'") from unfit
        except DicomLoadError:
            if choice == "dicomsdl":
                raise
            # pydicom, the reference, decides what is wrong (it reads the same headers)
            note = "dicomsdl not used: the dicomsdl pass stopped with an error"
    scan = _read_series(*args, reader="pydicom")
    if note is not None:
        scan.metadata["reader_note"] = note
    return scan


def _read_series(
    path: Path,
    series_uid: str | None,
    series_description: str | None,
    allow_single_slice: bool,
    spacing_tolerance: float,
    workers: int | None,
    reader: str,
) -> CTScan:
    """The stages of :func:`load_scan` for a DICOM folder or file, with one ``reader``.

    Raises
    ------
    ReaderUnfit
        (``reader="dicomsdl"``) when the chosen series has a file dicomsdl's path cannot read
        exactly as pydicom does.
    """
    headers, qc = read_headers(path, workers=workers, reader=reader)
    uid, members = choose_series(path, headers, series_uid, series_description, qc)
    first = members[0]
    check_consistent(uid, members)
    check_decoders(members)
    row_spacing, col_spacing = pixel_spacing(uid, members, qc)
    check_rescale(uid, members, qc)
    slices = place_slices(uid, members, qc)
    if reader == "dicomsdl":  # after the header checks, so that their errors come first
        problem = fastread.series_problem(members)
        if problem is not None:
            raise ReaderUnfit(problem)
    volume, usable = decode_slices(uid, slices.headers, first, workers, qc)
    slices, volume = drop_duplicates(uid, slices, volume, usable, qc)
    volume, z_spacing, slice_uids = slice_spacing(
        slices, volume, first, allow_single_slice, spacing_tolerance, qc)
    check_gantry_tilt(slices, min(row_spacing, col_spacing), qc)
    iop = np.asarray(first.orientation, float)
    patient_id = str(first.ds.get("PatientID", "")) or str(first.ds.get("StudyInstanceUID", uid))
    metadata = _metadata(members)
    metadata["reader"] = reader
    return CTScan(
        hu=volume,
        spacing=(z_spacing, row_spacing, col_spacing),
        origin=tuple(float(o) for o in slices.positions[0]),  # type: ignore[arg-type]
        direction=np.column_stack([iop[:3], iop[3:], slices.normal]),
        series_uid=uid,
        patient_key=pseudonymize(patient_id),
        slice_uids=slice_uids,
        qc=qc,
        metadata=metadata,
        source=str(path),
    )


def load_scans(paths: Iterable[str | os.PathLike], **kwargs) -> dict[str, CTScan | QCFinding]:
    """Load several scans; a scan that fails becomes an error :class:`QCFinding`, not a crash."""
    out: dict[str, CTScan | QCFinding] = {}
    for p in paths:
        try:
            out[str(p)] = load_scan(p, **kwargs)
        except DicomLoadError as exc:
            out[str(p)] = QCFinding("load_failed", str(exc), "error", str(p))
    return out
