"""The embedded synthetic chest-CT cohort: run the whole course with no download.

:func:`write_cohort` writes a cohort in the Data Science Bowl 2017 layout that every lunglib
loader reads natively::

    <out>/<patient_id>/<hex name>.dcm      one axial CT series per patient (names not in z order)
    <out>/labels.csv                       id,cancer
    <out>/nodules.csv                      one row per nodule (type, size, centre in voxels/mm)
    <out>/ground_truth/<patient_id>.npz    nodule_labels (int16) and lung_mask (uint8), in the
                                           voxel grid that ``load_scan(<out>/<patient_id>)`` gives
    <out>/ground_truth/<patient_id>.json   the patient's parameters and nodules (resume marker)
    <out>/cohort.json                      seed and parameters of the cohort

Each volume is built in Hounsfield units from small composable steps -- :func:`sample_geometry`,
:func:`draw_anatomy` (body, fat, muscle, mediastinum, heart, airways, lungs),
:func:`grow_vessel_tree`,
:func:`draw_bones`, :func:`place_nodules`, :func:`apply_scanner` (blur and noise) and
:func:`write_dicom_series` -- with one random stream for the anatomy and another for the
nodules, so that a patient's anatomy does not depend on their label. See ``docs/synthetic.md``
for what a classifier can and cannot exploit.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from filelock import FileLock, Timeout
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from lunglib.io.atomic import write_bytes_atomic, write_text_atomic
from lunglib.settings import default_data_root

DEFAULT_N_PATIENTS = 80
DEFAULT_MATRIX = 128
FULL_RESOLUTION_MATRIX = 512
FORMAT_VERSION = 1
RESCALE_INTERCEPT = -1024
# What many scanners (and DSB2017) store outside the reconstruction circle.
OUTSIDE_FOV_STORED = -2000
PATIENT_NAME_PREFIX = "SYNTHETIC^DO-NOT-USE"
NODULE_COLUMNS = (
    "id", "nodule", "malignant", "kind", "texture", "attachment", "lung", "diameter_mm",
    "volume_mm3", "mean_hu", "center_z", "center_y", "center_x", "world_x", "world_y", "world_z",
)

AIR, FAT, MUSCLE, BLOOD, LIVER = -1000.0, -100.0, 40.0, 40.0, 55.0
LUNG_SIDES = ("right", "left")  # patient right is -x in DICOM LPS coordinates
TISSUES = {"air": 0, "fat": 1, "soft_tissue": 2, "blood": 3, "lung": 4, "bone": 5,
           "vessel": 6, "nodule": 7, "airway": 8, "liver": 9}


# --------------------------------------------------------------------------------------------
# Geometry


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


def _smooth_field(
    rng: np.random.Generator, geom: Geometry, wavelength: tuple[float, float] = (60.0, 200.0),
    terms: int = 6,
) -> np.ndarray:
    """Low-frequency random field in about [-1, 1] (for shapes that are not perfect ellipses).

    A sum of separable random cosines, so it costs a few broadcast products, not a 3D filter.
    """
    axes = geom.local_axes()
    field = np.zeros(geom.shape, np.float32)
    for _ in range(terms):
        term = np.ones((1, 1, 1), np.float32)
        for axis in axes:
            k = 2 * np.pi / rng.uniform(*wavelength)
            term = term * np.cos(k * axis + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        field += term
    return field / np.sqrt(terms / 2.0) / 2.0


# --------------------------------------------------------------------------------------------
# Anatomy


@dataclass
class Anatomy:
    """HU volume and the masks later steps need (all shaped like the geometry)."""

    hu: np.ndarray  # float32
    lung: np.ndarray  # uint8: 0 outside, 1 right lung, 2 left lung
    cavity: np.ndarray  # bool, thoracic cavity inside the ribs
    body: np.ndarray  # bool
    tissue: np.ndarray  # uint8, codes of TISSUES
    hilum: dict[str, np.ndarray] = field(default_factory=dict)  # local mm (z, y, x) per side


def _paint(hu: np.ndarray, tissue: np.ndarray, mask: np.ndarray, value: float, name: str) -> None:
    hu[mask] = value
    tissue[mask] = TISSUES[name]


def draw_anatomy(geom: Geometry, rng: np.random.Generator) -> Anatomy:
    """Body, fat, muscle, mediastinum, heart, great vessels, airway and two lungs, in HU."""
    z, y, x = geom.local_axes()
    nx = geom.shape[2]
    height = geom.lung_top - geom.lung_base
    t = (z - geom.lung_base) / height  # 0 at the lung bases, 1 at the apices
    # The chest narrows a little towards the shoulders; the body stays a cylinder-like ellipse.
    taper = 1.0 - 0.08 * np.clip(t, 0, 1)
    a, b = geom.body_a * taper, geom.body_b * taper
    wobble = 0.03 * np.cos(2 * np.pi * z / rng.uniform(80.0, 200.0) + rng.uniform(0, 6.3))
    r_body = np.sqrt((x / a) ** 2 + (y / b) ** 2) * (1 + wobble)
    body = r_body <= 1.0
    hu = np.full(geom.shape, AIR, np.float32)
    tissue = np.zeros(geom.shape, np.uint8)
    _paint(hu, tissue, body, FAT, "fat")
    inner_a, inner_b = a - geom.fat, b - geom.fat
    r_inner = np.sqrt((x / inner_a) ** 2 + (y / inner_b) ** 2)
    muscle = (r_inner <= 1.0) & body
    _paint(hu, tissue, muscle, MUSCLE, "soft_tissue")
    wall = float(rng.uniform(14.0, 22.0))  # muscle and ribs
    cav_a, cav_b = inner_a - wall, inner_b - wall
    r_cav = np.sqrt((x / cav_a) ** 2 + ((y + 0.04 * cav_b) / cav_b) ** 2)
    cavity = (r_cav <= 1.0) & body
    # Scalar sizes at the lung bases, for placing organs.
    ca, cb = geom.body_a - geom.fat - wall, geom.body_b - geom.fat - wall

    # Mediastinal fat between the lungs; the lungs are carved out of the cavity below.
    _paint(hu, tissue, cavity, FAT + 20.0, "fat")
    # Abdomen below the diaphragm: liver on the right, soft tissue elsewhere.
    dome_h = float(rng.uniform(25.0, 45.0))
    lung_a = ca * float(rng.uniform(0.5, 0.58))
    lung_b = cb * float(rng.uniform(0.92, 1.02))
    centre_x = ca * float(rng.uniform(0.5, 0.56))
    rough = _smooth_field(rng, geom)
    mediastinum = np.abs(x) < float(rng.uniform(10.0, 18.0)) * (1.0 + 0.6 * (y > 0))
    lung = np.zeros(geom.shape, np.uint8)
    hilum: dict[str, np.ndarray] = {}
    for side, sign in zip(LUNG_SIDES, (-1.0, 1.0), strict=True):
        cx = sign * centre_x * float(rng.uniform(0.97, 1.03))
        cy = float(rng.uniform(-0.05, 0.08)) * cb
        base = geom.lung_base + float(rng.uniform(-6.0, 6.0)) + (8.0 if side == "left" else 0.0)
        ts = (z - base) / (geom.lung_top - base)
        # Full width up to mid-height, then a rounded apex.
        apex = np.sqrt(np.clip(1 - ((ts - 0.5) / 0.5) ** 2, 0, 1)) * (ts > 0.5) + (ts <= 0.5)
        scale = np.maximum(apex, 0.05).astype(np.float32)
        sa = lung_a * scale
        sb = lung_b * (0.3 + 0.7 * scale)
        half = slice(0, nx // 2) if side == "right" else slice(nx // 2, nx)  # each lung its side
        f = ((x[..., half] - cx) / sa) ** 2 + ((y - cy) / sb) ** 2
        # Diaphragm dome: the lung floor rises towards the middle of each lung.
        floor = base + dome_h * np.clip(1 - f, 0, 1)
        inside = (f + 0.12 * rough[..., half] <= 1.0) & (z >= floor) & (ts >= 0) & (ts <= 1.0)
        inside &= cavity[..., half] & ~mediastinum[..., half]
        lung[..., half][inside] = LUNG_SIDES.index(side) + 1
        hilum[side] = np.array([base + 0.58 * (geom.lung_top - base),
                                cy + 0.05 * lung_b, cx - sign * 0.55 * lung_a], np.float32)

    # Heart: an ellipsoid left-anterior, low in the chest; it pushes the left lung aside.
    hz = geom.lung_base + float(rng.uniform(0.12, 0.22)) * height
    heart_r = np.array([rng.uniform(42, 55), rng.uniform(40, 52), rng.uniform(50, 64)])
    hy, hx = -0.35 * cb, 0.28 * ca
    heart_f = (((z - hz) / heart_r[0]) ** 2 + ((y - hy) / heart_r[1]) ** 2
               + ((x - hx) / heart_r[2]) ** 2)
    heart = (heart_f <= 1.0) & cavity
    # Pericardial fat rim, then blood pool.
    _paint(hu, tissue, (heart_f <= (1.0 + 4.0 / heart_r.min()) ** 2) & cavity, FAT, "fat")
    _paint(hu, tissue, heart, BLOOD, "blood")
    # Descending aorta (left-posterior of the spine) and ascending aorta/pulmonary trunk.
    aorta_r = float(rng.uniform(11.0, 15.0))
    aorta = ((y - 0.55 * cb) ** 2 + (x - 0.18 * ca) ** 2 <= aorta_r**2) & cavity
    asc = ((y + 0.2 * cb) ** 2 + (x + 0.05 * ca) ** 2 <= (aorta_r * 1.1) ** 2) & cavity
    asc &= (z > hz) & (z < geom.lung_base + 0.75 * height)
    _paint(hu, tissue, aorta | asc, BLOOD + 5.0, "blood")
    # Trachea down the midline, splitting into two main bronchi at the carina.
    carina = geom.lung_base + 0.62 * height
    trachea_r = float(rng.uniform(7.0, 10.0))
    ty = -0.05 * cb
    shift = np.clip(carina - z, 0, None) * 0.9  # bronchi run down and out from the carina
    # Squared distance to the airway's centre line, scaled so the lumen is <= 1.
    in_bronchi = (z <= carina) & (z > carina - 35.0)
    bronchi = np.minimum((y - ty) ** 2 + (x - shift) ** 2, (y - ty) ** 2 + (x + shift) ** 2)
    d2 = np.where(in_bronchi, bronchi / (trachea_r * 0.75) ** 2, np.inf)
    d2 = np.where(z > carina, ((y - ty) ** 2 + x**2) / trachea_r**2, d2)
    airway = (d2 <= 1.0) & cavity
    airway_wall = (d2 <= (1.0 + 3.0 / trachea_r) ** 2) & cavity
    _paint(hu, tissue, airway_wall & ~heart, MUSCLE - 10.0, "soft_tissue")
    _paint(hu, tissue, airway, AIR, "airway")
    lung[heart | aorta | asc | airway_wall] = 0
    # Keep the largest piece of each lung (the carving can leave crumbs).
    for value in (1, 2):
        labels, n = ndimage.label(lung == value)
        if n > 1:
            sizes = np.bincount(labels.ravel())[1:]
            lung[(labels > 0) & (labels != 1 + int(np.argmax(sizes)))] = 0
    # Upper abdomen under the diaphragm (liver dome on the right).
    belly = cavity & (lung == 0) & (z < geom.lung_base + dome_h) & ~heart
    _paint(hu, tissue, belly & (x < 0.3 * ca), LIVER, "liver")
    _paint(hu, tissue, belly & (x >= 0.3 * ca), MUSCLE, "soft_tissue")
    # Lung parenchyma: about -850 HU, denser towards the back (gravity-dependent).
    parenchyma = float(rng.uniform(-875.0, -830.0))
    gradient = float(rng.uniform(20.0, 45.0)) * (y / geom.body_b)
    lung_hu = parenchyma + gradient + 8.0 * rough
    hu = np.where(lung > 0, lung_hu, hu).astype(np.float32)
    tissue[lung > 0] = TISSUES["lung"]
    return Anatomy(hu=hu, lung=lung, cavity=cavity, body=body, tissue=tissue, hilum=hilum)


def _segment_fraction(
    geom: Geometry,
    a: np.ndarray,
    b: np.ndarray,
    r_a: float,
    r_b: float,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Partial-volume occupancy of a tapered cylinder from ``a`` to ``b`` (local mm z, y, x)."""
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


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) or 1.0)


