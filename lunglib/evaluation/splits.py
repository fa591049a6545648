"""Patient-level train/validation/test splits and k-fold, stratified and seeded.

Samples (volumes, slices, patches) are never split directly: their *patients* are. A patient's
samples all land in one split, which :meth:`Split.assert_disjoint` checks every time a
:class:`Split` is made or loaded. Stratification uses one label per patient (the largest of the
patient's sample labels, so a patient with any malignant sample counts as malignant).

Two ways to draw a train/validation/test split: :func:`patient_split` stratifies by a per-patient
label; :func:`patient_shuffle_split` draws patients unstratified with scikit-learn's
``GroupShuffleSplit`` (the split of the LIDC segmentation recipe, which has no label to stratify).

Save a split with :meth:`Split.save` and read it back with :func:`load_split` so every notebook
trains, tunes and evaluates on the same patients.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import (
    GroupShuffleSplit,
    StratifiedGroupKFold,
    train_test_split,
)

from lunglib.io.atomic import write_text_atomic


class SplitOverlapError(ValueError):
    """A patient appears in more than one split."""


@dataclass(frozen=True)
class Split:
    """Patient ids of the train, validation and test splits (no patient in two of them)."""

    train: list[str]
    val: list[str]
    test: list[str]
    seed: int | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            object.__setattr__(self, name, sorted(str(p) for p in getattr(self, name)))
        self.assert_disjoint()

    def assert_disjoint(self) -> None:
        """Raise :class:`SplitOverlapError` when a patient is in two splits (or twice in one)."""
        parts = {"train": self.train, "val": self.val, "test": self.test}
        for name, ids in parts.items():
            if len(set(ids)) != len(ids):
                raise SplitOverlapError(f"the {name} split lists a patient more than once")
        names = list(parts)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = set(parts[a]) & set(parts[b])
                if shared:
                    raise SplitOverlapError(
                        f"{len(shared)} patient(s) are in both the {a} and the {b} split, e.g. "
                        f"{sorted(shared)[0]}; split patients, not samples"
                    )

    def part_of(self, patient_ids: Sequence) -> np.ndarray:
        """Per sample patient id, its split: ``"train"``, ``"val"``, ``"test"`` or ``""``."""
        lookup = {p: "train" for p in self.train}
        lookup.update({p: "val" for p in self.val})
        lookup.update({p: "test" for p in self.test})
        return np.array([lookup.get(str(p), "") for p in patient_ids], dtype=object)

    def masks(self, patient_ids: Sequence) -> dict[str, np.ndarray]:
        """Boolean sample masks ``{"train", "val", "test"}`` for per-sample patient ids."""
        part = self.part_of(patient_ids)
        return {name: part == name for name in ("train", "val", "test")}

    def indices(self, patient_ids: Sequence) -> dict[str, np.ndarray]:
        """Sorted integer sample indices ``{"train", "val", "test"}`` for per-sample patient ids."""
        return {name: np.flatnonzero(mask) for name, mask in self.masks(patient_ids).items()}

    def subset(self, patient_ids: Sequence) -> Split:
        """The same split restricted to ``patient_ids``: each patient keeps its part.

        For a notebook that works on fewer patients than the one that drew the split (e.g.
        segmentation on the first 24 patients of a cohort split once for classification):
        train, validation and test stay disjoint across notebooks. Raises ``ValueError`` when
        a patient is in none of the parts, since the split cannot say where it belongs.
        ``meta["subset_of"]`` records the number of patients of the whole split.
        """
        wanted = {str(p) for p in patient_ids}
        known = set(self.train) | set(self.val) | set(self.test)
        unknown = wanted - known
        if unknown:
            raise ValueError(f"{len(unknown)} of the {len(wanted)} patients are in no part of "
                             "the split; draw a new split for them")
        return Split(
            train=[p for p in self.train if p in wanted],
            val=[p for p in self.val if p in wanted],
            test=[p for p in self.test if p in wanted],
            seed=self.seed,
            meta={**self.meta, "subset_of": len(known)},
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split as JSON (atomically) and return the path."""
        return write_text_atomic(path, json.dumps(asdict(self), indent=1))


