"""From a Hounsfield-unit CT volume to the model's input: lungs found, cropped, windowed, resized.

Each step is a plain function a student can call and look at on its own:

=========================  ===================================================================
:func:`resample_isotropic` resample to cubic voxels (default 1 mm) -- the classic first step
:func:`segment_lungs`      classical lung mask: threshold, components, airways out, holes filled
:func:`lung_bbox`          the lung bounding box, in voxels and in mm
:func:`window`             clip HU to a window (default [-1000, 400]) and scale to [0, 1]
:func:`resample_box`       resample one box of the scan straight onto an output grid
:func:`fit_zero_center`    dataset mean, from the training split only
:func:`zero_center`        subtract that mean
=========================  ===================================================================

and :func:`prepare` chains them into the volume a CNN sees.

Why :func:`prepare` does not resample the whole scan to 1 mm first
-------------------------------------------------------------------
The widely copied Kaggle DSB2017 recipe resamples the full scan to 1 mm voxels (a 512x512x300
scan becomes ~350x350x400 float voxels, often more), segments the lungs at that resolution, and
then throws almost all of it away when shrinking to 32x64x64. :func:`prepare` gets the same
answer for a fraction of the cost:

1. the scan is read once, to block-average it to a ~2.5 mm working copy (``sitk.BinShrink``),
   and that copy once more to ~5 mm, where the lungs are segmented -- a mask does not need
   millimetre detail to find a bounding box (the default output has 4-5 mm pixels); after the
   first labelling, the segmentation works inside the lungs' bounding box only;
2. the lung box is turned into an output grid in patient coordinates (origin, spacing,
   direction), so that the box is resampled **once**, directly to ``(n_slices, size, size)``,
   with ``sitk.Resample`` -- linear for the image, after block-averaging (``sitk.BinShrink``) of
   the cropped region by the whole shrink factor against aliasing, and linear-then-threshold for
   the masks. The image is resampled from the ~2.5 mm working copy when the output grid is no
   finer than that copy on any axis (the default), and from the full-resolution scan otherwise.

The scan itself stays a NumPy array: only the small copies and the crop under the output grid
become SimpleITK images, and the scan is fed to ``sitk.BinShrink`` in slabs of a few MB (a
SimpleITK image of the whole scan is a fresh 70-150 MB allocation whose page faults and copy
cost more than the shrink). On the real LIDC-IDRI-0001 series :func:`prepare` costs about 0.5x
the time pydicom needs to decode the files (``benchmarks/bench_preprocess.py``).

Geometry follows each scan's origin, spacing and direction (SimpleITK conventions) throughout,
so scans with any slice order or direction give the same prepared volume.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from lunglib.io.dicom import CTScan
from lunglib.io.qc import QCFinding
from lunglib.settings import Settings

#: Bump when a change to this module changes prepared volumes (it is part of the cache key).
PREPROCESS_VERSION = "3"

LUNG_THRESHOLD_HU = -320
AIRWAY_THRESHOLDS_HU = (-950, -975, -990, -1000)
MIN_LUNG_ML = 200.0
PLAUSIBLE_LUNG_ML = (1000.0, 10000.0)


@dataclass(frozen=True)
class PrepareOptions:
    """Preprocessing choices that shape a prepared volume (all part of the cache key).

    Parameters
    ----------
    window : (float, float)
        HU range kept by :func:`window`; ``lo`` maps to 0 and ``hi`` to 1.
    work_voxel_mm : float
        Approximate voxel size of the block-averaged working copy of the scan; the output image
        is resampled from it whenever the output grid is no finer than it on any axis.
    seg_voxel_mm : float
        Approximate voxel size of the copy the lungs are segmented on (made from the working
        copy).
    margin_mm : float
        Space added around the lung bounding box on every side.
    square : bool
        Grow the shorter in-plane side of the box so that x and y keep the same mm per pixel
        (no anatomical stretching); the box is centred on the lungs either way.
    """

    window: tuple[float, float] = (-1000.0, 400.0)
    work_voxel_mm: float = 2.5
    seg_voxel_mm: float = 5.0
    margin_mm: float = 5.0
    square: bool = True

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.window)
        if not lo < hi:
            raise ValueError(f"window must be (lo, hi) with lo < hi, got {self.window}")
        object.__setattr__(self, "window", (lo, hi))
        if self.work_voxel_mm <= 0 or self.seg_voxel_mm <= 0 or self.margin_mm < 0:
            raise ValueError(
                "work_voxel_mm and seg_voxel_mm must be > 0 and margin_mm >= 0, got "
                f"{self.work_voxel_mm}, {self.seg_voxel_mm} and {self.margin_mm}"
            )

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class PreparedVolume:
    """A model-ready volume and its masks, all on the same ``(n_slices, size, size)`` grid.

    Attributes
    ----------
    image : ndarray of float32
        Windowed intensities in [0, 1].
    lung_mask : ndarray of uint8
        1 inside the lungs.
    nodule_mask : ndarray of uint8 or None
        0 background, k for nodule k (None when the dataset has no nodule masks).
    spacing : tuple of float
        Output voxel size (z, y, x) in mm.
    bbox_mm : tuple of tuple
        The cropped box as ``((x0, y0, z0), (x1, y1, z1))``: patient-coordinate positions (mm)
        of the centres of its first and last output voxels.
    qc : list of QCFinding
        What was found on the way (no lungs, unusual lung volume, nodules outside the box...).
    lung_volume_ml : float
        Volume of the lung mask on the segmentation grid, in millilitres.
    source_shape : tuple of int
        Shape (z, y, x) of the scan that was prepared.
    source_spacing : tuple of float
        Its voxel size (z, y, x) in mm.
    """

    image: np.ndarray
    lung_mask: np.ndarray
    nodule_mask: np.ndarray | None
    spacing: tuple[float, float, float]
    bbox_mm: tuple[tuple[float, float, float], tuple[float, float, float]]
    qc: list[QCFinding] = field(default_factory=list)
    lung_volume_ml: float = 0.0
    source_shape: tuple[int, int, int] = (0, 0, 0)
    source_spacing: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def ok(self) -> bool:
        """False when a finding says the volume should not be used (severity ``error``)."""
        return not any(f.severity == "error" for f in self.qc)


# --------------------------------------------------------------------------------------------
# small helpers


def _check_volume(volume: np.ndarray, spacing: Sequence[float], name: str = "volume") -> None:
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


# --------------------------------------------------------------------------------------------
# the steps


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
    (origin and spacing follow). :func:`prepare` segments the lungs on this cheap copy.
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

    One SimpleITK image of a whole 512 x 512 x 300 scan is a fresh allocation of 150 MB whose
    pages are all faulted in, then copied into -- together slower than the shrink itself. Slabs
    of a few MB are copied into memory the allocator hands back again and again.
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


def _superior_is_high_z(direction: np.ndarray | None) -> bool:
    """Whether a higher slice index is closer to the head (LPS: +z is superior)."""
    if direction is None:
        return True
    return bool(np.asarray(direction)[2, 2] >= 0)


def _find_trachea_seed(
    candidate: np.ndarray, hu: np.ndarray, spacing: Sequence[float], superior_high: bool
) -> np.ndarray | None:
    """Voxels of the trachea lumen in the most superior slices where it shows, or None.

    In the top slices of a chest CT the trachea is the one air-filled tube of 1-8 cm2 near the
    middle of the body, left to right; lung apices sit to either side.
    """
    pixel_mm2 = spacing[1] * spacing[2]
    zs = np.flatnonzero(candidate.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    order = zs[::-1] if superior_high else zs
    body_x = np.flatnonzero((hu > -500).any(axis=(0, 1)))
    x_mid = 0.5 * (body_x[0] + body_x[-1]) if body_x.size else hu.shape[2] / 2
    x_half = 0.5 * (body_x[-1] - body_x[0]) if body_x.size else hu.shape[2] / 2
    # Look through the top ~40 mm of the candidate region.
    for z in order[: max(1, int(round(40.0 / spacing[0])))]:
        labels, n = ndimage.label(candidate[z])
        if n == 0:
            continue
        areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        centres = ndimage.center_of_mass(np.ones_like(labels), labels, np.arange(1, n + 1))
        for k, (area, (_, cx)) in enumerate(zip(areas, centres, strict=False), start=1):
            if 80.0 <= area * pixel_mm2 <= 800.0 and abs(cx - x_mid) < 0.25 * x_half:
                seed = np.zeros_like(candidate)
                seed[z] = labels == k
                return seed
    return None


def _select(labels: np.ndarray, n: int, chosen) -> np.ndarray:
    """Boolean mask of the voxels whose label is in ``chosen`` (a lookup table, not np.isin)."""
    table = np.zeros(n + 1, dtype=bool)
    table[np.asarray(chosen, dtype=int)] = True
    return table[labels]


def _largest(sizes: np.ndarray, keep: int = 2, min_fraction: float = 0.1) -> list[int]:
    """Ids of the ``keep`` largest labels (``sizes[k]`` voxels of label k; label 0 and labels of
    size 0 never count); the smaller ones only if >= min_fraction of the largest."""
    sizes = np.asarray(sizes).copy()
    sizes[0] = 0
    order = np.argsort(sizes[1:])[::-1][:keep] + 1
    if order.size == 0 or sizes[order[0]] == 0:
        return []
    return [int(k) for k in order if sizes[k] > 0 and sizes[k] >= min_fraction * sizes[order[0]]]


def _largest_components(
    mask: np.ndarray, keep: int = 2, min_fraction: float = 0.1
) -> tuple[np.ndarray, int, list[int]]:
    """The ``keep`` largest 3-D components of ``mask`` (see :func:`_largest`): (labels, n, ids)."""
    labels, n = ndimage.label(mask)
    return labels, n, _largest(np.bincount(labels.ravel(), minlength=n + 1), keep, min_fraction)


def segment_lungs(
    hu: np.ndarray,
    spacing: Sequence[float],
    direction: np.ndarray | None = None,
    threshold_hu: float = LUNG_THRESHOLD_HU,
    closing_mm: float = 5.0,
    max_hole_mm2: float = 2000.0,
) -> np.ndarray:
    """Classical lung segmentation: both lungs, airways removed, vessels and nodules kept.

    Steps (each a standard image-processing operation from :mod:`scipy.ndimage`):

    1. voxels below ``threshold_hu`` are air or lung;
    2. air connected to the in-plane border of the image (outside the body) is removed;
    3. the two largest 3-D components are kept (one when the lungs touch each other);
    4. the trachea and main bronchi are found from a seed in the top slices (an air tube near the
       middle of the body), grown through very low HU (< -950, lowered if the growth leaks into
       the lungs) and removed, and the lungs re-selected;
    5. each lung gets a closing of ``closing_mm`` and per-slice filling of holes up to
       ``max_hole_mm2``, which brings back vessels and juxtapleural nodules that the threshold
       left out (each lung alone, so the mediastinum between them is never filled). A hole
       that opens downwards into the tissue under the lung is left out: that is the top of
       the liver (or spleen) dome, which pokes up into the lung base and shows, slice by
       slice, as a disc surrounded by lung -- a hole in 2-D but not in 3-D.

    Parameters
    ----------
    hu : ndarray (z, y, x)
        Hounsfield units (any resolution; :func:`prepare` passes a ~5 mm copy).
    spacing : sequence of float
        Voxel size (z, y, x) in mm.
    direction : ndarray (3, 3), optional
        The scan's direction matrix; tells which end is the head (default: higher z).
    threshold_hu : float, default -320
    closing_mm : float, default 5.0
    max_hole_mm2 : float, default 2000

    Returns
    -------
    ndarray of uint8
        1 inside the lungs. All zeros when nothing lung-like was found (check the volume).
    """
    _check_volume(hu, spacing, "hu")
    # Steps 1-3 in one labelling: components touching the in-plane border (air outside the
    # body) get size 0, so they are never among the largest.
    labels, n = ndimage.label(hu < threshold_hu)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    border = [labels[:, [0, -1], :], labels[:, :, [0, -1]]]
    sizes[np.unique(np.concatenate([b.ravel() for b in border]))] = 0
    chosen = _largest(sizes)
    if not chosen:
        return np.zeros(hu.shape, dtype=np.uint8)
    lungs = _select(labels, n, chosen)
    superior_high = _superior_is_high_z(direction)
    seed = _find_trachea_seed(lungs, hu, spacing, superior_high)

    # Everything from here on happens inside the lungs' bounding box (plus the closing radius):
    # the same result as on the whole volume, on a fraction of the voxels.
    radius = np.maximum(1, np.round(closing_mm / np.asarray(spacing))).astype(int)
    lo, hi = lung_bbox(lungs)
    box = tuple(slice(int(a), int(b)) for a, b in zip(
        np.maximum(lo - radius - 2, 0), np.minimum(hi + radius + 3, hu.shape), strict=True))
    lungs, hu_box = lungs[box], hu[box]
    labels = labels[box]
    if seed is not None:
        seed = seed[box]
        voxel_ml = float(np.prod(spacing)) / 1000.0
        for airway_hu in AIRWAY_THRESHOLDS_HU:
            low = lungs & (hu_box < airway_hu)
            grown, n_grown = ndimage.label(low | seed)
            ids = np.unique(grown[seed])
            airway = _select(grown, n_grown, ids[ids > 0])
            if airway.sum() * voxel_ml < 150.0:  # larger means it leaked into emphysematous lung
                break
        else:
            airway = seed
        lungs = lungs & ~_dilate_once(airway)
        labels, n, chosen = _largest_components(lungs)

    # Each lung is closed and filled on its own: closing both at once would bridge the anterior
    # junction and hole filling would then swallow the mediastinum between them.
    out = np.zeros(hu.shape, dtype=bool)
    for k in chosen:
        out[box] |= _close_and_fill(labels == k, radius, spacing, max_hole_mm2, superior_high)
    return out.view(np.uint8)


def _dilate_once(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=1)``, computed around the mask only."""
    found = lung_bbox(mask)
    out = np.zeros_like(mask)
    if found is None:
        return out
    lo, hi = found
    box = tuple(slice(int(a), int(b)) for a, b in zip(
        np.maximum(lo - 1, 0), np.minimum(hi + 2, mask.shape), strict=True))
    out[box] = ndimage.binary_dilation(mask[box], iterations=1)
    return out