def _inside(mask: np.ndarray, geom: Geometry, points: np.ndarray) -> np.ndarray:
    """Whether each local-mm point (rows of z, y, x) falls in ``mask``."""
    idx = np.round(geom.local_to_index(points)).astype(int)
    ok = np.all((idx >= 0) & (idx < np.asarray(geom.shape)), axis=-1)
    out = np.zeros(len(idx), bool)
    out[ok] = mask[tuple(idx[ok].T)]
    return out


def grow_vessel_tree(
    geom: Geometry,
    lung: np.ndarray,
    hilum: dict[str, np.ndarray],
    rng: np.random.Generator,
    max_segments: int = 500,
) -> np.ndarray:
    """Rasterise a branching, tapering pulmonary vessel tree in each lung.

    Returns the partial-volume vessel fraction (float32 in [0, 1]), clipped to the lungs. Each
    branch is a tapered cylinder; children are thinner and shorter, and turn by 20-50 degrees,
    so vessels thin out towards the periphery and, cut across, look like nodules on one slice.
    """
    vessels = np.zeros(geom.shape, np.float32)
    for side_index, side in enumerate(LUNG_SIDES, start=1):
        in_lung = lung == side_index
        voxels = np.argwhere(in_lung)
        if len(voxels) == 0:
            continue
        target = geom.local_to_index(hilum[side])
        nearest = voxels[np.argmin((((voxels - target) * geom.spacing) ** 2).sum(axis=1))]
        ny, nx = geom.shape[1:]
        root = (nearest - np.array([0.0, (ny - 1) / 2, (nx - 1) / 2])) * np.asarray(geom.spacing)
        lateral = 1.0 if side == "left" else -1.0
        trunks = [(1.0, 0.1, 0.4 * lateral), (0.0, 0.0, lateral), (-1.0, 0.3, 0.3 * lateral),
                  (-0.8, -0.5, 0.4 * lateral), (0.3, 0.6, 0.6 * lateral)]
        stack = []
        for trunk in trunks:
            direction = _unit(np.asarray(trunk) + 0.25 * rng.standard_normal(3))
            stack.append((root, direction, float(rng.uniform(3.5, 5.5)),
                          float(rng.uniform(25.0, 40.0))))
        n_segments = 0
        while stack and n_segments < max_segments:
            start, direction, radius, length = stack.pop()
            steps = np.linspace(0.0, 1.0, 8)[1:]
            for attempt in range(4):  # turn away from the pleura before giving up
                inside = _inside(in_lung, geom, start + np.outer(steps, direction) * length)
                n_ok = len(steps) if inside.all() else int(np.argmin(inside))
                last_ok = float(steps[n_ok - 1]) if n_ok else 0.0
                if last_ok == 1.0 or attempt == 3:
                    break
                direction = _unit(direction + 0.6 * rng.standard_normal(3))
            if last_ok * length < 3.0:
                continue
            end = start + direction * length * last_ok
            r_end = radius * 0.9
            hit = _segment_fraction(geom, start, end, radius, r_end)
            if hit is not None:
                box, frac = hit
                np.maximum(vessels[box], frac, out=vessels[box])
            n_segments += 1
            if r_end < 0.45 or last_ok < 1.0:
                continue
            away = _unit(end - root)
            normal = _unit(np.cross(direction, rng.standard_normal(3)))
            for sign in (1.0, -1.0):
                angle = np.deg2rad(rng.uniform(20.0, 50.0))
                child = _unit(np.cos(angle) * direction + sign * np.sin(angle) * normal
                              + 0.3 * away)
                shrink = float(rng.uniform(0.66, 0.86))
                stack.append((end, child, r_end * shrink,
                              max(6.0, length * float(rng.uniform(0.72, 0.92)))))
    vessels *= lung > 0
    return vessels


