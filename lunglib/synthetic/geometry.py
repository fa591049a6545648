"""The voxel grid and body proportions of one synthetic patient, and the shape helpers on it.

:func:`sample_geometry` draws a patient's :class:`Geometry` (matrix, spacing, slice thickness,
body size, lung height); :func:`tube_fraction` rasterises a tapered cylinder with partial volume,
the building block of the vessel tree (:mod:`lunglib.synthetic.anatomy`) and of the nodules
(:mod:`lunglib.synthetic.nodules`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_MATRIX = 128
FULL_RESOLUTION_MATRIX = 512


@dataclass(frozen=True)
class Geometry:
    """Voxel grid and body proportions of one synthetic patient (lengths in mm)."""

    shape: tuple[int, int, int]  # z, y, x
    spacing: tuple[float, float, float]  # z, y, x
    slice_thickness: float
    origin: tuple[float, float, float]  # x, y, z of voxel (0, 0, 0), LPS
    body_a: float  # body half-width (left-right)
    body_b: float  # body half-depth (anterior-posterior)
    fat: float  # subcutaneous fat thickness
    lung_base: float  # local z (mm above the first slice) of the lung bases
    lung_top: float  # local z of the lung apices

    @property
    def fov(self) -> float:
        return self.shape[2] * self.spacing[2]

    def local_axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable local mm coordinates (z from the first slice; y, x from the centre)."""
        nz, ny, nx = self.shape
        dz, dy, dx = self.spacing
        z = (np.arange(nz, dtype=np.float32) * dz)[:, None, None]
        y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * dy)[None, :, None]
        x = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * dx)[None, None, :]
        return z, y, x

    def local_to_index(self, zyx_mm: np.ndarray) -> np.ndarray:
        """Local mm (z, y, x) to fractional voxel index (z, y, x)."""
        nz, ny, nx = self.shape
        centre = np.array([0.0, (ny - 1) / 2, (nx - 1) / 2])
        return np.asarray(zyx_mm, float) / np.asarray(self.spacing) + centre

    def index_to_world(self, zyx: Sequence[float]) -> np.ndarray:
        """Voxel index (z, y, x) to patient (x, y, z) mm, the way ``CTScan.voxel_to_world`` does."""
        z, y, x = (float(v) for v in zyx)
        dz, dy, dx = self.spacing
        return np.asarray(self.origin) + np.array([x * dx, y * dy, z * dz])


def sample_geometry(
    rng: np.random.Generator, matrix: int = DEFAULT_MATRIX
) -> Geometry:
    """Draw body size, lung height, slice thickness and pixel spacing for one patient.

    Slice thickness is 1 to 3 mm (contiguous slices); the field of view is chosen so the body
    fills it like a chest scan does (300 to 420 mm).
    """
    body_a = float(rng.uniform(125.0, 175.0))
    body_b = float(body_a * rng.uniform(0.62, 0.78))
    fat = float(rng.uniform(6.0, 28.0))
    fov = float(np.clip(2 * body_a + rng.uniform(25.0, 70.0), 300.0, 420.0))
    pixel = round(fov / matrix, 4)
    # Thin slices are rarer, which keeps the default cohort small on disk.
    thickness = float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5, 3.0],
                                 p=[0.1, 0.1, 0.15, 0.25, 0.2, 0.2]))
    lung_height = float(rng.uniform(180.0, 250.0))
    below, above = rng.uniform(10.0, 25.0, size=2)
    n_slices = int(np.ceil((lung_height + below + above) / thickness)) + 1
    table = float(rng.uniform(-420.0, -120.0))
    half = (matrix - 1) / 2 * pixel
    origin = (-half, -half + float(rng.uniform(-10.0, 10.0)), round(table, 2))
    return Geometry(
        shape=(n_slices, matrix, matrix),
        spacing=(thickness, pixel, pixel),
        slice_thickness=thickness,
        origin=origin,
        body_a=body_a,
        body_b=body_b,
        fat=fat,
        lung_base=float(below),
        lung_top=float(below + lung_height),
    )


def tube_fraction(
    geom: Geometry,
    a: np.ndarray,
    b: np.ndarray,
    r_a: float,
    r_b: float,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Partial-volume occupancy of a tapered cylinder from ``a`` to ``b`` (local mm z, y, x).

    Returns the voxel box the cylinder touches and, in it, the fraction (float32 in [0, 1]) of
    each voxel the cylinder covers (radius ``r_a`` at ``a``, ``r_b`` at ``b``); None when the box
    falls outside the grid. A sphere is the cylinder with ``a == b``.
    """
    spacing = np.asarray(geom.spacing)
    pad = max(r_a, r_b) + spacing.max()
    lo = np.floor(geom.local_to_index(np.minimum(a, b) - pad)).astype(int)
    hi = np.ceil(geom.local_to_index(np.maximum(a, b) + pad)).astype(int) + 1
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, geom.shape)
    if np.any(hi <= lo):
        return None
    box = tuple(slice(int(lo_), int(hi_)) for lo_, hi_ in zip(lo, hi, strict=True))
    nz, ny, nx = geom.shape
    centre = np.array([0.0, (ny - 1) / 2, (nx - 1) / 2])
    pz = ((np.arange(lo[0], hi[0]) - centre[0]) * spacing[0])[:, None, None] - a[0]
    py = ((np.arange(lo[1], hi[1]) - centre[1]) * spacing[1])[None, :, None] - a[1]
    px = ((np.arange(lo[2], hi[2]) - centre[2]) * spacing[2])[None, None, :] - a[2]
    v = b - a
    vv = float(v @ v) or 1e-9
    t = np.clip((pz * v[0] + py * v[1] + px * v[2]) / vv, 0.0, 1.0)
    d = np.sqrt((pz - t * v[0]) ** 2 + (py - t * v[1]) ** 2 + (px - t * v[2]) ** 2)
    radius = r_a + t * (r_b - r_a)
    soft = float(np.cbrt(np.prod(spacing)))
    frac = np.clip((radius - d) / soft + 0.5, 0.0, 1.0).astype(np.float32)
    return box, frac


def unit_vector(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (a zero vector is returned unchanged)."""
    return v / (np.linalg.norm(v) or 1.0)
