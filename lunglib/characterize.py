"""Characterise a nodule on a real scan with the shipped real-data models.

``python -m lunglib characterize SCAN --at x,y,z`` (or ``--from`` an annotation file) calls
:func:`characterize_scan`. For each nodule point:

1. **Outline.** Axial patches centred on the point, on the slices within ``search_mm`` of it,
   are outlined by the shipped ``nodule_unet`` (:mod:`lunglib.models.pretrained`), each at the
   model's pixel size (the scan's own pixels when they lie in the training range, else resampled
   to its nearest end). The outlines are stacked and the 3D connected component at the point is
   kept, so a vessel next to the nodule on another slice does not join it.
2. **The slice of largest extent.** The patch is cut again on the slice where that component is
   largest, centred on it (the U-Net was trained on patches centred on the outline), and
   outlined once more: this is the outline that is measured.
3. **Measures** of that outline: long axis (the longest chord of its convex hull) and short axis
   (the hull's extent perpendicular to it), in mm, as in RECIST; area; mean HU inside; an
   approximate volume, the component's area on every slice of the nodule (:func:`nodule_extent`)
   times the slice spacing.
4. **Malignancy.** The shipped ``malignancy`` model on the same slice and outline, calibrated
   (Platt scaling fitted on its validation patients, see its model card).
5. With an annotation that carries outlines (LIDC readers' XML), the **Dice** of the outline
   against the readers' consensus on the same slice.

It writes ``nodules.csv``, ``nodules.json`` and a one-page ``nodules.png`` (patch, outline,
numbers per nodule). No patient identifier is printed or saved (the scan's pseudonymous key
only).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from lunglib.evaluation.segmentation import binarize, central_component, dice
from lunglib.io.atomic import write_text_atomic
from lunglib.io.dicom import CTScan, load_scan
from lunglib.preprocess import axial_patch

SEARCH_MM = 30.0
"""How far above and below the point the outline is looked for (mm along the slice normal)."""
MIN_AREA_FRACTION = 0.25
"""A slice belongs to the nodule while its outline keeps this fraction of the largest one's."""

COLUMNS = ("nodule", "z", "y", "x", "x_mm", "y_mm", "z_mm", "slice", "long_axis_mm",
           "short_axis_mm", "area_mm2", "volume_mm3", "slices", "mean_hu", "malignancy",
           "malignant_at_threshold", "dice_consensus", "outline_clipped", "found")
"""Columns of ``nodules.csv`` (plus what the annotation file adds, e.g. the readers' ratings)."""


@dataclass
class NoduleView:
    """What the one-page figure shows of one nodule: the measured patch and outlines."""

    patch_hu: np.ndarray
    outline: np.ndarray
    consensus: np.ndarray | None
    pixel_mm: tuple[float, float]


@dataclass
class Characterization:
    """What :func:`characterize_scan` found: one row per nodule point, and where it wrote."""

    patient_key: str
    table: pd.DataFrame
    views: list[NoduleView] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        rows = json.loads(self.table.to_json(orient="records"))
        return {"patient_key": self.patient_key, "nodules": rows, "notes": self.notes,
                "files": {k: str(v) for k, v in self.files.items()},
                "models": {"outline": "nodule_unet", "malignancy": "malignancy"}}


# ------------------------------------------------------------------------------------------------
# Geometry of one outline


def axes_mm(outline: np.ndarray, pixel_mm: tuple[float, float]) -> tuple[float, float]:
    """Long and short axis of a 2D outline in mm.

    The long axis is the longest distance between two corners of the outline's pixels (the
    longest chord of their convex hull); the short axis is the hull's extent perpendicular to
    it. Written out rather than taken from scikit-image's ``regionprops``, whose
    ``axis_major_length`` is an ellipse fit and whose ``feret_diameter_max`` gives no
    perpendicular partner; both measures here come from one set of corner points.
    """
    rows, cols = np.nonzero(outline)
    if rows.size == 0:
        return 0.0, 0.0
    corners = np.concatenate([np.stack([rows + dr, cols + dc], axis=1)
                              for dr in (0, 1) for dc in (0, 1)]).astype(float)
    points = corners * np.asarray(pixel_mm, dtype=float)
    try:
        points = points[ConvexHull(points).vertices]
    except QhullError:  # all corners on a line cannot happen for pixels, but stay safe
        points = np.unique(points, axis=0)
    gaps = points[:, None, :] - points[None, :, :]
    lengths = np.hypot(gaps[..., 0], gaps[..., 1])
    i, j = np.unravel_index(np.argmax(lengths), lengths.shape)
    long_axis = float(lengths[i, j])
    direction = gaps[i, j] / long_axis
    normal = np.array([-direction[1], direction[0]])
    across = points @ normal
    return long_axis, float(across.max() - across.min())