def draw_bones(geom: Geometry, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Spine, ribs and sternum in HU on top of the anatomy (300 to 1000 HU); returns the mask."""
    z, y, x = geom.local_axes()
    hu = anatomy.hu
    height = geom.lung_top - geom.lung_base
    t = (z - geom.lung_base) / height
    taper = 1.0 - 0.08 * np.clip(t, 0, 1)
    a = (geom.body_a - geom.fat) * taper
    b = (geom.body_b - geom.fat) * taper
    # Vertebral body, cortex and a spinous process, behind the posterior mediastinum.
    vr = float(rng.uniform(15.0, 19.0))
    vy = b * 0.62
    centre_d = np.sqrt((y - vy) ** 2 + x**2)
    vertebra = (centre_d <= vr) & anatomy.body
    # Intervertebral discs every ~25 mm.
    disc = np.mod(z + float(rng.uniform(0, 25)), 25.0) < 4.0
    cortex = vertebra & (centre_d > vr - 2.5)
    process = ((np.abs(x) <= 4.0) & (y > vy + vr - 2) & (y < vy + vr + 25.0)) & anatomy.body
    cancellous = float(rng.uniform(300.0, 380.0))
    bone = np.zeros(geom.shape, bool)
    bone |= vertebra | process
    value = np.where(cortex | process, float(rng.uniform(700.0, 950.0)), cancellous)
    value = np.where(disc & vertebra & ~cortex, 80.0, value)
    # Ribs: oblique bands in a shell just outside the thoracic cavity, sloping down anteriorly.
    r = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    theta = np.arctan2(np.abs(x), -y)  # 0 anterior, pi posterior
    shell = (r > 0.86) & (r < 0.935) & anatomy.body & ~anatomy.cavity
    pitch = float(rng.uniform(22.0, 28.0))
    phase = np.mod(z + 30.0 * (np.pi - theta) / np.pi + float(rng.uniform(0, pitch)), pitch)
    rib = shell & (phase < float(rng.uniform(7.0, 9.0))) & (theta > 0.45)
    rib &= (z > geom.lung_base - 10.0) & (z < geom.lung_top + 10.0)
    rib_cortex = rib & ((r < 0.875) | (r > 0.92) | (phase < 1.5))
    # Sternum: anterior midline plate.
    sternum = (np.abs(x) < 14.0) & (y < -b * 0.86) & (y > -b * 0.98) & anatomy.body
    sternum &= (z > geom.lung_base + 0.25 * height) & (z < geom.lung_top - 15.0)
    bone |= rib | sternum
    value = np.where(rib_cortex, float(rng.uniform(600.0, 850.0)), value)
    value = np.where(rib & ~rib_cortex, float(rng.uniform(300.0, 400.0)), value)
    value = np.where(sternum, float(rng.uniform(350.0, 500.0)), value)
    hu[bone] = np.broadcast_to(value, hu.shape)[bone]
    anatomy.tissue[bone] = TISSUES["bone"]
    anatomy.lung[bone] = 0
    return bone


# --------------------------------------------------------------------------------------------
# Nodules


@dataclass(frozen=True)
class NoduleRanges:
    """How the difficulty knob (0 easy .. 1 hard) sets nodule sizes, contrast and counts."""

    malignant_diameter: tuple[float, float]
    benign_diameter: tuple[float, float]
    part_solid_probability: float
    calcified_probability: float
    benign_count_probabilities: tuple[float, ...]  # P(0), P(1), P(2), P(3) benign nodules
    noise_hu: float

    @classmethod
    def from_difficulty(cls, difficulty: float) -> NoduleRanges:
        d = float(difficulty)
        return cls(
            # Big enough to survive the course's 32 x 64 x 64 lung box (about 4-5 mm in-plane,
            # 7-8 mm in z per voxel): at the default 0.5 a malignant nodule spans 4-9 voxels.
            malignant_diameter=(float(np.interp(d, (0.0, 0.5, 1.0), (30.0, 20.0, 10.0))),
                                float(np.interp(d, (0.0, 0.5, 1.0), (45.0, 40.0, 35.0)))),
            benign_diameter=(3.0, 6.0 + 6.0 * d),
            part_solid_probability=0.1 + 0.4 * d,
            calcified_probability=0.5 - 0.3 * d,
            benign_count_probabilities=(0.45 - 0.25 * d, 0.35, 0.12 + 0.15 * d, 0.08 + 0.1 * d),
            noise_hu=10.0 + 20.0 * d,
        )


@dataclass
class Nodule:
    """One generated nodule (centre in voxel indices of the loaded volume)."""

    nodule: int
    malignant: int
    kind: str  # smooth, lobulated, spiculated
    texture: str  # solid, part-solid, calcified
    attachment: str  # isolated, juxtavascular, juxtapleural
    lung: str
    diameter_mm: float
    center_zyx: tuple[float, float, float]
    volume_mm3: float = 0.0  # of the label mask
    mean_hu: float = float("nan")  # in the final (blurred, noisy) volume, inside the label mask


def _nodule_pieces(
    rng: np.random.Generator, kind: str, radius: float
) -> tuple[list[tuple[np.ndarray, float]], list[tuple[np.ndarray, np.ndarray, float, float]]]:
    """Spheres (offset, radius) and spicules (start, end, r0, r1) around the origin, in mm."""
    spheres = [(np.zeros(3), radius)]
    spicules = []
    if kind == "smooth":
        return spheres, spicules
    spheres = [(np.zeros(3), radius * 0.8)]
    for _ in range(int(rng.integers(3, 7))):
        direction = _unit(rng.standard_normal(3))
        offset = direction * radius * rng.uniform(0.3, 0.5)
        spheres.append((offset, radius * rng.uniform(0.45, 0.65)))
    if kind == "spiculated":
        for _ in range(int(rng.integers(6, 14))):
            direction = _unit(rng.standard_normal(3))
            start = direction * radius * 0.6
            end = direction * radius * rng.uniform(1.4, 2.1)
            spicules.append((start, end, float(rng.uniform(0.8, 1.3)), 0.3))
    return spheres, spicules


def _nodule_fraction(
    geom: Geometry,
    centre: np.ndarray,
    spheres: list[tuple[np.ndarray, float]],
    spicules: list[tuple[np.ndarray, np.ndarray, float, float]],
    scale: float = 1.0,
    box: tuple[slice, slice, slice] | None = None,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Partial-volume occupancy of a union of spheres and spicules centred at ``centre``.

    The occupancy covers ``box`` when given (so a nodule's core shares its outline's box).
    """
    if box is None:
        reach = max(float(np.linalg.norm(o)) + r for o, r in spheres) * scale
        for _, end, r0, _ in spicules:
            reach = max(reach, float(np.linalg.norm(end)) + r0)
        pad = reach + float(max(geom.spacing))
        lo = np.maximum(np.floor(geom.local_to_index(centre - pad)).astype(int), 0)
        hi = np.minimum(np.ceil(geom.local_to_index(centre + pad)).astype(int) + 1, geom.shape)
        if np.any(hi <= lo):
            return None
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    lo = np.array([s.start for s in box])
    frac = np.zeros(tuple(s.stop - s.start for s in box), np.float32)
    pieces = [(centre + o * scale, centre + o * scale, r * scale, r * scale) for o, r in spheres]
    pieces += [(centre + a, centre + b, r0, r1) for a, b, r0, r1 in spicules]
    for a, b, r0, r1 in pieces:
        hit = _segment_fraction(geom, a, b, r0, r1)
        if hit is None:
            continue
        piece_box, piece = hit
        start = np.array([s.start for s in piece_box])
        stop = np.array([s.stop for s in piece_box])
        # Keep the part of the piece that falls inside the nodule's box.
        a_lo = np.maximum(start, lo)
        a_hi = np.minimum(stop, lo + np.array(frac.shape))
        if np.any(a_hi <= a_lo):
            continue
        dst = tuple(slice(int(x - y), int(z - y)) for x, z, y in zip(a_lo, a_hi, lo, strict=True))
        src = tuple(
            slice(int(x - y), int(z - y)) for x, z, y in zip(a_lo, a_hi, start, strict=True)
        )
        np.maximum(frac[dst], piece[src], out=frac[dst])
    return box, frac


def _fibonacci_sphere(n: int = 42) -> np.ndarray:
    i = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * i / n)
    azimuth = np.pi * (1 + 5**0.5) * i
    return np.column_stack([np.cos(polar), np.sin(polar) * np.sin(azimuth),
                            np.sin(polar) * np.cos(azimuth)])


