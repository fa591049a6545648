"""Placing a series' slices in space: order, duplicates, spacing, gaps and gantry tilt.

The geometry stages of :func:`lunglib.io.dicom.load_scan`:

* :func:`check_consistent` refuses a series that mixes image sizes or orientations;
* :func:`place_slices` orders the slices by ``ImagePositionPatient`` projected on the slice
  normal -- never by file name or ``InstanceNumber``, which scanners number either way;
* :func:`drop_duplicates` drops identical copies at one position and refuses two different
  images there;
* :func:`pixel_spacing` and :func:`slice_spacing` give the voxel size; the z spacing is measured
  from the positions (``SliceThickness`` is the slab thickness, not the step), and missing slices
  or uneven steps are filled by linear interpolation onto a uniform grid over the same extent;
* :func:`check_gantry_tilt` records positions that drift sideways from the slice normal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from lunglib.io.qc import QCFinding
from lunglib.io.series import MAX_IMAGE_SIDE, DicomLoadError, Header, slice_normal


def sphere_diameter_mm(volume_mm3: float) -> float:
    """The diameter (mm) of the sphere of this volume (mm3): a nodule's "equivalent diameter",
    the one size for candidates, readers' outlines and LUNA16-style hit radii."""
    return float(np.cbrt(6.0 * float(volume_mm3) / np.pi))


# Two slices closer than this along the normal (mm) sit at the same position.
_SAME_POSITION_MM = 0.01


@dataclass
class Slices:
    """The placed slices of one series, in increasing position along the slice normal.

    Attributes
    ----------
    headers : list of Header
        One per slice.
    positions : ndarray, shape (n, 3)
        ImagePositionPatient of each slice, mm.
    z : ndarray, shape (n,)
        Each position projected on the slice normal, increasing, mm.
    normal : ndarray, shape (3,)
        Unit normal of the image plane (the direction of increasing z).
    """

    headers: list[Header]
    positions: np.ndarray
    z: np.ndarray
    normal: np.ndarray

    def select(self, keep: np.ndarray) -> Slices:
        """The slices where the boolean mask ``keep`` is True."""
        headers = [h for h, k in zip(self.headers, keep, strict=True) if k]
        return Slices(headers, self.positions[keep], self.z[keep], self.normal)


def check_consistent(uid: str, members: list[Header]) -> None:
    """Raise unless the series has one plausible image size and one valid orientation.

    Raises
    ------
    DicomLoadError
        Naming the first file when its orientation is missing or degenerate, or a file whose
        size or orientation differs from the rest.
    """
    first = members[0]
    if slice_normal(first.orientation) is None:
        raise DicomLoadError(
            f"{first.path}: ImageOrientationPatient missing or invalid; "
            "slice order and spacing cannot be known"
        )
    rows, columns = first.size
    if not (0 < rows <= MAX_IMAGE_SIDE and 0 < columns <= MAX_IMAGE_SIDE):
        raise DicomLoadError(
            f"{first.path}: image size {rows}x{columns} is outside 1..{MAX_IMAGE_SIDE} pixels a "
            "side, the CT images lunglib reads (a damaged or hostile Rows/Columns?)")
    sizes = Counter(h.size for h in members)
    if len(sizes) > 1:
        (common, _), *_ = sizes.most_common()
        odd = next(h for h in members if h.size != common)
        listing = ", ".join(f"{r}x{c} ({n} files)" for (r, c), n in sizes.most_common())
        raise DicomLoadError(
            f"{odd.path}: image size {odd.size[0]}x{odd.size[1]} differs from the rest of "
            f"series {uid}: mixed image sizes {listing}"
        )
    iop = np.asarray(first.orientation)
    same = [h.orientation is not None for h in members]
    if all(same):
        same = np.isclose([h.orientation for h in members], iop, atol=1e-3).all(axis=1)
    for h, ok in zip(members, same, strict=True):
        if not ok:
            raise DicomLoadError(
                f"{h.path}: ImageOrientationPatient {h.orientation} differs from "
                f"{first.orientation} in {first.path.name}; series {uid} mixes orientations"
            )


def place_slices(uid: str, members: list[Header], findings: list[QCFinding]) -> Slices:
    """Order the slices by their position along the normal of the first file's orientation.

    A slice without a finite ImagePositionPatient cannot be placed (file names and
    InstanceNumber are not reliable) and is skipped with a ``missing_position`` finding. Slices
    at equal positions keep their reading order. Expects a series that passed
    :func:`check_consistent`.

    Raises
    ------
    DicomLoadError
        When no slice has a position.
    """
    first = members[0]
    normal = slice_normal(first.orientation)
    assert normal is not None  # check_consistent guarantees a valid orientation
    placed = []
    for h in members:
        if h.position is not None and np.isfinite(h.position).all():
            placed.append(h)
        else:
            what = "missing" if h.position is None else f"not finite ({h.position})"
            findings.append(QCFinding(
                "missing_position", f"ImagePositionPatient {what}, the slice cannot be placed "
                "(file names and InstanceNumber are not reliable); slice skipped", "warning",
                str(h.path)))
    if not placed:
        raise DicomLoadError(
            f"{first.path}: ImagePositionPatient missing or invalid in every file of series "
            f"{uid}; slice order cannot be known"
        )
    positions = np.array([h.position for h in placed], dtype=float)
    z = positions @ normal
    order = np.argsort(z, kind="stable")
    return Slices([placed[i] for i in order], positions[order], z[order], normal)