def _close_and_fill(
    lung: np.ndarray,
    radius: np.ndarray,
    spacing: Sequence[float],
    max_hole_mm2: float,
    superior_high: bool = True,
) -> np.ndarray:
    """Box closing (separable max/min filters), then per-slice filling of holes up to
    ``max_hole_mm2`` (vessels, nodules; not the heart) -- inside the lung's bounding box.

    The per-slice holes are grouped into 3-D pieces; a piece that lies directly on top of tissue
    outside the lung (not lung, not a hole) in the next slice towards the feet is a bay open
    downwards -- the dome of the liver or spleen under the lung base -- and is not filled.
    A nodule or vessel has lung or more of itself beneath it and is filled as before.
    """
    lo, hi = lung_bbox(lung)
    lo = np.maximum(lo - radius - 1, 0)
    hi = np.minimum(hi + radius + 2, lung.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    size = tuple(int(2 * r + 1) for r in radius)
    padded = np.pad(lung[box].view(np.uint8), [(r, r) for r in radius])
    closed = ndimage.minimum_filter(ndimage.maximum_filter(padded, size=size), size=size)
    part = closed[tuple(slice(r, -r) for r in radius)].astype(bool)
    # A hole is a piece of background, within one slice, that does not reach the slice's edge.
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    labels, n = ndimage.label(~part, structure=in_plane)
    if n:
        edge = np.concatenate([labels[:, [0, -1], :].ravel(), labels[:, :, [0, -1]].ravel()])
        areas = np.bincount(labels.ravel(), minlength=n + 1) * spacing[1] * spacing[2]
        fill = areas <= max_hole_mm2
        fill[0] = False
        fill[np.unique(edge)] = False
        holes = fill[labels]
        if holes.any():
            holes &= ~_open_downwards(holes, ~part & ~holes, superior_high)
        part |= holes
    out = np.zeros_like(lung)
    out[box] = part
    return out


def _open_downwards(holes: np.ndarray, outside: np.ndarray, superior_high: bool) -> np.ndarray:
    """The 3-D pieces of ``holes`` with a voxel right above an ``outside`` voxel (one slice
    towards the feet); the voxels of those pieces."""
    pieces, n = ndimage.label(holes)
    over = np.zeros_like(holes)
    if superior_high:  # the feet are at lower z
        over[1:] = holes[1:] & outside[:-1]
    else:
        over[:-1] = holes[:-1] & outside[1:]
    ids = np.unique(pieces[over])
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros_like(holes)
    return _select(pieces, n, ids)


def lung_volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a binary mask in millilitres."""
    return float(np.count_nonzero(mask) * np.prod(spacing) / 1000.0)


def lung_bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """First and last voxel index (z, y, x) of a mask, inclusive; None when it is empty."""
    nonzero = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
               for ax in range(3)]
    if any(idx.size == 0 for idx in nonzero):
        return None
    return (np.array([idx[0] for idx in nonzero]), np.array([idx[-1] for idx in nonzero]))


def window(hu: np.ndarray, lo: float = -1000.0, hi: float = 400.0) -> np.ndarray:
    """Clip to ``[lo, hi]`` HU and scale linearly to [0, 1] (float32)."""
    if not lo < hi:
        raise ValueError(f"window needs lo < hi, got lo={lo}, hi={hi}")
    out = (np.asarray(hu, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def fit_zero_center(*, train: Iterable[np.ndarray]) -> float:
    """Mean intensity of the **training** volumes, for :func:`zero_center`.

    The argument is keyword-only and called ``train`` on purpose: the mean must never see
    validation or test volumes, or their information leaks into the model. Volumes are read one
    at a time (a running sum), so a generator over a cache keeps memory flat.
    """
    total, count = 0.0, 0
    for volume in train:
        arr = np.asarray(volume, dtype=np.float64)
        total += float(arr.sum())
        count += arr.size
    if count == 0:
        raise ValueError("fit_zero_center(train=...) got no training volumes")
    return total / count


def zero_center(images: np.ndarray, mean: float) -> np.ndarray:
    """Subtract the training-split mean from :func:`fit_zero_center` (float32)."""
    return (np.asarray(images, dtype=np.float32) - np.float32(mean)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# resampling a box onto the output grid


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
    lo: np.ndarray,
    hi: np.ndarray,
    shape: tuple[int, int, int],
    margin_mm: float = 0.0,
    square: bool = False,
) -> OutputGrid:
    """Output grid of ``shape`` (z, y, x) covering voxels ``lo..hi`` (z, y, x) of ``reference``.

    The box runs from the outer edge of voxel ``lo`` to the outer edge of voxel ``hi``, plus
    ``margin_mm`` on every side; ``square`` grows the shorter of y and x to the longer.
    """
    spacing = np.asarray(_spacing_zyx(reference))
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


def _crop_to_grid(image: sitk.Image, grid: OutputGrid) -> sitk.Image:
    """The part of ``image`` under ``grid`` plus a few voxels, as a (cheap) region of interest."""
    corners = []
    size = np.asarray(grid.shape[::-1]) - 1
    spacing = np.asarray(grid.spacing[::-1])
    direction = np.asarray(grid.direction).reshape(3, 3)
    for corner in np.ndindex(2, 2, 2):
        ijk = np.asarray(corner) * size
        point = np.asarray(grid.origin) + direction @ (ijk * spacing)
        corners.append(image.TransformPhysicalPointToContinuousIndex(point.tolist()))
    corners = np.asarray(corners)
    pad = np.ceil(spacing / np.asarray(image.GetSpacing())) + 2
    lo = np.clip(np.floor(corners.min(axis=0) - pad), 0, None).astype(int)
    hi = np.minimum(np.ceil(corners.max(axis=0) + pad).astype(int), np.asarray(image.GetSize()) - 1)
    if np.any(hi < lo):
        return image
    return sitk.RegionOfInterest(image, [int(v) for v in hi - lo + 1], [int(v) for v in lo])


def _cut_to_grid(
    volume: np.ndarray, geometry: _Geometry, grid: OutputGrid
) -> tuple[np.ndarray, _Geometry] | None:
    """The part of ``volume`` under ``grid`` plus a few voxels (as :func:`_crop_to_grid`), a
    NumPy view, with its geometry; None when the grid misses the volume."""
    size = np.asarray(grid.shape[::-1]) - 1
    spacing = np.asarray(grid.spacing[::-1])
    direction = np.asarray(grid.direction).reshape(3, 3)
    origin = np.asarray(grid.origin)
    corners = np.asarray([geometry.continuous_index(origin + direction @ (np.asarray(c) * size
                                                                         * spacing))
                          for c in np.ndindex(2, 2, 2)])
    pad = np.ceil(spacing / geometry.spacing) + 2
    lo = np.clip(np.floor(corners.min(axis=0) - pad), 0, None).astype(int)
    hi = np.minimum(np.ceil(corners.max(axis=0) + pad).astype(int),
                    np.asarray(volume.shape[::-1]) - 1)
    if np.any(hi < lo):
        return None
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


# --------------------------------------------------------------------------------------------
# the whole chain


def prepare(
    scan: CTScan,
    settings: Settings | None = None,
    nodule_mask: np.ndarray | None = None,
    options: PrepareOptions | None = None,
) -> PreparedVolume:
    """Turn one CT scan into the model's ``(n_slices, size, size)`` input and its masks.

    Parameters
    ----------
    scan : CTScan
        From :func:`lunglib.load_scan` or a dataset's ``load_scan``.
    settings : Settings, optional
        ``size`` and ``n_slices`` of the output (default ``Settings()``: 32 x 64 x 64).
    nodule_mask : ndarray, optional
        Nodule labels in the scan's voxel grid (0 background, k nodule k).
    options : PrepareOptions, optional
        Window, segmentation voxel size, margin, square crop.

    Returns
    -------
    PreparedVolume
        When no lungs are found the whole scan is resized instead and ``qc`` holds an ``error``
        finding ``no_lungs_found`` (``PreparedVolume.ok`` is False); nothing is raised.
    """
    if not isinstance(scan, CTScan):
        raise TypeError(
            f"prepare needs a lunglib CTScan (from load_scan), got {type(scan).__name__}"
        )
    settings = settings or Settings()
    options = options or PrepareOptions()
    shape = (settings.n_slices, settings.size, settings.size)
    if nodule_mask is not None and nodule_mask.shape != scan.hu.shape:
        raise ValueError(
            f"nodule_mask shape {nodule_mask.shape} differs from the scan's {scan.hu.shape} "
            f"({scan.source or scan.patient_key}); masks must be in the scan's voxel grid"
        )
    # The scan stays a NumPy array and is read once, into the working copy; only the small
    # copies and the crop under the output grid are ever handed to SimpleITK (see _bin_shrink).
    geometry = _Geometry.of(scan)
    work_hu, work_geometry = _shrunk_copy(scan.hu, geometry, options.work_voxel_mm)
    small_hu, small_geometry = _shrunk_copy(work_hu, work_geometry, options.seg_voxel_mm)
    small = small_geometry.image(small_hu)
    small_spacing = _spacing_zyx(small)
    lungs = segment_lungs(small_hu, small_spacing, scan.direction)
    volume_ml = lung_volume_ml(lungs, small_spacing)

    findings: list[QCFinding] = []
    box = lung_bbox(lungs) if volume_ml >= MIN_LUNG_ML else None
    if box is None:
        findings.append(QCFinding(
            "no_lungs_found",
            f"lung segmentation found {volume_ml:.0f} mL of lung (< {MIN_LUNG_ML:.0f} mL); the "
            "whole scan was resized instead -- check that this is a chest CT",
            "error", scan.source or None,
        ))
        box = (np.zeros(3, int), np.asarray(small_hu.shape) - 1)
        lungs = np.zeros_like(lungs)
    elif not PLAUSIBLE_LUNG_ML[0] <= volume_ml <= PLAUSIBLE_LUNG_ML[1]:
        findings.append(QCFinding(
            "lung_volume_unusual",
            f"lung mask holds {volume_ml:.0f} mL, outside the usual adult "
            f"{PLAUSIBLE_LUNG_ML[0]:.0f}-{PLAUSIBLE_LUNG_ML[1]:.0f} mL",
            "warning", scan.source or None,
        ))
    grid = box_grid(small, box[0], box[1], shape, options.margin_mm, options.square)

    if np.all(np.asarray(grid.spacing[::-1]) >= work_geometry.spacing):
        source, source_geometry = work_hu, work_geometry
    else:  # an output finer than the working copy needs the scan's own detail
        source, source_geometry = scan.hu, geometry
    cut = _cut_to_grid(source, source_geometry, grid)
    default = float(work_hu.min())
    hu_out = (np.full(grid.shape, default, np.float32) if cut is None
              else _resample_array(*cut, grid, default=default))
    lo, hi = options.window
    lung_img = sitk.GetImageFromArray(lungs.astype(np.float32))
    lung_img.CopyInformation(small)
    lung_out = sitk.GetArrayFromImage(grid.resample(lung_img))
    lung_out = (lung_out >= 0.5).astype(np.uint8)

    nodules_out = None
    if nodule_mask is not None:
        nodules_out, outside = _resample_labels(np.asarray(nodule_mask), geometry, grid)
        if outside:
            findings.append(QCFinding(
                "nodule_outside_box",
                f"nodule(s) {outside} lie outside the lung bounding box and are not in the "
                "prepared mask", "warning", scan.source or None,
            ))
    last = np.asarray(grid.shape[::-1]) - 1
    end = np.asarray(grid.origin) + np.asarray(grid.direction).reshape(3, 3) @ (
        last * np.asarray(grid.spacing[::-1])
    )
    return PreparedVolume(
        image=window(hu_out, lo, hi),
        lung_mask=lung_out,
        nodule_mask=nodules_out,
        spacing=grid.spacing,
        bbox_mm=(grid.origin, tuple(float(v) for v in end)),  # type: ignore[arg-type]
        qc=findings,
        lung_volume_ml=volume_ml,
        source_shape=scan.shape,
        source_spacing=tuple(float(s) for s in scan.spacing),  # type: ignore[arg-type]
    )


def check_patch_shape(patch_shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    """``patch_shape`` as a tuple of ints, one positive size per image axis, or a ValueError."""
    shape = tuple(int(s) for s in patch_shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(
            f"patch_shape {tuple(patch_shape)} must have {ndim} positive sizes, one per axis of "
            "the image"
        )
    return shape


def extract_patch(
    volume: np.ndarray, centre: Sequence[int], patch_shape: Sequence[int], fill: float = 0
) -> np.ndarray:
    """The ``patch_shape`` box of ``volume`` centred on ``centre``, padded with ``fill``.

    The box starts at ``centre - patch_shape // 2`` on each axis; parts outside the volume take
    the value ``fill``.
    """
    shape = check_patch_shape(patch_shape, volume.ndim)
    out = np.full(shape, fill, dtype=volume.dtype)
    src, dst = [], []
    for c, p, n in zip(centre, shape, volume.shape, strict=True):
        start = int(c) - p // 2
        lo, hi = max(start, 0), min(start + p, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = volume[tuple(src)]
    return out