_SPHERE = _fibonacci_sphere()


def _shell(volume: np.ndarray, geom: Geometry, centre: np.ndarray, radius: float) -> np.ndarray:
    """Values of ``volume`` on a sphere of ``radius`` mm around ``centre`` (0 outside the grid)."""
    idx = np.round(geom.local_to_index(centre + radius * _SPHERE)).astype(int)
    ok = np.all((idx >= 0) & (idx < np.asarray(geom.shape)), axis=1)
    out = np.zeros(len(idx), volume.dtype)
    out[ok] = volume[tuple(idx[ok].T)]
    return out


def _fits(attachment: str, lung: np.ndarray, vessels: np.ndarray, geom: Geometry,
          centre: np.ndarray, radius: float) -> bool:
    """Whether a nodule of ``radius`` at ``centre`` has the wanted surroundings."""
    if (_shell(vessels, geom, centre, 0.5 * radius) >= 0.5).any():
        return False
    if attachment == "juxtapleural":  # the pleura is within the nodule's reach
        return bool(_shell(lung, geom, centre, 0.5 * radius).all()
                    and not _shell(lung, geom, centre, radius + 1.0).all())
    if not _shell(lung, geom, centre, radius + 4.0).all():
        return False
    touching = (_shell(vessels, geom, centre, radius + 0.5) >= 0.5).any()
    return bool(touching) if attachment == "juxtavascular" else not touching


