"""The ground truth of a synthetic cohort: the one module that knows its files and checks.

Per patient, next to the DICOM folder::

    <cohort>/ground_truth/<patient_id>.npz    nodule_labels (int16, 0 background, k = nodule k),
                                              lung_mask (uint8 0/1), spacing_zyx, origin_xyz (mm)
    <cohort>/ground_truth/<patient_id>.json   the patient's spec, fingerprint, geometry and nodules

The masks are in the voxel grid that ``load_scan(<cohort>/<patient_id>)`` returns.
:func:`load_ground_truth` reads everything of one patient; :func:`ground_truth_array` reads one
mask, the way :class:`lunglib.datasets.SyntheticDataset` needs it (None when there is none).
Both refuse a file without the masks asked for, and masks whose shape is not the scan's.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lunglib.io.atomic import write_bytes_atomic
from lunglib.synthetic.phantom import Phantom

GROUND_TRUTH_DIR = "ground_truth"
MASKS = ("nodule_labels", "lung_mask")  # the volumes, shaped like the scan
NODULE_COLUMNS = (
    "id", "nodule", "malignant", "kind", "texture", "attachment", "lung", "diameter_mm",
    "volume_mm3", "mean_hu", "center_z", "center_y", "center_x", "world_x", "world_y", "world_z",
)


def ground_truth_paths(cohort_dir: str | os.PathLike, patient_id: str) -> tuple[Path, Path]:
    """The ``.npz`` (arrays) and ``.json`` (record) ground-truth files of one patient."""
    folder = Path(cohort_dir) / GROUND_TRUTH_DIR
    return folder / f"{patient_id}.npz", folder / f"{patient_id}.json"


def nodule_rows(phantom: Phantom) -> list[dict[str, object]]:
    """The phantom's nodules as rows of ``nodules.csv`` (columns :data:`NODULE_COLUMNS`)."""
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


def patient_record(phantom: Phantom) -> dict[str, object]:
    """What the ``.json`` file records of a patient (its fingerprint marks it as finished)."""
    geom = phantom.geometry
    return {
        "fingerprint": phantom.spec.fingerprint(),
        "spec": asdict(phantom.spec),
        "shape_zyx": list(geom.shape),
        "spacing_zyx_mm": [round(float(s), 4) for s in geom.spacing],
        "slice_thickness_mm": geom.slice_thickness,
        "origin_xyz_mm": [round(float(o), 4) for o in geom.origin],
        "nodules": nodule_rows(phantom),
    }


def write_ground_truth_arrays(phantom: Phantom, cohort_dir: str | os.PathLike) -> Path:
    """Write the phantom's ``.npz`` (masks, spacing, origin) atomically; return its path."""
    npz_path, _ = ground_truth_paths(cohort_dir, phantom.spec.patient_id)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, nodule_labels=phantom.nodule_labels, lung_mask=phantom.lung_mask,
        spacing_zyx=np.asarray(phantom.geometry.spacing, float),
        origin_xyz=np.asarray(phantom.geometry.origin, float),
    )
    write_bytes_atomic(npz_path, buffer.getvalue())
    return npz_path


def write_ground_truth_record(phantom: Phantom,
                              cohort_dir: str | os.PathLike) -> dict[str, object]:
    """Write the phantom's ``.json`` record atomically; return the record.

    Written last for a patient, since its presence (with the right fingerprint) is what tells a
    resumed run that the patient is finished.
    """
    _, record_path = ground_truth_paths(cohort_dir, phantom.spec.patient_id)
    record = patient_record(phantom)
    write_bytes_atomic(record_path, json.dumps(record, indent=1, sort_keys=True).encode())
    return record


def _read_arrays(npz_path: Path, names: Sequence[str] | None,
                 shape: Sequence[int] | None) -> dict[str, np.ndarray]:
    """Arrays ``names`` (all when None) of ``npz_path``, each mask checked against ``shape``."""
    with np.load(npz_path, allow_pickle=False) as data:
        missing = [n for n in (MASKS if names is None else names) if n not in data.files]
        if missing:
            raise ValueError(f"{npz_path}: no '{missing[0]}' array (found {sorted(data.files)})")
        arrays = {n: data[n] for n in (data.files if names is None else names)}
    for name in MASKS:
        if shape is not None and name in arrays and arrays[name].shape != tuple(shape):
            raise ValueError(
                f"{npz_path}: {name} has shape {arrays[name].shape} but the scan has "
                f"{tuple(shape)}; regenerate the cohort"
            )
    return arrays


def ground_truth_array(cohort_dir: str | os.PathLike, patient_id: str, name: str,
                       shape: Sequence[int] | None = None) -> np.ndarray | None:
    """One ground-truth array of a patient, or None when the cohort has no ground truth for them.

    Parameters
    ----------
    cohort_dir : path-like
        The cohort's folder.
    patient_id : str
        The patient's folder name, e.g. ``synth-0001``.
    name : str
        ``nodule_labels``, ``lung_mask``, ``spacing_zyx`` or ``origin_xyz``.
    shape : sequence of int, optional
        The scan's (z, y, x) shape, which a mask must have.

    Raises
    ------
    ValueError
        When the file has no array ``name``, or the mask's shape is not ``shape``.
    """
    npz_path, _ = ground_truth_paths(cohort_dir, patient_id)
    if not npz_path.is_file():
        return None
    return _read_arrays(npz_path, (name,), shape)[name]


def load_ground_truth(cohort_dir: str | os.PathLike, patient_id: str,
                      shape: Sequence[int] | None = None) -> dict[str, object]:
    """Ground truth of one synthetic patient.

    Parameters
    ----------
    cohort_dir, patient_id : path-like, str
        The cohort's folder and the patient's folder name in it (``synth-0001`` ...).
    shape : sequence of int, optional
        The scan's (z, y, x) shape, which both masks must have.

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
    ValueError
        When a mask is missing from the file, or its shape is not ``shape``.
    """
    npz_path, record_path = ground_truth_paths(cohort_dir, patient_id)
    if not npz_path.is_file() or not record_path.is_file():
        raise FileNotFoundError(
            f"{npz_path}: no ground truth for patient {patient_id!r} in {cohort_dir}; is this a "
            "cohort written by lunglib.synthetic.write_cohort (python -m lunglib synth)?"
        )
    out: dict[str, object] = dict(_read_arrays(npz_path, None, shape))
    record = json.loads(record_path.read_text())
    out["cancer"] = int(record["spec"]["cancer"])
    out["nodules"] = record["nodules"]
    return out