def nodule_extent(stack: np.ndarray, min_fraction: float = MIN_AREA_FRACTION,
                  min_overlap: float = 0.5) -> np.ndarray:
    """The nodule's area (pixels) on each slice of a stack of outlines, 0 beyond its ends.

    The U-Net was trained on patches with a nodule at the centre, so above and below a nodule
    it still outlines whatever lies there (a vessel, the pleura). The nodule is followed from
    its largest slice outwards while each slice's outline keeps ``min_fraction`` of the largest
    area and overlaps its neighbour towards the largest slice by ``min_overlap`` of the
    smaller of the two. For a sphere, a quarter of the largest area is reached at 87 % of the
    radius; the two caps left out hold under 3 % of its volume.
    """
    areas = stack.sum(axis=tuple(range(1, stack.ndim))).astype(float)
    kept = np.zeros_like(areas)
    if not areas.any():
        return kept
    best = int(np.argmax(areas))
    kept[best] = areas[best]
    for step in (-1, 1):
        k = best
        while 0 <= k + step < len(areas):
            nxt = k + step
            shared = np.logical_and(stack[k], stack[nxt]).sum()
            smaller = min(areas[k], areas[nxt])
            if areas[nxt] < min_fraction * areas[best] or shared < min_overlap * smaller:
                break
            kept[nxt] = areas[nxt]
            k = nxt
    return kept


# ------------------------------------------------------------------------------------------------
# The models


def _pixel_mm(scan: CTScan, info: dict) -> tuple[tuple[float, float], float | None]:
    """(pixel size of the patches, target spacing or None for the scan's own pixels)."""
    lo, hi = info.get("pixel_spacing_range_mm", (0.0, math.inf))
    row_mm, col_mm = float(scan.spacing[1]), float(scan.spacing[2])
    if lo <= row_mm <= hi and lo <= col_mm <= hi:
        return (row_mm, col_mm), None
    target = float(np.clip((row_mm + col_mm) / 2, lo, hi))
    return (target, target), target


def _filled(masks: np.ndarray) -> np.ndarray:
    """Each slice's outline with its holes filled (a nodule is measured to its boundary)."""
    return np.stack([ndimage.binary_fill_holes(m) for m in masks])


def _patches(scan: CTScan, slices: list[int], centre_rc, size: int, target: float | None):
    return np.stack([
        axial_patch(scan.hu[k], centre_rc, size, scan.spacing[1:], target)
        if 0 <= k < scan.shape[0] else np.full((size, size), -1024.0, np.float32)
        for k in slices])


def _outline_probabilities(hu_patches: np.ndarray) -> np.ndarray:
    from lunglib.models.pretrained import load_pretrained
    from lunglib.recipes.lidc_unet import lidc_unet_inputs, predict_lidc_unet

    model, info = load_pretrained("nodule_unet")
    return predict_lidc_unet(model, lidc_unet_inputs(hu_patches),
                             tta=info.get("tta") == "dihedral", size=hu_patches.shape[1])


def malignancy_probability(hu_patch: np.ndarray, outline: np.ndarray,
                           pixel_mm: tuple[float, float]) -> float:
    """The shipped malignancy model's calibrated probability for one slice and outline."""
    from lunglib.augment import predict_tta
    from lunglib.models.pretrained import load_pretrained
    from lunglib.recipes.pretrained import apply_calibration
    from lunglib.training import patch_inputs, predict_proba

    model, info = load_pretrained("malignancy")
    x = patch_inputs(hu_patch[None], outline[None].astype(np.float32),
                     np.array([float(np.mean(pixel_mm))]), info["target_spacing_mm"],
                     info["input_size"], tuple(info["window"]),
                     extra_windows=[tuple(w) for w in info["extra_windows"]],
                     nodule_view=info["nodule_view"])
    views = "dihedral" if info.get("tta") == "dihedral" else "none"
    raw = predict_tta(lambda b: predict_proba(model, b), x, views=views)
    return float(apply_calibration(raw, info.get("calibration"))[0])


# ------------------------------------------------------------------------------------------------
# One nodule


