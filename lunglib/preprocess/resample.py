"""Resampling in patient coordinates: isotropic voxels, block-averaged copies, a box onto a grid.

Geometry follows each scan's origin, spacing and direction (SimpleITK conventions: x, y, z order
for points and spacings, while arrays are indexed z, y, x), so scans with any slice order or
direction resample to the same place in the patient.

- :func:`resample_isotropic` resamples a whole volume to cubic voxels (the classic first step);
- :func:`shrink_to` block-averages a SimpleITK image to voxels of about a given size;
- :class:`OutputGrid` is a box of patient space sampled as ``(n_slices, size, size)`` voxels,
  :func:`box_grid` makes one around a box of voxels, and :func:`resample_box` resamples an image
  onto it with anti-aliasing.

The private helpers do the same on NumPy arrays with an explicit :class:`_Geometry`, so that
:func:`~lunglib.preprocess.prepare` never makes a SimpleITK image of a whole scan: the scan is
block-averaged in slabs of a few MB (:func:`_bin_shrink`), and only the part of an array under
an output grid is cut out (:func:`_cut_to_grid`) before it is resampled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from lunglib.io.dicom import CTScan


def _check_volume(volume: np.ndarray, spacing: Sequence[float], name: str = "volume") -> None:
    """Raise a ValueError unless ``volume`` is a 3-D array and ``spacing`` three positive mm."""
    if not isinstance(volume, np.ndarray) or volume.ndim != 3:
        shape = getattr(volume, "shape", volume)
        raise ValueError(f"{name} must be a 3-D (z, y, x) array, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive (z, y, x) values in mm, got {spacing}")


def _to_sitk(volume: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    return image


def _spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    return tuple(float(s) for s in image.GetSpacing()[::-1])  # type: ignore[return-value]


def resample_isotropic(
    volume: np.ndarray | CTScan,
    spacing: Sequence[float] | None = None,
    new_spacing_mm: float = 1.0,
    interpolator: str = "linear",
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Resample a volume to cubic voxels of ``new_spacing_mm`` with SimpleITK.

    The output covers the same physical extent: ``shape * spacing`` is kept to within one output
    voxel (the number of voxels is rounded).

    Parameters
    ----------
    volume : ndarray (z, y, x) or CTScan
        The volume; a :class:`CTScan` brings its own spacing.
    spacing : sequence of float, optional
        Voxel size (z, y, x) in mm; required for an array.
    new_spacing_mm : float, default 1.0
        Edge of the output voxels.
    interpolator : {"linear", "nearest", "bspline"}
        ``nearest`` for label masks.

    Returns
    -------
    (ndarray, tuple)
        The resampled volume (same dtype) and its exact spacing (z, y, x).
    """
    if isinstance(volume, CTScan):
        volume, spacing = volume.hu, volume.spacing
    if spacing is None:
        raise ValueError("spacing is required when volume is an array")
    _check_volume(volume, spacing)
    if new_spacing_mm <= 0:
        raise ValueError(f"new_spacing_mm must be positive, got {new_spacing_mm}")
    interpolators = {
        "linear": sitk.sitkLinear,
        "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
    }
    if interpolator not in interpolators:
        raise ValueError(
            f"interpolator must be one of {sorted(interpolators)}, got {interpolator!r}"
        )
    image = _to_sitk(volume, spacing)
    extent = np.asarray(volume.shape[::-1]) * np.asarray(spacing[::-1], dtype=float)
    size = np.maximum(1, np.round(extent / new_spacing_mm)).astype(int)
    # Keep the outer edges of the volume where they were: origin moves by half a voxel change.
    out_spacing = extent / size
    half_step = 0.5 * (out_spacing - np.asarray(image.GetSpacing()))
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + direction @ half_step
    resampled = sitk.Resample(
        image,
        [int(s) for s in size],
        sitk.Transform(),
        interpolators[interpolator],
        tuple(origin),
        tuple(float(s) for s in out_spacing),
        image.GetDirection(),
        float(volume.min()),
        image.GetPixelID(),
    )
    return sitk.GetArrayFromImage(resampled), tuple(float(s) for s in out_spacing[::-1])


