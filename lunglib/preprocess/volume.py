"""From a Hounsfield-unit CT volume to the model's input: lungs found, cropped, windowed, resized.

:func:`prepare` chains the steps of :mod:`lunglib.preprocess` into the volume a CNN sees, with
its lung and nodule masks on the same grid (:class:`PreparedVolume`); :class:`PrepareOptions`
holds the choices that shape it, and :data:`PREPROCESS_VERSION` is part of the cache key.

Why :func:`prepare` does not resample the whole scan to 1 mm first
-------------------------------------------------------------------
The widely copied Kaggle DSB2017 recipe resamples the full scan to 1 mm voxels (a 512x512x300
scan becomes ~350x350x400 float voxels, often more), segments the lungs at that resolution, and
then throws almost all of it away when shrinking to 32x64x64. :func:`prepare` gets the same
answer with far less work:

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
become SimpleITK images, and the scan is fed to ``sitk.BinShrink`` in slabs of a few MB, because
a SimpleITK image of the whole scan is a large fresh allocation whose page faults and copy cost
more than the shrink. ``benchmarks/bench_preprocess.py`` times it against the recipes above.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk

from lunglib.io.dicom import CTScan
from lunglib.io.qc import QCFinding
from lunglib.preprocess.boxes import mask_bbox
from lunglib.preprocess.intensity import window
from lunglib.preprocess.lungs import (
    MIN_LUNG_ML,
    PLAUSIBLE_LUNG_ML,
    lung_volume_ml,
    segment_lungs,
)
from lunglib.preprocess.resample import (
    _cut_to_grid,
    _Geometry,
    _resample_array,
    _resample_labels,
    _shrunk_copy,
    _spacing_zyx,
    box_grid,
)
from lunglib.settings import Settings

#: Bump when a change to :mod:`lunglib.preprocess` changes prepared volumes (it is part of the
#: cache key, so caches of an older version are never read).
PREPROCESS_VERSION = "3"


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
    box = mask_bbox(lungs) if volume_ml >= MIN_LUNG_ML else None
    if box is None:
        findings.append(QCFinding(
            "no_lungs_found",
            f"lung segmentation found {volume_ml:.0f} mL of lung (< {MIN_LUNG_ML:.0f} mL); the "
            "whole scan was resized instead -- check that this is a chest CT",
            "error", scan.source or None,
        ))
        box = tuple(slice(0, n) for n in small_hu.shape)
        lungs = np.zeros_like(lungs)
    elif not PLAUSIBLE_LUNG_ML[0] <= volume_ml <= PLAUSIBLE_LUNG_ML[1]:
        findings.append(QCFinding(
            "lung_volume_unusual",
            f"lung mask holds {volume_ml:.0f} mL, outside the usual adult "
            f"{PLAUSIBLE_LUNG_ML[0]:.0f}-{PLAUSIBLE_LUNG_ML[1]:.0f} mL",
            "warning", scan.source or None,
        ))
    grid = box_grid(small, box, shape, options.margin_mm, options.square)

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