def drop_duplicates(
    uid: str,
    slices: Slices,
    volume: np.ndarray,
    usable: np.ndarray,
    findings: list[QCFinding],
) -> tuple[Slices, np.ndarray]:
    """Keep the usable slices, without identical copies at one position.

    A slice at the same position as the usable slice before it is a copied file when its
    pixels are identical (dropped, ``duplicate_positions`` finding) and a mix of acquisitions
    when they differ (an error).

    Parameters
    ----------
    uid : str
        The series' uid, for the error message.
    slices, volume : Slices, ndarray
        The placed slices and their decoded pixels, one volume slice per slice.
    usable : ndarray of bool
        False for slices whose pixels could not be decoded; they are dropped too.
    findings : list of QCFinding
        Appended to.

    Returns
    -------
    Slices, ndarray
        The slices and volume slices kept.

    Raises
    ------
    DicomLoadError
        Naming both files when two different images share a position.
    """
    keep = usable.copy()
    z, headers = slices.z, slices.headers
    for i in np.flatnonzero(np.diff(z) < _SAME_POSITION_MM) + 1:
        j = i - 1
        while j > 0 and not keep[j]:
            j -= 1
        if not (keep[i] and keep[j]) or z[i] - z[j] >= _SAME_POSITION_MM:
            continue
        if not np.array_equal(volume[i], volume[j]):
            raise DicomLoadError(
                f"{headers[i].path}: same position ({z[i]:.2f} mm along the slice normal) as "
                f"{headers[j].path.name} but different pixels; series {uid} seems to mix "
                "acquisitions -- remove one of them or load another series"
            )
        keep[i] = False
        findings.append(QCFinding(
            "duplicate_positions", f"identical copy of {headers[j].path.name} at the same "
            "position; dropped", "warning", str(headers[i].path)))
    if keep.all():
        return slices, volume
    return slices.select(keep), volume[keep]


def pixel_spacing(uid: str, members: list[Header],
                  findings: list[QCFinding]) -> tuple[float, float]:
    """(row, column) spacing in mm, checked in every file of the series.

    A series without PixelSpacing anywhere is read at 1 mm with a ``missing_pixel_spacing``
    finding. Where only some files lack it and all the others agree, theirs is used and each
    file without it is named in a ``missing_pixel_spacing`` finding.

    Raises
    ------
    DicomLoadError
        Naming the file, when a PixelSpacing is not two finite positive numbers, or differs
        from the rest of the series (every voxel of the volume must have one size).
    """
    spacings: dict[tuple[float, float], list[Header]] = {}
    missing = []
    for h in members:
        value = h.pixel_spacing
        if value is None:
            missing.append(h)
            continue
        if len(value) != 2 or not all(np.isfinite(v) and v > 0 for v in value):
            raise DicomLoadError(
                f"{h.path}: PixelSpacing {' / '.join(f'{v:g}' for v in value)} is not two positive "
                "sizes in mm; the voxel size cannot be known (fix the tag, or leave this file "
                "out)")
        spacings.setdefault((round(value[0], 6), round(value[1], 6)), []).append(h)
    if not spacings:
        findings.append(QCFinding("missing_pixel_spacing", "PixelSpacing absent; assumed 1 mm",
                                  "warning", str(members[0].path)))
        return 1.0, 1.0
    if len(spacings) > 1:
        (common, _), *_ = sorted(spacings.items(), key=lambda item: -len(item[1]))
        odd = next(h for value, hs in spacings.items() if value != common for h in hs)
        listing = ", ".join(f"{r:g} x {c:g} mm ({len(hs)} files)"
                            for (r, c), hs in sorted(spacings.items(), key=lambda i: -len(i[1])))
        raise DicomLoadError(
            f"{odd.path}: PixelSpacing differs from the rest of series {uid}: {listing}; one "
            "volume needs one pixel size (leave the odd file out, or load it as its own series)")
    (row_spacing, col_spacing), = spacings
    for h in missing:
        findings.append(QCFinding(
            "missing_pixel_spacing", f"PixelSpacing absent in this file; the series' other "
            f"files all give {row_spacing:g} x {col_spacing:g} mm, used here", "warning",
            str(h.path)))
    return row_spacing, col_spacing


