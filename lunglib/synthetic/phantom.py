"""One synthetic patient, start to finish: its spec, and the phantom generated from it.

:func:`make_patient` chains the steps -- :func:`~lunglib.synthetic.geometry.sample_geometry`,
:func:`~lunglib.synthetic.anatomy.draw_anatomy`, :func:`~lunglib.synthetic.anatomy.draw_bones`,
:func:`~lunglib.synthetic.anatomy.grow_vessel_tree`,
:func:`~lunglib.synthetic.nodules.place_nodules` and
:func:`~lunglib.synthetic.scanner.apply_scanner` -- with one random stream for the anatomy, one
for the nodules and one for the scanner noise, so that a patient's anatomy does not depend on
their label.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from lunglib.synthetic.anatomy import BLOOD, TISSUES, draw_anatomy, draw_bones, grow_vessel_tree
from lunglib.synthetic.geometry import DEFAULT_MATRIX, Geometry, sample_geometry
from lunglib.synthetic.nodules import Nodule, NoduleRanges, place_nodules
from lunglib.synthetic.scanner import apply_scanner

# Part of every patient's fingerprint: raise it when a change alters the files written.
FORMAT_VERSION = 1


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