def characterize_nodule(
    scan: CTScan,
    point_zyx,
    consensus: np.ndarray | None = None,
    search_mm: float = SEARCH_MM,
) -> tuple[dict[str, object], NoduleView | None]:
    """Outline, measure and score the nodule at one point of ``scan``.

    Parameters
    ----------
    scan : CTScan
    point_zyx : (z, y, x)
        A point inside the nodule, in voxel indices (fractions allowed).
    consensus : ndarray of bool (z, y, x), optional
        A reference outline of this nodule in the scan's grid (e.g. the LIDC readers'
        consensus): the Dice on the measured slice is reported.
    search_mm : float
        How far along the slice normal the outline is followed.

    Returns
    -------
    (dict, NoduleView or None)
        One row of :data:`COLUMNS` (``found`` False, and no view, when the U-Net outlines
        nothing at the point).
    """
    from lunglib.models.pretrained import load_pretrained

    _, info = load_pretrained("nodule_unet")
    size, threshold = int(info["patch_size"]), float(info["threshold"])
    pixel_mm, target = _pixel_mm(scan, info)
    z0, y0, x0 = (float(v) for v in point_zyx)
    k0 = int(round(z0))
    reach = max(1, int(math.ceil(search_mm / float(scan.spacing[0]))))
    slices = list(range(k0 - reach, k0 + reach + 1))  # symmetric: the stack's centre is k0
    prob = _outline_probabilities(_patches(scan, slices, (y0, x0), size, target))
    stack = central_component(_filled(binarize(prob, threshold)))
    world = scan.voxel_to_world((z0, y0, x0))
    row: dict[str, object] = {"z": z0, "y": y0, "x": x0, "x_mm": float(world[0]),
                              "y_mm": float(world[1]), "z_mm": float(world[2])}
    areas = nodule_extent(stack)
    if not areas.any():
        return {**row, "found": False}, None
    best = int(np.argmax(areas))
    k = slices[best]
    # cut again centred on the component on that slice, as the training patches were
    offset = np.array(ndimage.center_of_mass(stack[best])) - (size - 1) / 2.0
    step = np.ones(2) if target is None else np.full(2, target) / np.asarray(scan.spacing[1:])
    centre = np.array([y0, x0]) + offset * step
    patch = _patches(scan, [k], centre, size, target)[0]
    outline = central_component(_filled(binarize(_outline_probabilities(patch[None])[0],
                                                 threshold)))
    if not outline.any():  # re-centring lost it: measure the first cut
        patch = _patches(scan, [k], (y0, x0), size, target)[0]
        outline = stack[best]
    long_axis, short_axis = axes_mm(outline, pixel_mm)
    pixel_area = pixel_mm[0] * pixel_mm[1]
    reference = None
    if consensus is not None:
        reference = axial_patch(consensus[k].astype(np.float32), centre, size, scan.spacing[1:],
                                target, fill=0.0, order=0) > 0.5
    row.update({
        "slice": k,
        "long_axis_mm": long_axis,
        "short_axis_mm": short_axis,
        "area_mm2": float(outline.sum() * pixel_area),
        "volume_mm3": float(areas.sum() * pixel_area * float(scan.spacing[0])),
        "slices": int((areas > 0).sum()),
        "mean_hu": float(patch[outline].mean()),
        "malignancy": malignancy_probability(patch, outline, pixel_mm),
        "dice_consensus": float(dice(reference, outline)) if reference is not None else None,
        "outline_clipped": bool(outline[0].any() or outline[-1].any() or outline[:, 0].any()
                                or outline[:, -1].any()),
        "found": True,
    })
    _, malignancy_info = load_pretrained("malignancy")
    row["malignant_at_threshold"] = bool(row["malignancy"] >= malignancy_info["threshold"])
    return row, NoduleView(patch, outline, reference, pixel_mm)


# ------------------------------------------------------------------------------------------------
# A scan


