"""The patient's body in Hounsfield units: organs and lungs, the vessel tree and the bones.

:func:`draw_anatomy` paints body, fat, muscle, mediastinum, heart, great vessels, airway, liver
and the two lungs; :func:`grow_vessel_tree` rasterises a branching pulmonary vessel tree in each
lung; :func:`draw_bones` adds spine, ribs and sternum. Every step draws from the anatomy random
stream only, so a patient's anatomy does not depend on their label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lunglib.synthetic.geometry import Geometry, tube_fraction, unit_vector

AIR, FAT, MUSCLE, BLOOD, LIVER = -1000.0, -100.0, 40.0, 40.0, 55.0
LUNG_SIDES = ("right", "left")  # patient right is -x in DICOM LPS coordinates
TISSUES = {"air": 0, "fat": 1, "soft_tissue": 2, "blood": 3, "lung": 4, "bone": 5,
           "vessel": 6, "nodule": 7, "airway": 8, "liver": 9}


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
            direction = unit_vector(np.asarray(trunk) + 0.25 * rng.standard_normal(3))
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
                direction = unit_vector(direction + 0.6 * rng.standard_normal(3))
            if last_ok * length < 3.0:
                continue
            end = start + direction * length * last_ok
            r_end = radius * 0.9
            hit = tube_fraction(geom, start, end, radius, r_end)
            if hit is not None:
                box, frac = hit
                np.maximum(vessels[box], frac, out=vessels[box])
            n_segments += 1
            if r_end < 0.45 or last_ok < 1.0:
                continue
            away = unit_vector(end - root)
            normal = unit_vector(np.cross(direction, rng.standard_normal(3)))
            for sign in (1.0, -1.0):
                angle = np.deg2rad(rng.uniform(20.0, 50.0))
                child = unit_vector(np.cos(angle) * direction + sign * np.sin(angle) * normal
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
