"""Public lung-CT datasets through one interface (:class:`CTDataset`).

``open_dataset(name, root)`` picks the adapter for a dataset's native layout:

=================  =================================  ==========================================
name               adapter                            what it reads
=================  =================================  ==========================================
``synthetic``      :class:`SyntheticDataset`          lunglib's synthetic cohort (+ true masks)
``dsb2017``        :class:`DSB2017Dataset`            ``stage1/<id>/*.dcm`` + ``stage1_labels.csv``
``lidc``           :class:`LIDCDataset`               LIDC-IDRI DICOM + readers' XML
``luna16``         :class:`LUNA16Dataset`             ``subsetN/*.mhd`` + ``annotations.csv``
``lung-pet-ct-dx`` :class:`LungPETCTDxDataset`        DICOM + VOC boxes per SOPInstanceUID
=================  =================================  ==========================================

Nodule patch sets are not CT scans: read them with :func:`load_patch_set`. The course accepts
them under the name :data:`PATCH_SET` (``"patches"``); :data:`DATASET_NAMES` lists every name a
notebook may choose, the CT datasets first. :func:`dataset_provenance` gives each dataset's source,
licence and citation (for reports). :func:`read_annotation_points` places the nodules of one
annotation file (LIDC XML, VOC boxes, LUNA16 or point CSV) in a given scan's voxel grid, and
:func:`parse_point` a point typed as ``x,y,z``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lunglib.datasets.base import CTDataset
from lunglib.datasets.dsb2017 import DSB2017Dataset
from lunglib.datasets.lidc import LIDCDataset
from lunglib.datasets.luna16 import LUNA16Dataset
from lunglib.datasets.lung_pet_ct_dx import LungPETCTDxDataset
from lunglib.datasets.patches import PatchSet, load_patch_set
from lunglib.datasets.points import AnnotationPoints, parse_point, read_annotation_points
from lunglib.datasets.provenance import PROVENANCE, Provenance, dataset_provenance
from lunglib.datasets.synthetic import SyntheticDataset

DATASETS: dict[str, type[CTDataset]] = {
    "synthetic": SyntheticDataset,
    "dsb2017": DSB2017Dataset,
    "lidc": LIDCDataset,
    "luna16": LUNA16Dataset,
    "lung-pet-ct-dx": LungPETCTDxDataset,
}
# The pseudo-dataset of 2D nodule patches (a .npz file, not a folder of CT scans).
PATCH_SET = "patches"
DATASET_NAMES: tuple[str, ...] = (*DATASETS, PATCH_SET)
_ALIASES = {
    "lidc-idri": "lidc",
    "dsb": "dsb2017",
    "luna": "luna16",
    "lung_pet_ct_dx": "lung-pet-ct-dx",
}


def open_dataset(
    name: str, root: str | Path, labels: str | Path | Mapping | None = None, **kwargs
) -> CTDataset:
    """Open a dataset folder with the adapter for its layout.

    Parameters
    ----------
    name : {"synthetic", "dsb2017", "lidc", "luna16", "lung-pet-ct-dx"}
    root : path-like
        The folder you downloaded the dataset to (see ``docs/datasets.md``).
    labels : path-like or mapping, optional
        Patient labels (a CSV with an id and a label column, or ``{id: label}``), for the
        datasets that take them (synthetic, dsb2017, luna16). LIDC-IDRI and Lung-PET-CT-Dx
        derive their labels from their annotations.
    **kwargs
        Passed to the adapter (e.g. ``consensus_fraction`` or ``annotations="xml"`` for ``lidc``).
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key == PATCH_SET:
        raise ValueError("'patches' holds nodule patches, not CT scans: use load_patch_set(path)")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    cls = DATASETS[key]
    if labels is not None and str(labels) != "":
        if key in ("lidc", "lung-pet-ct-dx"):
            raise ValueError(
                f"dataset {key!r} derives its labels from its annotations; do not pass labels"
            )
        kwargs["labels"] = labels
    return cls(root, **kwargs)


__all__ = [
    "AnnotationPoints",
    "CTDataset",
    "DATASETS",
    "DATASET_NAMES",
    "DSB2017Dataset",
    "LIDCDataset",
    "LUNA16Dataset",
    "LungPETCTDxDataset",
    "PATCH_SET",
    "PROVENANCE",
    "PatchSet",
    "Provenance",
    "SyntheticDataset",
    "dataset_provenance",
    "load_patch_set",
    "open_dataset",
    "parse_point",
    "read_annotation_points",
]