def _pick_centre(
    rng: np.random.Generator,
    lung: np.ndarray,
    vessels: np.ndarray,
    lung_voxels: np.ndarray,
    taken: list[tuple[np.ndarray, float]],
    geom: Geometry,
    radius: float,
    attachment: str,
    tries: int = 400,
) -> np.ndarray | None:
    """A random lung point (local mm) for a nodule with the wanted attachment, clear of others."""
    ny, nx = geom.shape[1], geom.shape[2]
    centre_idx = np.array([0.0, (ny - 1) / 2, (nx - 1) / 2])
    for _ in range(tries):
        flat = lung_voxels[int(rng.integers(len(lung_voxels)))]
        p = (np.array(np.unravel_index(flat, geom.shape)) - centre_idx) * np.asarray(geom.spacing)
        if any(np.linalg.norm(p - q) < r + radius + 6.0 for q, r in taken):
            continue
        if _fits(attachment, lung, vessels, geom, p, radius):
            return p
    return None


def place_nodules(
    geom: Geometry,
    anatomy: Anatomy,
    vessels: np.ndarray,
    rng: np.random.Generator,
    cancer: bool,
    difficulty: float = 0.5,
) -> tuple[np.ndarray, list[Nodule]]:
    """Draw nodules into ``anatomy.hu``; return the nodule label volume and their descriptions.

    Cancer patients get one or two malignant nodules (20-40 mm at the default difficulty,
    lobulated or spiculated, solid or part-solid); every patient, cancer or not, may get up to
    three benign ones (small, smooth, round, sometimes calcified). Each nodule sits inside a lung,
    isolated, touching a vessel or touching the pleura.
    """
    ranges = NoduleRanges.from_difficulty(difficulty)
    lung = anatomy.lung > 0
    lung_voxels = np.flatnonzero(lung)
    if len(lung_voxels) == 0:
        raise ValueError("the phantom has no lung voxels: cannot place nodules")
    n_benign = int(rng.choice(len(ranges.benign_count_probabilities),
                              p=np.asarray(ranges.benign_count_probabilities)
                              / sum(ranges.benign_count_probabilities)))
    plan = [1] * ((1 + int(rng.random() < 0.25)) if cancer else 0) + [0] * n_benign
    labels = np.zeros(geom.shape, np.int16)
    nodules: list[Nodule] = []
    taken: list[tuple[np.ndarray, float]] = []
    for malignant in plan:
        lo, hi = ranges.malignant_diameter if malignant else ranges.benign_diameter
        diameter = float(rng.uniform(lo, hi))
        radius = diameter / 2
        if malignant:
            kind = "spiculated" if rng.random() < 0.5 else "lobulated"
            texture = "part-solid" if rng.random() < ranges.part_solid_probability else "solid"
        else:
            kind = "smooth"
            texture = "calcified" if rng.random() < ranges.calcified_probability else "solid"
        attachment = str(rng.choice(["isolated", "juxtavascular", "juxtapleural"],
                                    p=[0.4, 0.3, 0.3]))
        centre = _pick_centre(rng, lung, vessels, lung_voxels, taken, geom, radius, attachment)
        if centre is None and attachment != "juxtapleural":
            # A crowded or small lung: the pleura is always somewhere.
            attachment = "juxtapleural"
            centre = _pick_centre(rng, lung, vessels, lung_voxels, taken, geom, radius, attachment)
        for _ in range(3 if malignant else 0):
            if centre is not None:
                break
            # A large malignant nodule that does not fit: shrink it within its range, so a
            # cancer patient never ends up without one.
            diameter = lo + 0.5 * (diameter - lo)
            radius = diameter / 2
            centre = _pick_centre(rng, lung, vessels, lung_voxels, taken, geom, radius, attachment)
        if centre is None:
            continue
        spheres, spicules = _nodule_pieces(rng, kind, radius)
        hit = _nodule_fraction(geom, centre, spheres, spicules)
        if hit is None:
            continue
        box, frac = hit
        region = lung[box] | (labels[box] > 0)
        frac = frac * region
        inside = frac >= 0.5
        if inside.sum() < 2:
            continue
        k = len(nodules) + 1
        solid_hu = float(rng.uniform(15.0, 55.0))
        texture_noise = 12.0 * rng.standard_normal(frac.shape).astype(np.float32)
        values = solid_hu + texture_noise
        if texture in ("part-solid", "calcified"):
            core_scale = float(rng.uniform(0.35, 0.55) if texture == "part-solid"
                               else rng.uniform(0.5, 1.0))
            core = _nodule_fraction(geom, centre, spheres, [], scale=core_scale, box=box)
            core_frac = core[1] if core is not None else np.zeros_like(frac)
            if texture == "part-solid":  # ground glass around a solid core
                ggo = float(rng.uniform(-650.0, -450.0))
                values = ggo + core_frac * (values - ggo)
            else:
                values = values + core_frac * float(rng.uniform(200.0, 500.0))
        hu_box = anatomy.hu[box]
        anatomy.hu[box] = hu_box + frac * (np.maximum(values, hu_box) - hu_box)
        labels[box][inside & (labels[box] == 0)] = k
        idx = geom.local_to_index(centre)
        nodules.append(Nodule(
            nodule=k, malignant=malignant, kind=kind, texture=texture, attachment=attachment,
            lung="left" if centre[2] > 0 else "right", diameter_mm=round(diameter, 2),
            center_zyx=tuple(round(float(v), 2) for v in idx),
        ))
        taken.append((centre, radius))
    return labels, nodules


# --------------------------------------------------------------------------------------------
# Scanner


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


# --------------------------------------------------------------------------------------------
# One patient


