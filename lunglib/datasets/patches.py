"""Nodule patch sets: small HU patches around nodules, with masks, ratings and patient ids.

Two npz formats are read by :func:`load_patch_set`:

* the **LIDC nodule patch format** of ``../shared/data/lidc_nodule_patches/`` (and of
  :func:`lunglib.datasets.extract.extract_lidc_patches`): ``image`` (N, 71, 71) int16 HU, ``mask``,
  ``malignancy`` 1-5 (the outlining reader's), ``patient_id``, ``nodule_id`` and more; files written
  by the extractor also hold 3D cubes (``image_3d``, ``mask_3d``), read with ``kind="3d"``;
* **MedMNIST NoduleMNIST3D** (MedMNIST v2; ``nodulemnist3d.npz`` at 28^3 and
  ``nodulemnist3d_64.npz`` at 64^3, the two sizes MedMNIST publishes for its 3D sets): the arrays
  ``train_images``, ``val_images``, ``test_images`` (N, S, S, S) uint8 0-255 and
  ``train_labels``, ``val_labels``, ``test_labels`` (N, 1), MedMNIST's official 7:1:2 split
  (1158 / 165 / 310 nodules). Label meaning, as MedMNIST documents it (``medmnist.INFO``): 0 =
  benign, 1 = malignant, made from the LIDC-IDRI malignancy ratings 1-2 (benign) and 4-5
  (malignant), rating 3 left out -- the same rule as :meth:`PatchSet.binary_labels`' defaults.
  The files hold no masks, no ratings and **no patient ids**: a patient-level (re-)split is
  impossible (:meth:`PatchSet.patient_groups` raises), and MedMNIST does not say that its own
  split keeps each patient's nodules together.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

_MEDMNIST_SPLITS = ("train", "val", "test")
MEDMNIST_LABELS = {0: "benign", 1: "malignant"}
"""NoduleMNIST3D label meaning (``medmnist.INFO["nodulemnist3d"]["label"]``)."""
MEDMNIST_RULE = (2, 4)
"""(benign_max, malignant_min) of the ratings MedMNIST made its labels from."""


@dataclass
class PatchSet:
    """A set of nodule patches.

    Attributes
    ----------
    images : ndarray, (N, H, W) or (N, D, H, W)
        HU (int16) for LIDC patch files; 0-255 intensities (uint8) for MedMNIST.
    masks : ndarray of uint8 or None
        1 inside the nodule outline.
    malignancy : ndarray of int8 or None
        1-5 rating (LIDC); None for MedMNIST.
    patient_ids : ndarray of str or None
        Patient of each patch; None when the file has none (MedMNIST).
    nodule_ids : ndarray of str or None
        Physical nodule of each patch (several readers' patches may share one).
    labels : ndarray of int8 or None
        Ready binary labels when the file has them (MedMNIST: 1 = malignant).
    split : ndarray of str or None
        The file's own split of each patch (MedMNIST: train / val / test).
    units : str
        ``"HU"`` or ``"uint8"``.
    extra : dict
        Every other array of the file, row-aligned (ratings, positions, UIDs, ...).
    source : str
        The file read.
    """

    images: np.ndarray
    masks: np.ndarray | None = None
    malignancy: np.ndarray | None = None
    patient_ids: np.ndarray | None = None
    nodule_ids: np.ndarray | None = None
    labels: np.ndarray | None = None
    split: np.ndarray | None = None
    units: str = "HU"
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (
            f"PatchSet(n={len(self)}, shape={self.images.shape[1:]}, units={self.units!r}, "
            f"patients={len(np.unique(self.patient_ids)) if self.patient_ids is not None else '?'}"
            f", source={Path(self.source).name!r})"
        )

    def subset(self, index: np.ndarray) -> PatchSet:
        """The patches at ``index`` (integer indices or a boolean mask)."""
        index = np.asarray(index)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return replace(
            self,
            images=self.images[index],
            masks=take(self.masks),
            malignancy=take(self.malignancy),
            patient_ids=take(self.patient_ids),
            nodule_ids=take(self.nodule_ids),
            labels=take(self.labels),
            split=take(self.split),
            extra={k: v[index] for k, v in self.extra.items()},
        )

    def patient_groups(self) -> np.ndarray:
        """The patient of every patch, for patient-level splits (``groups`` in scikit-learn).

        Raises
        ------
        ValueError
            When the file has no patient ids (MedMNIST NoduleMNIST3D): a patient-level split is
            impossible; use the file's own ``split`` instead, knowing that it is not documented
            to keep each patient's nodules on one side.
        """
        if self.patient_ids is None:
            own = sorted(set(self.split)) if self.split is not None else []
            raise ValueError(
                f"{self.source}: the patch set has no patient ids, so no patient-level split is "
                f"possible; use its own split (PatchSet.split: {', '.join(own) or 'none'}), "
                "or a patch set with patient ids (LIDC format, lunglib's extractor)"
            )
        return np.asarray(self.patient_ids)

    def binary_labels(
        self, benign_max: int = 2, malignant_min: int = 4
    ) -> tuple[PatchSet, np.ndarray]:
        """Patches with a benign/malignant label, and those labels (1 = malignant).

        Ratings <= ``benign_max`` are benign, >= ``malignant_min`` malignant; the ones in between
        (3, "indeterminate", with the defaults) are dropped. A file with ready labels and no
        ratings (MedMNIST) keeps all its patches; its labels were made with ratings <= 2 benign
        and >= 4 malignant, so other thresholds cannot be applied to it and raise ``ValueError``.
        """
        if self.malignancy is None:
            if self.labels is None:
                raise ValueError(f"{self.source}: the patch set has neither ratings nor labels")
            if (benign_max, malignant_min) != MEDMNIST_RULE:
                raise ValueError(
                    f"{self.source}: the labels are fixed (ratings <= {MEDMNIST_RULE[0]} benign, "
                    f">= {MEDMNIST_RULE[1]} malignant) and the file has no ratings, so "
                    f"benign_max={benign_max}, malignant_min={malignant_min} cannot be applied"
                )
            return self, self.labels.astype(np.int8)
        if benign_max >= malignant_min:
            raise ValueError(
                f"benign_max ({benign_max}) must be below malignant_min ({malignant_min})"
            )
        keep = (self.malignancy <= benign_max) | (self.malignancy >= malignant_min)
        subset = self.subset(keep)
        return subset, (subset.malignancy >= malignant_min).astype(np.int8)


def _load_lidc_format(data: np.lib.npyio.NpzFile, path: Path, kind: str) -> PatchSet:
    image_key, mask_key = ("image", "mask") if kind == "2d" else ("image_3d", "mask_3d")
    if image_key not in data:
        hint = " (only lunglib's extractor writes 3D cubes)" if kind == "3d" else ""
        raise ValueError(f"{path}: no '{image_key}' array{hint}; found {sorted(data.files)}")
    n = len(data[image_key])
    found = sorted(data.files)
    for key in ("malignancy", "patient_id"):
        if key not in data:
            raise ValueError(f"{path}: a nodule patch file needs '{key}'; found {found}")
        if len(data[key]) != n:
            raise ValueError(f"{path}: '{key}' has {len(data[key])} rows, '{image_key}' has {n}")
    known = {"image", "mask", "image_3d", "mask_3d", "malignancy", "patient_id", "nodule_id"}
    extra = {k: data[k] for k in data.files if k not in known}
    return PatchSet(
        images=data[image_key],
        masks=data[mask_key] if mask_key in data else None,
        malignancy=data["malignancy"].astype(np.int8),
        patient_ids=data["patient_id"].astype(str),
        nodule_ids=data["nodule_id"].astype(str) if "nodule_id" in data else None,
        units="HU",
        extra=extra,
        source=str(path),
    )


def _load_medmnist(data: np.lib.npyio.NpzFile, path: Path, split: str | None) -> PatchSet:
    found = sorted(data.files)
    splits = [split] if split else [s for s in _MEDMNIST_SPLITS if f"{s}_images" in data]
    images, labels, names = [], [], []
    for s in splits:
        if f"{s}_images" not in data or f"{s}_labels" not in data:
            raise ValueError(f"{path}: no '{s}_images'/'{s}_labels' arrays; found {found}")
        x, y = data[f"{s}_images"], data[f"{s}_labels"]
        if x.ndim != 4 or not x.shape[1] == x.shape[2] == x.shape[3]:
            raise ValueError(
                f"{path}: '{s}_images' has shape {x.shape}; a NoduleMNIST3D file holds cubes "
                "(N, S, S, S), S = 28 or 64 (2D MedMNIST sets are not nodule patch sets)"
            )
        if x.dtype != np.uint8:
            raise ValueError(f"{path}: '{s}_images' is {x.dtype}; MedMNIST stores uint8 0-255")
        if y.shape not in ((len(x), 1), (len(x),)):
            raise ValueError(
                f"{path}: '{s}_labels' has shape {y.shape}, expected ({len(x)}, 1) for "
                f"{len(x)} images"
            )
        y = y.reshape(-1)
        if y.size and not np.isin(y, list(MEDMNIST_LABELS)).all():
            raise ValueError(
                f"{path}: '{s}_labels' holds {sorted(np.unique(y).tolist())}; NoduleMNIST3D "
                "labels are 0 (benign) and 1 (malignant)"
            )
        images.append(x)
        labels.append(y.astype(np.int8))
        names.append(np.full(len(x), s))
    sides = sorted({x.shape[1] for x in images})
    if len(sides) > 1:
        raise ValueError(f"{path}: the splits hold cubes of different sizes {sides}")
    return PatchSet(
        images=np.concatenate(images),
        labels=np.concatenate(labels),
        split=np.concatenate(names),
        units="uint8",
        source=str(path),
    )


def load_patch_set(path: str | Path, kind: str = "2d", split: str | None = None) -> PatchSet:
    """Read a nodule patch npz file (LIDC patch format, or MedMNIST NoduleMNIST3D 28^3 / 64^3).

    Parameters
    ----------
    path : path-like
        The ``.npz`` file, or a folder holding ``dev.npz``.
    kind : {"2d", "3d"}
        LIDC patch files: the 2D patches or the extractor's 3D cubes.
    split : {"train", "val", "test"} or None
        MedMNIST files: read one of the official splits; all three by default (their name per
        patch is in ``PatchSet.split``). MedMNIST files have no patient ids, see the module notes.

    Returns
    -------
    PatchSet
    """
    path = Path(path)
    if path.is_dir():
        path = path / "dev.npz"
    if not path.is_file():
        raise ValueError(f"patch set {path} does not exist; give the .npz file")
    if kind not in ("2d", "3d"):
        raise ValueError(f"kind must be '2d' or '3d', got {kind!r}")
    if split is not None and split not in _MEDMNIST_SPLITS:
        raise ValueError(f"split must be one of {_MEDMNIST_SPLITS} or None, got {split!r}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable npz file ({exc})") from exc
    with data:
        if any(k.endswith("_images") for k in data.files):
            return _load_medmnist(data, path, split)
        return _load_lidc_format(data, path, kind)