def load_split(path: str | os.PathLike) -> Split:
    """Read a split written by :meth:`Split.save`; the overlap check runs again."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"split file {path} does not exist; make one with patient_split(...)")
    try:
        data = json.loads(path.read_text())
        return Split(**data)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"split file {path} is not a saved Split: {err}") from err


def _patient_table(patient_ids: Sequence, labels: Sequence) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray([str(p) for p in patient_ids])
    y = np.asarray(labels)
    if ids.shape[0] != y.shape[0]:
        raise ValueError(f"{ids.shape[0]} patient ids but {y.shape[0]} labels; give one per sample")
    if ids.size == 0:
        raise ValueError("no samples to split")
    patients = np.unique(ids)
    patient_label = np.array([y[ids == p].max() for p in patients])
    return patients, patient_label


def _take(patients, labels, fraction, seed, what):
    """Split ``fraction`` of the patients off, stratified by label when every class allows it."""
    n = len(patients)
    n_take = int(round(fraction * n))
    if fraction > 0:
        n_take = max(n_take, 1)
    if n_take == 0:
        return patients, labels, patients[:0]
    if n_take >= n:
        raise ValueError(
            f"{what} fraction {fraction} leaves no training patients out of {n}; lower it"
        )
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and len(counts) <= n_take <= n - len(counts) else None
    keep, taken, keep_y, _ = train_test_split(
        patients, labels, test_size=n_take, random_state=seed, stratify=stratify
    )
    return keep, keep_y, taken


def patient_split(
    patient_ids: Sequence,
    labels: Sequence,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
) -> Split:
    """Split patients into train/validation/test, stratified by patient label, reproducible.

    Parameters
    ----------
    patient_ids
        One id per sample; repeated ids (several patches of one patient) stay together.
    labels
        One label per sample.
    val_fraction, test_fraction
        Fractions of *patients* in the validation and test splits (0 allowed).
    seed
        Random seed; the same inputs and seed give the same split.

    Returns
    -------
    Split
        With patient ids; use :meth:`Split.masks` to select samples.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training "
            "patients; keep the sum below 1"
        )
    patients, patient_label = _patient_table(patient_ids, labels)
    rest, rest_y, test = _take(patients, patient_label, test_fraction, seed, "test")
    # the validation fraction is of all patients, so rescale it to what is left
    val_of_rest = val_fraction / (1.0 - test_fraction) if val_fraction > 0 else 0.0
    train, _, val = _take(rest, rest_y, val_of_rest, seed + 1, "validation")
    return Split(
        train=list(train),
        val=list(val),
        test=list(test),
        seed=seed,
        meta={"val_fraction": val_fraction, "test_fraction": test_fraction},
    )


def patient_shuffle_split(
    patient_ids: Sequence,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
) -> Split:
    """Split patients into train/validation/test at random, without stratification.

    Two draws of scikit-learn's ``GroupShuffleSplit`` over the sorted distinct patient ids: first
    ``ceil(test_fraction * n)`` of the ``n`` patients go to test (``random_state=seed``), then
    ``ceil(val_fraction / (1 - test_fraction) * m)`` of the ``m`` remaining ones to validation
    (``random_state=seed + 1``). Use it where no per-patient label exists to stratify by (e.g.
    segmentation); :func:`patient_split` draws a different split from the same seed (stratified,
    and rounding the split sizes instead of rounding them up).

    Parameters
    ----------
    patient_ids
        One id per sample; repeated ids (several patches of one patient) stay together.
    val_fraction, test_fraction
        Fractions of *patients* in the validation and test splits, each in (0, 1), summing to
        less than 1.
    seed
        Random seed; the same ids and seed give the same split.

    Returns
    -------
    Split
        With patient ids; :meth:`Split.indices` gives the sample indices.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no training "
            "patients; keep the sum below 1"
        )
    ids = np.asarray([str(p) for p in patient_ids])
    if ids.size == 0:
        raise ValueError("no samples to split")
    rows = np.arange(len(ids))
    outer = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    rest, test = next(outer.split(rows, groups=ids))
    # the validation fraction is of all patients, so rescale it to what is left
    inner = GroupShuffleSplit(
        n_splits=1, test_size=val_fraction / (1.0 - test_fraction), random_state=seed + 1
    )
    train, val = next(inner.split(rest, groups=ids[rest]))
    return Split(
        train=list(np.unique(ids[rest[train]])),
        val=list(np.unique(ids[rest[val]])),
        test=list(np.unique(ids[test])),
        seed=seed,
        meta={"val_fraction": val_fraction, "test_fraction": test_fraction,
              "method": "GroupShuffleSplit"},
    )


def patient_kfold(
    patient_ids: Sequence, labels: Sequence, k: int = 5, seed: int = 42
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold over patients (``StratifiedGroupKFold``), as sample index arrays.

    Returns
    -------
    list of (train_index, test_index)
        ``k`` pairs of integer sample indices; no patient has samples on both sides of a pair,
        and every sample is in exactly one test fold.
    """
    ids = np.asarray([str(p) for p in patient_ids])
    y = np.asarray(labels)
    n_patients = len(np.unique(ids))
    if k < 2 or k > n_patients:
        raise ValueError(f"k must be between 2 and the number of patients ({n_patients}), got {k}")
    if ids.shape[0] != y.shape[0]:
        raise ValueError(f"{ids.shape[0]} patient ids but {y.shape[0]} labels; give one per sample")
    folds = []
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(np.zeros(len(y)), y, groups=ids):
        shared = set(ids[train_idx]) & set(ids[test_idx])
        if shared:  # StratifiedGroupKFold guarantees this; keep the check next to the data
            raise SplitOverlapError(f"{len(shared)} patient(s) on both sides of a fold")
        folds.append((train_idx, test_idx))
    return folds