def _fill_gaps(
    volume: np.ndarray, z: np.ndarray, uids: list[str], step: float, tolerance: float
) -> tuple[np.ndarray, float, list[str]]:
    """Resample slices at sorted positions ``z`` onto a uniform grid over the same extent.

    The grid runs from the first to the last slice in steps as close to ``step`` as fit.
    Slices that lie on it are copied unchanged (and keep their uid); the other grid slices are
    linear interpolations of their two neighbours (uid ``""``). Returns the volume, the grid
    step and the uid of each grid slice.
    """
    n = int(round((z[-1] - z[0]) / step)) + 1
    grid = np.linspace(z[0], z[-1], n)
    step = float(grid[1] - grid[0])
    out = np.empty((n, *volume.shape[1:]), dtype=np.int16)
    out_uids = [""] * n
    exact = np.zeros(n, dtype=bool)
    nearest = np.clip(np.rint((z - z[0]) / step).astype(int), 0, n - 1)
    for i in np.flatnonzero(np.abs(grid[nearest] - z) <= tolerance * step):
        out[nearest[i]], out_uids[nearest[i]], exact[nearest[i]] = volume[i], uids[i], True
    for k in np.flatnonzero(~exact):
        upper = int(np.clip(np.searchsorted(z, grid[k]), 1, len(z) - 1))
        weight = (grid[k] - z[upper - 1]) / (z[upper] - z[upper - 1])
        out[k] = np.rint(volume[upper - 1] * (1 - weight) + volume[upper] * weight)
    return out, step, out_uids


def _spacing_problem(
    z: np.ndarray, headers: list[Header], step: float, tolerance: float
) -> tuple[str, str] | None:
    """``(code, description)`` of missing slices or uneven steps between positions ``z``."""
    steps = np.diff(z)
    uneven = np.abs(steps - step) > tolerance * step
    if not uneven.any():
        return None
    ratio = steps[uneven] / step
    where = ", ".join(
        f"{z[i]:.2f}..{z[i + 1]:.2f} mm (between {headers[i].path.name} and "
        f"{headers[i + 1].path.name})"
        for i in np.flatnonzero(uneven)[:5]
    )
    if (ratio > 1.5).all() and np.allclose(ratio, np.round(ratio), atol=tolerance * 10):
        n_missing = int(np.round(ratio).sum() - len(ratio))
        code, what = "missing_slices", f"{n_missing} slice(s) missing at {where}"
    else:
        code = "uneven_spacing"
        what = f"uneven slice spacing (steps {steps.min():.3f} to {steps.max():.3f} mm) at {where}"
    return code, what


def slice_spacing(
    slices: Slices,
    volume: np.ndarray,
    first: Header,
    allow_single_slice: bool,
    tolerance: float,
    findings: list[QCFinding],
) -> tuple[np.ndarray, float, list[str]]:
    """A volume with one z step, that step (mm) and the SOPInstanceUID of each slice.

    The step is the median distance between positions. When a step deviates from it by more
    than ``tolerance`` (relative), the volume is resampled onto a uniform grid over the same
    extent (:func:`_fill_gaps`; interpolated slices get uid ``""``) with a ``missing_slices``
    or ``uneven_spacing`` finding that states where. A single slice takes its step from the
    first file's SliceThickness, if ``allow_single_slice``.

    Raises
    ------
    DicomLoadError
        For a single slice without ``allow_single_slice``.
    """
    slice_uids = [h.sop_uid for h in slices.headers]
    if len(slices.headers) == 1:
        if not allow_single_slice:
            raise DicomLoadError(
                f"{slices.headers[0].path}: the series has a single usable slice; a CT volume "
                "needs several (pass allow_single_slice=True to read it as a one-slice volume)"
            )
        z_spacing = float(first.ds.get("SliceThickness", 1.0) or 1.0)
        findings.append(QCFinding("single_slice", "single-slice series; z spacing taken from "
                                  "SliceThickness", "info"))
        return volume, z_spacing, slice_uids
    z_spacing = float(np.median(np.diff(slices.z)))
    problem = _spacing_problem(slices.z, slices.headers, z_spacing, tolerance)
    if problem is not None:
        volume, z_spacing, slice_uids = _fill_gaps(
            volume, slices.z, slice_uids, z_spacing, tolerance)
        code, what = problem
        findings.append(QCFinding(code, (
            f"{what}; resampled onto a uniform {z_spacing:.3f} mm grid over the same extent: "
            f"{slice_uids.count('')} of {len(slice_uids)} slices are linear interpolations "
            "(slice_uids '')"), "warning"))
    return volume, z_spacing, slice_uids


def check_gantry_tilt(slices: Slices, pixel_mm: float, findings: list[QCFinding]) -> None:
    """Record a ``gantry_tilt`` finding when the positions of a multi-slice series drift
    sideways from the slice normal by more than half a pixel (``pixel_mm``, the smaller
    in-plane spacing): the volume is then sheared and its geometry approximate."""
    if len(slices.headers) < 2:
        return
    offsets = slices.positions - slices.positions[0]
    sideways = offsets - np.outer(offsets @ slices.normal, slices.normal)
    tilt = float(np.linalg.norm(sideways, axis=1).max())
    if tilt > 0.5 * pixel_mm:
        findings.append(QCFinding(
            "gantry_tilt", f"slice positions drift {tilt:.1f} mm sideways from the slice "
            "normal (gantry tilt); the volume is sheared and its geometry approximate",
            "warning"))