@dataclass(frozen=True)
class PatientSpec:
    """Everything that determines one synthetic patient."""

    index: int
    patient_id: str
    seed: int
    cancer: int
    matrix: int = DEFAULT_MATRIX
    difficulty: float = 0.5

    def fingerprint(self) -> str:
        text = json.dumps({**asdict(self), "format": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Phantom:
    """A generated patient: HU volume, ground truth and geometry."""

    spec: PatientSpec
    geometry: Geometry
    hu: np.ndarray  # int16 (z, y, x)
    lung_mask: np.ndarray  # uint8 0/1
    nodule_labels: np.ndarray  # int16
    nodules: list[Nodule]
    tissue: np.ndarray  # uint8 codes of TISSUES (not written to disk)


def make_patient(spec: PatientSpec) -> Phantom:
    """Generate one patient from its spec (deterministic).

    The anatomy, the nodules and the scanner noise draw from three independent random streams
    seeded by ``(seed, index)``: the same patient with the label flipped has the same anatomy.
    """
    anatomy_rng = np.random.default_rng([spec.seed, spec.index, 0])
    nodule_rng = np.random.default_rng([spec.seed, spec.index, 1])
    noise_rng = np.random.default_rng([spec.seed, spec.index, 2])
    geom = sample_geometry(anatomy_rng, spec.matrix)
    anatomy = draw_anatomy(geom, anatomy_rng)
    draw_bones(geom, anatomy, anatomy_rng)
    vessels = grow_vessel_tree(geom, anatomy.lung, anatomy.hilum, anatomy_rng)
    anatomy.hu += vessels * (BLOOD - anatomy.hu)
    anatomy.tissue[vessels >= 0.5] = TISSUES["vessel"]
    labels, nodules = place_nodules(geom, anatomy, vessels, nodule_rng, bool(spec.cancer),
                                    spec.difficulty)
    ranges = NoduleRanges.from_difficulty(spec.difficulty)
    noise = ranges.noise_hu * float(anatomy_rng.uniform(0.8, 1.2)) * geom.body_a / 150.0
    hu = apply_scanner(anatomy.hu, geom, noise_rng, noise_hu=noise)
    for n in nodules:
        values = hu[labels == n.nodule]
        n.mean_hu = round(float(values.mean()), 1) if values.size else float("nan")
        n.volume_mm3 = round(float(values.size * np.prod(geom.spacing)), 1)
    lung_mask = ((anatomy.lung > 0) | (labels > 0)).astype(np.uint8)
    anatomy.tissue[labels > 0] = TISSUES["nodule"]
    return Phantom(spec=spec, geometry=geom, hu=hu, lung_mask=lung_mask,
                   nodule_labels=labels, nodules=nodules, tissue=anatomy.tissue)


def _uid(spec: PatientSpec, *parts: object) -> str:
    return generate_uid(entropy_srcs=[f"lunglib-synthetic:{spec.seed}:{spec.index}",
                                      *(str(p) for p in parts)])


def _file_name(spec: PatientSpec, k: int) -> str:
    digest = hashlib.sha1(f"{spec.seed}:{spec.index}:{k}".encode()).hexdigest()
    return f"{digest[:24]}.dcm"


def fake_patient_name(spec: PatientSpec) -> str:
    """The obviously fake PatientName written into every file of the patient."""
    return f"{PATIENT_NAME_PREFIX}^{spec.index + 1}"


def fake_patient_id(spec: PatientSpec) -> str:
    """A fake PatientID, deliberately different from the folder name."""
    return "SYN" + hashlib.sha1(f"pid:{spec.seed}:{spec.index}".encode()).hexdigest()[:10].upper()


def write_dicom_series(phantom: Phantom, folder: str | os.PathLike) -> list[Path]:
    """Write the phantom as one axial CT series, one file per slice, the way a scanner does.

    RescaleIntercept -1024, slope 1, signed 16-bit pixels, ImagePositionPatient per slice,
    InstanceNumber from head to feet, fixed dates and seed-derived UIDs (so the same seed gives
    byte-identical files), and file names that do not sort in z order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec, geom = phantom.spec, phantom.geometry
    nz = geom.shape[0]
    study_uid, series_uid = _uid(spec, "study"), _uid(spec, "series")
    frame_uid = _uid(spec, "frame")
    day = 1 + (spec.seed * 31 + spec.index) % 28
    study_date = f"2000{1 + spec.index % 12:02d}{day:02d}"
    stored = (phantom.hu.astype(np.int32) - RESCALE_INTERCEPT).astype(np.int16)
    template = ds = Dataset()  # the elements every slice shares; per-slice ones are added below
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
    ds.StudyTime = ds.SeriesTime = "093000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "lunglib synthetic phantom"
    ds.ManufacturerModelName = "SYNTH-CT"
    ds.InstitutionName = "NOT A REAL HOSPITAL"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "SYNTHETIC CHEST CT"
    ds.SeriesDescription = "AXIAL CHEST SYNTHETIC"
    ds.PatientName = fake_patient_name(spec)
    ds.PatientID = fake_patient_id(spec)
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "NO"  # it is fake, not removed: privacy code must still hide it
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = f"{geom.slice_thickness:g}"
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = geom.shape[1], geom.shape[2]
    ds.PixelSpacing = [f"{geom.spacing[1]:.4f}", f"{geom.spacing[2]:.4f}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1600"
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    shared = list(template.items())
    paths = []
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = _uid(spec, "slice", k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "LUNGLIB_SYNTH"
        ds = FileDataset(None, dict(shared), file_meta=meta, preamble=b"\0" * 128)
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.ContentTime = ds.AcquisitionTime = f"0930{k % 60:02d}"
        ds.InstanceNumber = nz - k  # numbered head to feet: do not sort by it
        z_mm = geom.origin[2] + k * geom.spacing[0]
        ds.ImagePositionPatient = [f"{geom.origin[0]:.4f}", f"{geom.origin[1]:.4f}", f"{z_mm:.4f}"]
        ds.SliceLocation = f"{z_mm:.4f}"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = folder / _file_name(spec, k)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def _nodule_rows(phantom: Phantom) -> list[dict[str, object]]:
    rows = []
    for n in phantom.nodules:
        world = phantom.geometry.index_to_world(n.center_zyx)
        rows.append({
            "id": phantom.spec.patient_id, "nodule": n.nodule, "malignant": n.malignant,
            "kind": n.kind, "texture": n.texture, "attachment": n.attachment, "lung": n.lung,
            "diameter_mm": n.diameter_mm, "volume_mm3": n.volume_mm3,
            "mean_hu": n.mean_hu,
            "center_z": n.center_zyx[0], "center_y": n.center_zyx[1], "center_x": n.center_zyx[2],
            "world_x": round(float(world[0]), 2), "world_y": round(float(world[1]), 2),
            "world_z": round(float(world[2]), 2),
        })
    return rows


def _patient_record(phantom: Phantom) -> dict[str, object]:
    geom = phantom.geometry
    return {
        "fingerprint": phantom.spec.fingerprint(),
        "spec": asdict(phantom.spec),
        "shape_zyx": list(geom.shape),
        "spacing_zyx_mm": [round(float(s), 4) for s in geom.spacing],
        "slice_thickness_mm": geom.slice_thickness,
        "origin_xyz_mm": [round(float(o), 4) for o in geom.origin],
        "nodules": _nodule_rows(phantom),
    }


def generate_patient(spec: PatientSpec, out_dir: str | os.PathLike) -> dict[str, object]:
    """Generate and write one patient (DICOM folder, ground truth); return its record.

    The DICOM series is written to a hidden temporary folder and renamed into place last, so an
    interrupted run never leaves a half-written patient that looks complete.
    """
    out_dir = Path(out_dir)
    phantom = make_patient(spec)
    truth_dir = out_dir / "ground_truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".partial-{spec.patient_id}-{uuid.uuid4().hex[:8]}"
    write_dicom_series(phantom, tmp)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, nodule_labels=phantom.nodule_labels, lung_mask=phantom.lung_mask,
        spacing_zyx=np.asarray(phantom.geometry.spacing, float),
        origin_xyz=np.asarray(phantom.geometry.origin, float),
    )
    write_bytes_atomic(truth_dir / f"{spec.patient_id}.npz", buffer.getvalue())
    final = out_dir / spec.patient_id
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    record = _patient_record(phantom)
    write_bytes_atomic(truth_dir / f"{spec.patient_id}.json",
                  json.dumps(record, indent=1, sort_keys=True).encode())
    return record


# --------------------------------------------------------------------------------------------
# Cohort


def patient_id(index: int) -> str:
    """Folder name (the case id) of patient ``index`` (0-based): ``synth-0001`` ..."""
    return f"synth-{index + 1:04d}"


def cohort_specs(
    n_patients: int, seed: int, matrix: int, difficulty: float, cancer_fraction: float = 0.5
) -> list[PatientSpec]:
    """The patients of a cohort; labels shuffled so that ``cancer_fraction`` of them have cancer."""
    n_cancer = int(round(n_patients * cancer_fraction))
    labels = np.array([1] * n_cancer + [0] * (n_patients - n_cancer))
    np.random.default_rng([seed, 7919]).shuffle(labels)
    return [PatientSpec(index=i, patient_id=patient_id(i), seed=seed, cancer=int(labels[i]),
                        matrix=matrix, difficulty=float(difficulty)) for i in range(n_patients)]


def _validate(n_patients: int, seed: int, matrix: int, difficulty: float,
              cancer_fraction: float) -> None:
    if isinstance(n_patients, bool) or not isinstance(n_patients, (int, np.integer)) \
            or n_patients < 1:
        raise ValueError(f"n_patients must be a positive whole number, got {n_patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    if not isinstance(matrix, (int, np.integer)) or not 48 <= matrix <= 1024:
        raise ValueError(f"matrix must be a whole number of pixels from 48 to 1024, got {matrix!r}")
    if not 0.0 <= float(difficulty) <= 1.0:
        raise ValueError(f"difficulty must be between 0 (easy) and 1 (hard), got {difficulty!r}")
    if not 0.0 <= float(cancer_fraction) <= 1.0:
        raise ValueError(f"cancer_fraction must be between 0 and 1, got {cancer_fraction!r}")


def _cohort_parameters(n_patients: int, seed: int, matrix: int, difficulty: float,
                       cancer_fraction: float) -> dict[str, object]:
    return {"format": FORMAT_VERSION, "n_patients": int(n_patients), "seed": int(seed),
            "matrix": int(matrix), "difficulty": float(difficulty),
            "cancer_fraction": float(cancer_fraction)}


def _is_done(out_dir: Path, spec: PatientSpec) -> dict[str, object] | None:
    record_path = out_dir / "ground_truth" / f"{spec.patient_id}.json"
    if not (out_dir / spec.patient_id).is_dir() or not record_path.is_file():
        return None
    if not (out_dir / "ground_truth" / f"{spec.patient_id}.npz").is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("fingerprint") == spec.fingerprint() else None


def write_cohort(
    out_dir: str | os.PathLike,
    n_patients: int = DEFAULT_N_PATIENTS,
    seed: int = 0,
    matrix: int = DEFAULT_MATRIX,
    difficulty: float = 0.5,
    full_resolution: bool = False,
    cancer_fraction: float = 0.5,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a synthetic chest-CT cohort in the DSB2017 layout; return its folder.

    Parameters
    ----------
    out_dir : path-like
        Folder to write (created if needed). Patients already written with the same
        parameters are kept, so an interrupted run resumes where it stopped.
    n_patients : int, default 80
        Number of patients (about ``cancer_fraction`` of them with cancer).
    seed : int, default 0
        Seed of every random choice; the same seed gives byte-identical files.
    matrix : int, default 128
        In-plane pixels (rows = columns). The field of view stays 300-420 mm, so the pixel
        spacing follows (about 2.7 mm at 128, 0.7 mm at 512).
    difficulty : float in [0, 1], default 0.5
        0 makes malignant nodules large and solid and benign ones few, small and often
        calcified; 1 lets their sizes overlap, makes more of the malignant ones part-solid
        and raises the noise. See :class:`NoduleRanges`.
    full_resolution : bool, default False
        Use a 512 x 512 matrix (overrides ``matrix``), for realism; about 16x the disk space.
    cancer_fraction : float, default 0.5
        Share of patients with cancer.
    workers : int or None
        Processes to use; default one per CPU core (1 runs in this process).
    progress : bool, default True
        Show a tqdm progress bar.

    Returns
    -------
    Path
        ``out_dir``, holding one folder per patient, ``labels.csv``, ``nodules.csv``,
        ``ground_truth/`` and ``cohort.json``.
    """
    if full_resolution:
        matrix = FULL_RESOLUTION_MATRIX
    _validate(n_patients, seed, matrix, difficulty, cancer_fraction)
    out_dir = Path(out_dir).expanduser()
    with _writer_lock(out_dir, progress):
        return _write_cohort(out_dir, n_patients, seed, matrix, difficulty, cancer_fraction,
                             workers, progress)


@contextmanager
def _writer_lock(out_dir: Path, progress: bool = False) -> Iterator[None]:
    """One writer per cohort folder at a time, across processes.

    Two runs started together on a fresh checkout both find no cohort; without the lock the
    second removes the first one's half-written ``.partial-*`` patients (its stale-leftover
    cleanup) and the first fails. With it the second waits, then finds the cohort written; with
    ``progress`` it says so on stderr first, so the wait does not look like a hang.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out_dir / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if progress:
            print(f"synthetic cohort: waiting for another process that is writing {out_dir}",
                  file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _write_cohort(out_dir: Path, n_patients: int, seed: int, matrix: int, difficulty: float,
                  cancer_fraction: float, workers: int | None, progress: bool) -> Path:
    """:func:`write_cohort` once its arguments are checked and its folder is locked."""
    if (out_dir / "cohort.json").exists():
        (out_dir / "cohort.json").unlink()  # the cohort is incomplete until rewritten below
    for stale in out_dir.glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    specs = cohort_specs(n_patients, seed, matrix, difficulty, cancer_fraction)
    records: dict[str, dict[str, object]] = {}
    todo = []
    for spec in specs:
        done = _is_done(out_dir, spec)
        if done is not None:
            records[spec.patient_id] = done
        else:
            todo.append(spec)
    _remove_extra_patients(out_dir, {s.patient_id for s in specs})
    workers = max(1, min(int(workers or os.cpu_count() or 1), max(1, len(todo))))
    from tqdm.auto import tqdm

    with tqdm(total=len(specs), initial=len(records), desc="synthetic cohort", unit="patient",
              disable=not progress) as bar:
        if workers == 1:
            for spec in todo:
                records[spec.patient_id] = generate_patient(spec, out_dir)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(generate_patient, spec, out_dir): spec for spec in todo}
                for future in as_completed(futures):
                    spec = futures[future]
                    try:
                        records[spec.patient_id] = future.result()
                    except Exception as exc:
                        raise RuntimeError(
                            f"synthetic patient {spec.patient_id} (seed {seed}) failed: {exc}; "
                            "rerun write_cohort to resume"
                        ) from exc
                    bar.update(1)
    _write_tables(out_dir, specs, records, _cohort_parameters(
        n_patients, seed, matrix, difficulty, cancer_fraction))
    return out_dir


def _remove_extra_patients(out_dir: Path, keep: set[str]) -> None:
    """Remove patients of an earlier, larger run (only folders this module wrote)."""
    truth = out_dir / "ground_truth"
    for record in truth.glob("synth-*.json") if truth.is_dir() else []:
        pid = record.stem
        if pid not in keep:
            shutil.rmtree(out_dir / pid, ignore_errors=True)
            for suffix in (".npz", ".json"):
                (truth / f"{pid}{suffix}").unlink(missing_ok=True)


def _csv_bytes(columns: Sequence[str], rows: list[dict[str, object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _write_tables(out_dir: Path, specs: list[PatientSpec], records: dict[str, dict[str, object]],
                  parameters: dict[str, object]) -> None:
    labels = [{"id": s.patient_id, "cancer": s.cancer} for s in specs]
    nodules = [row for s in specs for row in records[s.patient_id]["nodules"]]  # type: ignore[union-attr]
    write_bytes_atomic(out_dir / "labels.csv", _csv_bytes(("id", "cancer"), labels))
    write_bytes_atomic(out_dir / "nodules.csv", _csv_bytes(NODULE_COLUMNS, nodules))
    summary = {
        "parameters": parameters,
        "n_cancer": sum(s.cancer for s in specs),
        "n_nodules": len(nodules),
        "layout": "DSB2017: <patient_id>/<name>.dcm; labels.csv (id,cancer); nodules.csv; "
                  "ground_truth/<patient_id>.npz (nodule_labels int16, lung_mask uint8)",
        "generator": "lunglib.synthetic",
    }
    write_text_atomic(out_dir / "cohort.json", json.dumps(summary, indent=1, sort_keys=True))


def read_cohort_parameters(cohort_dir: str | os.PathLike) -> dict[str, object] | None:
    """The parameters recorded in ``cohort.json``, or None when the cohort is missing/incomplete."""
    path = Path(cohort_dir) / "cohort.json"
    try:
        return json.loads(path.read_text())["parameters"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_cohort(
    out_dir: str | os.PathLike | None = None,
    n_patients: int = DEFAULT_N_PATIENTS,
    seed: int = 0,
    matrix: int = DEFAULT_MATRIX,
    difficulty: float = 0.5,
    full_resolution: bool = False,
    cancer_fraction: float = 0.5,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Return the synthetic cohort's folder, generating it first when missing or different.

    ``out_dir`` defaults to ``lunglib.settings.default_data_root() / "synthetic"``. Nothing is
    generated when its ``cohort.json`` records the same parameters.
    """
    out = Path(out_dir).expanduser() if out_dir else default_data_root() / "synthetic"
    wanted_matrix = FULL_RESOLUTION_MATRIX if full_resolution else matrix
    _validate(n_patients, seed, wanted_matrix, difficulty, cancer_fraction)
    wanted = _cohort_parameters(n_patients, seed, wanted_matrix, difficulty, cancer_fraction)
    if read_cohort_parameters(out) == wanted:
        return out
    with _writer_lock(out, progress):
        if read_cohort_parameters(out) == wanted:  # another process wrote it while we waited
            return out
        return _write_cohort(out, n_patients, seed, wanted_matrix, difficulty, cancer_fraction,
                             workers, progress)


def load_ground_truth(cohort_dir: str | os.PathLike, patient_id: str) -> dict[str, object]:
    """Ground truth of one synthetic patient.

    Returns
    -------
    dict
        ``nodule_labels`` (int16 z, y, x: 0 background, k = nodule k), ``lung_mask`` (uint8 0/1),
        both in the voxel grid of ``load_scan(cohort_dir / patient_id)``; ``spacing_zyx`` and
        ``origin_xyz`` (mm); ``cancer`` (0/1); ``nodules`` (list of dicts, the patient's rows of
        ``nodules.csv``).

    Raises
    ------
    FileNotFoundError
        When the patient has no ground truth in that folder.
    """
    cohort_dir = Path(cohort_dir)
    truth = cohort_dir / "ground_truth"
    npz_path, record_path = truth / f"{patient_id}.npz", truth / f"{patient_id}.json"
    if not npz_path.is_file() or not record_path.is_file():
        raise FileNotFoundError(
            f"{npz_path}: no ground truth for patient {patient_id!r} in {cohort_dir}; is this a "
            "cohort written by lunglib.synthetic.cohort.write_cohort (python -m lunglib synth)?"
        )
    with np.load(npz_path) as data:
        out: dict[str, object] = {name: data[name] for name in data.files}
    record = json.loads(record_path.read_text())
    out["cancer"] = int(record["spec"]["cancer"])
    out["nodules"] = record["nodules"]
    return out
