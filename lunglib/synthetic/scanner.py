"""The scanner model: blur, correlated noise and the reconstruction circle of a CT scanner."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lunglib.synthetic.geometry import Geometry

RESCALE_INTERCEPT = -1024
# What many scanners (and DSB2017) store outside the reconstruction circle.
OUTSIDE_FOV_STORED = -2000


def apply_scanner(
    hu: np.ndarray,
    geom: Geometry,
    rng: np.random.Generator,
    noise_hu: float = 20.0,
    blur_mm: float = 0.9,
) -> np.ndarray:
    """Blur (in-plane PSF and slice profile), add correlated noise, cut the FOV circle.

    Returns int16 HU clipped to [-1024, 3071], with ``-3024`` outside the reconstruction circle
    (stored value -2000 with the intercept of -1024, as many scanners write it).
    """
    dz, dy, dx = geom.spacing
    sigma = (max(0.42 * geom.slice_thickness, 0.4 * dz) / dz, max(blur_mm, 0.4 * dy) / dy,
             max(blur_mm, 0.4 * dx) / dx)
    out = ndimage.gaussian_filter(hu, sigma=sigma, mode="nearest")
    noise = rng.standard_normal(hu.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0.0, 0.7, 0.7))
    noise *= noise_hu / (float(noise.std()) or 1.0)
    out += noise
    out = np.clip(np.rint(out), -1024, 3071).astype(np.int16)
    ny, nx = geom.shape[1:]
    yy, xx = np.ogrid[:ny, :nx]
    outside = (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 > (min(ny, nx) / 2) ** 2
    out[:, outside] = OUTSIDE_FOV_STORED + RESCALE_INTERCEPT
    return out
