"""Build a nodule patch set from an LIDC-IDRI download, in the shared patch-set format.

For every reader's outline of every nodule >= 3 mm (one sample per reader and nodule, as in
``../shared/data/lidc_nodule_patches/``):

* ``image`` / ``mask``: a 71x71 HU patch of the slice on which that reader's outline is largest,
  centred on the outline's bounding box (``crop_origin_rc`` = centre - 35, kept inside the image),
  and the reader's outline filled, boundary included;
* ``image_3d`` / ``mask_3d`` / ``consensus_3d``: a cube resampled to isotropic voxels around the
  reader's outline centre, with that reader's mask and the nodule's consensus mask;
* the reader's ratings, every reader's malignancy (``malignancy_by_reader``, 0 = did not mark),
  patient, nodule, slice and series ids, exactly the fields of the shared patch set.

So anyone with LIDC-IDRI can rebuild the patch benchmark from the original data::

    from lunglib.datasets.extract import build_patch_set
    build_patch_set("/data/LIDC-IDRI", "lidc_patches.npz")
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage

from lunglib.datasets.lidc import LIDCDataset
from lunglib.datasets.lidc_xml import LidcNodule
from lunglib.io.atomic import atomic_path
from lunglib.io.dicom import CTScan, DicomLoadError
from lunglib.io.qc import QCFinding

# (name in the npz, name in the LIDC XML)
RATING_FIELDS = (
    ("subtlety", "subtlety"),
    ("internal_structure", "internalStructure"),
    ("calcification", "calcification"),
    ("sphericity", "sphericity"),
    ("margin", "margin"),
    ("lobulation", "lobulation"),
    ("spiculation", "spiculation"),
    ("texture", "texture"),
)
N_READERS = 4


def consensus_malignancy(by_reader: np.ndarray) -> int:
    """Mode of the non-zero ratings; ties resolved towards the median (then the lower)."""
    ratings = [int(v) for v in by_reader if v]
    if not ratings:
        return 0
    counts = Counter(ratings)
    top = max(counts.values())
    modes = [v for v, c in counts.items() if c == top]
    median = float(np.median(ratings))
    return min(modes, key=lambda v: (abs(v - median), v))


def _crop_origin(center: int, size: int, extent: int) -> int:
    return int(np.clip(center - size // 2, 0, max(extent - size, 0)))


def _cube(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    centre_zyx: np.ndarray,
    size: int,
    voxel_mm: float,
    order: int,
    fill: float,
) -> np.ndarray:
    offsets = (np.arange(size) - (size - 1) / 2.0) * voxel_mm
    grids = np.meshgrid(*[centre_zyx[a] + offsets / spacing[a] for a in range(3)], indexing="ij")
    return ndimage.map_coordinates(volume, grids, order=order, mode="constant", cval=fill)


def _hu_offset(scan: CTScan) -> int:
    """RescaleIntercept of the series (the value added to stored pixels to obtain HU)."""
    for path in sorted(Path(scan.source).rglob("*")):
        if path.suffix.lower() in {".xml", ".csv", ".txt", ".json"} or not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any non-DICOM file is skipped
            continue
        if str(ds.get("SeriesInstanceUID", "")) == scan.series_uid:
            return int(float(ds.get("RescaleIntercept", 0)))
    return 0


def extract_patient(
    dataset: LIDCDataset,
    patient_id: str,
    patch_size: int = 71,
    cube_size: int = 32,
    cube_voxel_mm: float = 1.0,
    scan: CTScan | None = None,
) -> dict[str, list]:
    """Patch-set rows of one patient (lists per field; see the module docstring)."""
    rows: dict[str, list] = {}
    if not dataset.nodules(patient_id):
        return rows  # nothing outlined: no need to read the CT
    scan = scan if scan is not None else dataset.load_scan(patient_id)

    def add(key: str, value: object) -> None:
        rows.setdefault(key, []).append(value)

    hu_offset = _hu_offset(scan)
    manufacturer = str(scan.metadata.get("Manufacturer", ""))
    cube_fill = float(scan.hu.min())
    for nodule in dataset.nodules(patient_id):
        masks = dataset.reader_masks(patient_id, scan, nodule)
        consensus = dataset.consensus_mask(patient_id, scan, nodule)
        by_reader = np.array(nodule.malignancy_by_session(N_READERS)[:N_READERS], dtype=np.int8)
        for mark in _one_mark_per_session(nodule):
            mask = masks[mark.session]
            if not mask.any():
                continue  # its slices are not in this series (recorded as QC by the dataset)
            areas = mask.sum(axis=(1, 2))
            k = int(np.argmax(areas))
            rr, cc = np.nonzero(mask[k])
            r0 = _crop_origin((rr.min() + rr.max()) // 2, patch_size, scan.shape[1])
            c0 = _crop_origin((cc.min() + cc.max()) // 2, patch_size, scan.shape[2])
            window = (k, slice(r0, r0 + patch_size), slice(c0, c0 + patch_size))
            patch_mask = mask[window].astype(np.uint8)
            centre = np.array(ndimage.center_of_mass(mask))
            add("image", scan.hu[window])
            add("mask", patch_mask)
            add("image_3d", _cube(scan.hu, scan.spacing, centre, cube_size, cube_voxel_mm, 1,
                                  cube_fill).astype(np.int16))
            add("mask_3d", _cube(mask.astype(np.uint8), scan.spacing, centre, cube_size,
                                 cube_voxel_mm, 0, 0))
            add("consensus_3d", _cube(consensus.astype(np.uint8), scan.spacing, centre,
                                      cube_size, cube_voxel_mm, 0, 0))
            add("malignancy", mark.malignancy or 0)
            for name, xml_name in RATING_FIELDS:
                add(name, mark.characteristics.get(xml_name, 0))
            add("malignancy_consensus", consensus_malignancy(by_reader))
            add("malignancy_by_reader", by_reader)
            add("patient_id", patient_id)
            add("nodule_id", f"{patient_id}_n{nodule.index:04d}")
            add("reader_id", mark.session)
            add("pixel_spacing_mm", scan.spacing[1])
            add("z_position_mm", float(scan.voxel_to_world((k, 0, 0))[2]))
            add("crop_origin_rc", (r0, c0))
            add("outline_clipped", int(patch_mask.sum()) < int(areas[k]))
            add("hu_offset", hu_offset)
            add("manufacturer", manufacturer)
            add("series_uid", scan.series_uid)
            add("sop_uid", scan.slice_uids[k])
    return rows


def _one_mark_per_session(nodule: LidcNodule):
    """The first mark of each session (a reader who split a nodule counts once)."""
    seen: set[int] = set()
    for mark in nodule.marks:
        if mark.session not in seen and mark.malignancy is not None:
            seen.add(mark.session)
            yield mark


_DTYPES = {
    "image": np.int16, "mask": np.uint8, "image_3d": np.int16, "mask_3d": np.uint8,
    "consensus_3d": np.uint8, "malignancy": np.int8, "malignancy_consensus": np.int8,
    "malignancy_by_reader": np.int8, "reader_id": np.int8, "pixel_spacing_mm": np.float32,
    "z_position_mm": np.float32, "crop_origin_rc": np.int16, "outline_clipped": bool,
    "hu_offset": np.int16, "annotation_id": np.int32, **{n: np.int8 for n, _ in RATING_FIELDS},
}


def extract_lidc_patches(
    dataset: LIDCDataset,
    patient_ids: list[str] | None = None,
    patch_size: int = 71,
    cube_size: int = 32,
    cube_voxel_mm: float = 1.0,
) -> tuple[dict[str, np.ndarray], list[QCFinding]]:
    """Patch-set arrays for several LIDC-IDRI patients.

    A patient whose scan fails to load becomes an error finding; the others are still extracted.

    Returns
    -------
    arrays : dict of ndarray
        The fields of the shared patch set plus ``image_3d``, ``mask_3d``, ``consensus_3d``.
    findings : list of QCFinding
    """
    if patch_size <= 0 or cube_size <= 0 or cube_voxel_mm <= 0:
        raise ValueError("patch_size, cube_size and cube_voxel_mm must be positive")
    findings: list[QCFinding] = []
    merged: dict[str, list] = {}
    for pid in patient_ids if patient_ids is not None else dataset.patient_ids():
        try:
            rows = extract_patient(dataset, pid, patch_size, cube_size, cube_voxel_mm)
        except (DicomLoadError, KeyError) as exc:
            findings.append(QCFinding("patient_skipped", f"{pid}: {exc}", "error"))
            continue
        for key, values in rows.items():
            merged.setdefault(key, []).extend(values)
    findings.extend(dataset.qc())
    n = len(merged.get("image", []))
    merged["annotation_id"] = list(range(1, n + 1))
    arrays = {}
    for key, values in merged.items():
        dtype = _DTYPES.get(key)
        arrays[key] = np.asarray(values, dtype=dtype) if dtype else np.asarray(values).astype(str)
    if n == 0:
        arrays["image"] = np.zeros((0, patch_size, patch_size), np.int16)
        arrays["mask"] = np.zeros((0, patch_size, patch_size), np.uint8)
    return arrays, findings


def write_patch_set(arrays: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write patch-set arrays to ``path`` (.npz, compressed) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path)


def build_patch_set(
    lidc_root: str | Path,
    out_path: str | Path,
    patient_ids: list[str] | None = None,
    **kwargs,
) -> tuple[Path, list[QCFinding]]:
    """Extract every patient of an LIDC-IDRI download and write the npz; returns path and QC."""
    arrays, findings = extract_lidc_patches(LIDCDataset(lidc_root), patient_ids, **kwargs)
    return write_patch_set(arrays, out_path), findings