def shrink_to(image: sitk.Image, voxel_mm: float = 2.5) -> sitk.Image:
    """Block-average a SimpleITK image to voxels of about ``voxel_mm`` (integer factors per axis).

    ``sitk.BinShrink`` averages whole blocks of voxels and keeps the physical geometry right
    (origin and spacing follow): a cheap copy to segment the lungs on, where a mask needs no
    millimetre detail.
    """
    factors = [max(1, int(round(voxel_mm / s))) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


# Arrays of a scan handed to SimpleITK a slab at a time: about this many bytes per slab.
_SLAB_BYTES = 8 * 2**20


@dataclass(frozen=True)
class _Geometry:
    """Where the voxels of a (z, y, x) array sit in patient space (SimpleITK's x, y, z order)."""

    spacing: np.ndarray  # (x, y, z) mm
    origin: np.ndarray  # (x, y, z) mm, centre of voxel 0
    direction: np.ndarray  # 3 x 3

    @classmethod
    def of(cls, scan: CTScan) -> _Geometry:
        return cls(np.asarray(scan.spacing[::-1], float), np.asarray(scan.origin, float),
                   np.asarray(scan.direction, float).reshape(3, 3))

    def image(self, array: np.ndarray) -> sitk.Image:
        """A SimpleITK image of ``array`` (copied) with this geometry."""
        image = sitk.GetImageFromArray(array)
        image.SetSpacing([float(v) for v in self.spacing])
        image.SetOrigin([float(v) for v in self.origin])
        image.SetDirection([float(v) for v in self.direction.ravel()])
        return image

    def moved(self, start_xyz: np.ndarray) -> _Geometry:
        """The geometry of a crop starting at voxel ``start_xyz`` (x, y, z)."""
        origin = self.origin + self.direction @ (np.asarray(start_xyz, float) * self.spacing)
        return _Geometry(self.spacing, origin, self.direction)

    def shrunk(self, factors_xyz: Sequence[int]) -> _Geometry:
        """The geometry ``sitk.BinShrink`` gives: block centres, spacing times the factors."""
        factors = np.asarray(factors_xyz, float)
        origin = self.origin + self.direction @ ((factors - 1.0) / 2.0 * self.spacing)
        return _Geometry(self.spacing * factors, origin, self.direction)

    def continuous_index(self, point: np.ndarray) -> np.ndarray:
        return np.linalg.solve(self.direction * self.spacing, np.asarray(point) - self.origin)


def _bin_shrink(volume: np.ndarray, factors_xyz: Sequence[int]) -> np.ndarray:
    """``sitk.BinShrink`` of a (z, y, x) array (same numbers, same dtype), a slab at a time.

    A SimpleITK image of a whole scan would be a fresh allocation of the scan's size whose pages
    are all faulted in, then copied into, costing more than the shrink itself; slabs of a few MB
    are copied into memory the allocator hands back again and again.
    """
    fx, fy, fz = (int(f) for f in factors_xyz)
    nz, ny, nx = volume.shape[0] // fz, volume.shape[1] // fy, volume.shape[2] // fx
    if min(nz, ny, nx) == 0:
        raise ValueError(
            f"cannot block-average a volume of shape {volume.shape} (z, y, x) by {factors_xyz} "
            "(x, y, z): an axis has fewer voxels than one block; use a smaller voxel size"
        )
    out = np.empty((nz, ny, nx), dtype=volume.dtype)
    per_slice = volume.shape[1] * volume.shape[2] * volume.itemsize
    step = max(1, _SLAB_BYTES // (per_slice * fz)) * fz
    for start in range(0, nz * fz, step):
        stop = min(start + step, nz * fz)
        part = sitk.BinShrink(sitk.GetImageFromArray(volume[start:stop]), [fx, fy, fz])
        out[start // fz:stop // fz] = sitk.GetArrayViewFromImage(part)
    return out


def _shrunk_copy(
    volume: np.ndarray, geometry: _Geometry, voxel_mm: float
) -> tuple[np.ndarray, _Geometry]:
    """``volume`` block-averaged to voxels of about ``voxel_mm`` (integer factors), with its
    geometry; ``volume`` itself when no axis shrinks. A factor never exceeds its axis' length."""
    factors = [max(1, min(int(round(voxel_mm / s)), n))
               for s, n in zip(geometry.spacing, volume.shape[::-1], strict=True)]
    if max(factors) == 1:
        return volume, geometry
    return _bin_shrink(volume, factors), geometry.shrunk(factors)


@dataclass(frozen=True)
class OutputGrid:
    """A box of patient space sampled as ``shape`` (z, y, x) voxels (SimpleITK conventions)."""

    shape: tuple[int, int, int]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]  # (z, y, x)
    direction: tuple[float, ...]

    def resample(
        self, image: sitk.Image, interpolator: int = sitk.sitkLinear, default: float = 0.0
    ) -> sitk.Image:
        """``image`` resampled onto this grid (float32; ``default`` outside the image)."""
        return sitk.Resample(
            image,
            [int(s) for s in self.shape[::-1]],
            sitk.Transform(),
            interpolator,
            self.origin,
            tuple(float(s) for s in self.spacing[::-1]),
            self.direction,
            float(default),
            sitk.sitkFloat32,
        )


def box_grid(
    reference: sitk.Image,
    box: Sequence[slice],
    shape: tuple[int, int, int],
    margin_mm: float = 0.0,
    square: bool = False,
) -> OutputGrid:
    """Output grid of ``shape`` (z, y, x) covering the voxels ``box`` (z, y, x) of ``reference``.

    ``box`` is a tuple of slices such as :func:`~lunglib.preprocess.mask_bbox` returns. The grid
    runs from the outer edge of the box's first voxel to the outer edge of its last, plus
    ``margin_mm`` on every side; ``square`` grows the shorter of y and x to the longer.
    """
    spacing = np.asarray(_spacing_zyx(reference))
    lo = np.array([s.start for s in box])
    hi = np.array([s.stop - 1 for s in box])
    start = lo - 0.5 - margin_mm / spacing
    stop = hi + 0.5 + margin_mm / spacing
    if square:
        extent_mm = (stop - start) * spacing
        side = max(extent_mm[1], extent_mm[2])
        for axis in (1, 2):
            grow = (side - extent_mm[axis]) / spacing[axis] / 2.0
            start[axis] -= grow
            stop[axis] += grow
    step = (stop - start) / np.asarray(shape)  # in reference voxels
    first = start + 0.5 * step
    origin = reference.TransformContinuousIndexToPhysicalPoint([float(v) for v in first[::-1]])
    return OutputGrid(
        shape=tuple(int(s) for s in shape),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        spacing=tuple(float(v) for v in step * spacing),  # type: ignore[arg-type]
        direction=tuple(reference.GetDirection()),
    )


def resample_box(image: sitk.Image, grid: OutputGrid, default: float = 0.0) -> np.ndarray:
    """Resample ``image`` onto ``grid`` with linear interpolation and anti-aliasing.

    Where an output voxel spans several input voxels, only the region of the image under the grid
    is cut out and block-averaged by the whole shrink factor (``sitk.BinShrink``, a box filter)
    before the linear interpolation -- the usual guard against aliasing, at a fraction of the cost
    of blurring the whole scan.
    """
    factor = np.asarray(grid.spacing[::-1]) / np.asarray(image.GetSpacing())
    shrink = [max(1, int(f)) for f in factor]
    if max(shrink) > 1:
        image = sitk.BinShrink(_crop_to_grid(image, grid), shrink)
    return sitk.GetArrayFromImage(grid.resample(image, sitk.sitkLinear, default))


def _region_under_grid(
    grid: OutputGrid,
    to_index: Callable[[np.ndarray], Sequence[float]],
    voxel_mm: np.ndarray,
    size_xyz: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """First and last voxel (x, y, z) of a volume under ``grid``, plus a few voxels for the
    interpolation and the block-averaging; None when the grid misses the volume.

    ``to_index`` maps a patient-space point to the volume's continuous voxel index,
    ``voxel_mm`` is the volume's spacing and ``size_xyz`` its size (x, y, z).
    """
    size = np.asarray(grid.shape[::-1]) - 1
    spacing = np.asarray(grid.spacing[::-1])
    direction = np.asarray(grid.direction).reshape(3, 3)
    origin = np.asarray(grid.origin)
    corners = np.asarray([to_index(origin + direction @ (np.asarray(c) * size * spacing))
                          for c in np.ndindex(2, 2, 2)])
    pad = np.ceil(spacing / voxel_mm) + 2
    lo = np.clip(np.floor(corners.min(axis=0) - pad), 0, None).astype(int)
    hi = np.minimum(np.ceil(corners.max(axis=0) + pad).astype(int), size_xyz - 1)
    return None if np.any(hi < lo) else (lo, hi)


def _crop_to_grid(image: sitk.Image, grid: OutputGrid) -> sitk.Image:
    """The part of ``image`` under ``grid`` plus a few voxels, as a (cheap) region of interest."""
    region = _region_under_grid(
        grid, lambda point: image.TransformPhysicalPointToContinuousIndex(point.tolist()),
        np.asarray(image.GetSpacing()), np.asarray(image.GetSize()))
    if region is None:
        return image
    lo, hi = region
    return sitk.RegionOfInterest(image, [int(v) for v in hi - lo + 1], [int(v) for v in lo])


def _cut_to_grid(
    volume: np.ndarray, geometry: _Geometry, grid: OutputGrid
) -> tuple[np.ndarray, _Geometry] | None:
    """The part of ``volume`` under ``grid`` plus a few voxels (as :func:`_crop_to_grid`), a
    NumPy view, with its geometry; None when the grid misses the volume."""
    region = _region_under_grid(grid, geometry.continuous_index, geometry.spacing,
                                np.asarray(volume.shape[::-1]))
    if region is None:
        return None
    lo, hi = region
    crop = tuple(slice(int(a), int(b) + 1) for a, b in zip(lo[::-1], hi[::-1], strict=True))
    return volume[crop], geometry.moved(lo)


def _resample_array(part: np.ndarray, geometry: _Geometry, grid: OutputGrid,
                    default: float = 0.0) -> np.ndarray:
    """:func:`resample_box` for an array cut by :func:`_cut_to_grid`: the same numbers, without
    ever making a SimpleITK image of the whole scan."""
    factor = np.asarray(grid.spacing[::-1]) / geometry.spacing
    shrink = [max(1, int(f)) for f in factor]
    if max(shrink) > 1:
        part, geometry = _bin_shrink(part, shrink), geometry.shrunk(shrink)
    return sitk.GetArrayFromImage(grid.resample(geometry.image(part), sitk.sitkLinear, default))


def _resample_labels(
    labels: np.ndarray, geometry: _Geometry, grid: OutputGrid
) -> tuple[np.ndarray, list[int]]:
    """Resample a label volume (0 background, k > 0) label by label; returns (labels, lost ids).

    Each label's indicator is resampled like the image (anti-aliased, linear) and a voxel takes
    the label whose fraction is highest and at least 0.5. A label too small for the output grid
    keeps the one voxel where its fraction peaks, so no nodule inside the box disappears.
    """
    out = np.zeros(grid.shape, dtype=np.uint8)
    best = np.zeros(grid.shape, dtype=np.float32)
    ids = [int(k) for k in np.unique(labels[labels > 0])]
    cut = _cut_to_grid(labels, geometry, grid)
    if cut is None:
        return out, ids
    part, part_geometry = cut
    outside: list[int] = []
    for k in ids:
        fraction = _resample_array((part == k).astype(np.float32), part_geometry, grid)
        take = (fraction >= 0.5) & (fraction > best)
        if not take.any():
            peak = np.unravel_index(int(np.argmax(fraction)), fraction.shape)
            if fraction[peak] <= 0.0:
                outside.append(k)
                continue
            take = np.zeros_like(take)
            take[peak] = True
        out[take] = min(k, 255)
        best[take] = fraction[take]
    return out, outside

