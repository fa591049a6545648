"""Nodules drawn into the lungs: how many, how large, what shape and texture, and where.

:class:`NoduleRanges` turns the difficulty knob into size, texture and count ranges;
:func:`place_nodules` draws malignant nodules (cancer patients only) and benign ones (anyone)
into the anatomy from the nodule random stream, and returns their label volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lunglib.synthetic.anatomy import Anatomy
from lunglib.synthetic.geometry import Geometry, tube_fraction, unit_vector


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
        direction = unit_vector(rng.standard_normal(3))
        offset = direction * radius * rng.uniform(0.3, 0.5)
        spheres.append((offset, radius * rng.uniform(0.45, 0.65)))
    if kind == "spiculated":
        for _ in range(int(rng.integers(6, 14))):
            direction = unit_vector(rng.standard_normal(3))
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
        hit = tube_fraction(geom, a, b, r0, r1)
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