def characterize_scan(
    scan_path: str | os.PathLike,
    at: list[str] | None = None,
    voxel: bool = False,
    annotation: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    series_uid: str | None = None,
    report: bool = True,
) -> Characterization:
    """Characterise the nodules at the given points of one scan (see the module docstring).

    Parameters
    ----------
    scan_path : path-like
        A DICOM folder, or one NIfTI, NRRD or MetaImage file.
    at : list of str, optional
        Points ``"x,y,z"``: patient coordinates in mm (DICOM LPS), or voxel indices
        (column, row, slice) with ``voxel=True``.
    voxel : bool, default False
    annotation : path-like, optional
        An annotation file with nodule locations (LIDC readers' XML, LUNA16 ``annotations.csv``,
        Lung-PET-CT-Dx boxes, or a CSV of points; :func:`lunglib.datasets.read_annotation_points`).
    output_dir : path-like, optional
        Receives ``nodules.csv``, ``nodules.json`` and ``nodules.png``; nothing is written
        without it.
    series_uid : str, optional
        Which series to read when the folder holds several.
    report : bool, default True
        Draw the one-page PNG.
    """
    from lunglib.datasets.points import parse_point, read_annotation_points

    if not at and annotation is None:
        raise ValueError("give the nodules to characterise: --at x,y,z (one or more) or --from "
                         "an annotation file")
    scan = load_scan(scan_path, series_uid=series_uid)
    points: list[tuple[float, float, float]] = []
    extra: list[dict[str, object]] = []
    consensus: list[np.ndarray | None] = []
    notes: list[str] = []
    for text in at or []:
        points.append(parse_point(text, scan, voxel=voxel))
        extra.append({})
        consensus.append(None)
    if annotation is not None:
        found = read_annotation_points(annotation, scan)
        notes.extend(getattr(found, "notes", []) or [])
        drop = {"nodule", "z", "y", "x", "x_mm", "y_mm", "z_mm"}
        for record in found.table.to_dict("records"):
            points.append((record["z"], record["y"], record["x"]))
            extra.append({("annotation_" + k if k in COLUMNS else k): v
                          for k, v in record.items() if k not in drop})
            consensus.append(None if found.labels is None or found.kind != "lidc_xml"
                             else found.labels == record["nodule"])
        if found.table.empty:
            notes.append(f"{Path(annotation).name}: no nodule in this scan")
    rows, views = [], []
    for number, (point, more, reference) in enumerate(zip(points, extra, consensus,
                                                          strict=True), start=1):
        row, view = characterize_nodule(scan, point, reference)
        rows.append({"nodule": number, **row, **more})
        views.append(view)
        if not row["found"]:
            notes.append(f"nodule {number}: the outline model found nothing at the point "
                         f"({row['x_mm']:.1f}, {row['y_mm']:.1f}, {row['z_mm']:.1f}) mm")
        elif row["outline_clipped"]:
            notes.append(f"nodule {number}: the outline reaches the edge of the model's "
                         f"{view.patch_hu.shape[0]}-pixel patch; the nodule is larger than "
                         "what the model sees, so its sizes are lower bounds")
    table = pd.DataFrame(rows)
    ordered = [c for c in COLUMNS if c in table] + [c for c in table if c not in COLUMNS]
    result = Characterization(scan.patient_key, table[ordered], views, {}, notes)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        csv_path = out / "nodules.csv"
        write_text_atomic(csv_path, result.table.to_csv(index=False))
        result.files["csv"] = csv_path
        if report:
            from lunglib.viz.characterize import characterization_figure

            result.files["report"] = characterization_figure(result, out / "nodules.png")
        result.files["json"] = out / "nodules.json"
        write_text_atomic(result.files["json"], json.dumps(result.summary(), indent=2))
    return result


def characterize_batch(
    folder: str | os.PathLike,
    output_dir: str | os.PathLike,
    at: list[str] | None = None,
    voxel: bool = False,
    annotation: str | os.PathLike | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`characterize_scan` on every scan of a folder (:func:`lunglib.batch.run_batch`).

    ``annotation`` is read against each scan in turn, so one LUNA16 ``annotations.csv`` (rows
    matched by series UID or file name) serves a folder of LUNA16 volumes; a scan it has no row
    for is listed as failed with that reason. The summary (``summary.csv``) adds
    ``n_nodules``, ``n_outlined`` and ``max_malignancy`` per scan.
    """
    from lunglib.batch import run_batch

    def work(item: Path, out: Path) -> dict[str, object]:
        result = characterize_scan(item, at=at, voxel=voxel, annotation=annotation,
                                   output_dir=out)
        found = result.table[result.table["found"]] if len(result.table) else result.table
        return {"patient_key": result.patient_key, "n_nodules": len(result.table),
                "n_outlined": len(found),
                "max_malignancy": float(found["malignancy"].max()) if len(found) else np.nan}

    return run_batch(folder, output_dir, work, ["n_nodules", "n_outlined", "max_malignancy"],
                     num_parts, part_id, progress, desc="characterizing")
