"""Choosing among a model's variants on validation patients: one post-processing each, then one.

A recipe often ends with several probability maps of the same validation patients -- a first
and a second training round, with and without test-time augmentation, one model or an ensemble.
:func:`choose_variant` gives each variant its own post-processing (threshold, minimum candidate
volume, minimum peak probability; :func:`lunglib.evaluation.choose_postprocessing`) and then
picks the variant whose best post-processing scores highest. Only validation patients go in:
the test patients are scored afterwards, once, with what was chosen here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lunglib.evaluation.segmentation import choose_postprocessing

VARIANT_COLUMNS = ["variant", "threshold", "min_volume_mm3", "min_peak", "val_dice"]


@dataclass(frozen=True)
class VariantChoice:
    """The validation choice among variants.

    Attributes
    ----------
    table : DataFrame
        One row per variant, in the order given: ``variant, threshold, min_volume_mm3,
        min_peak, val_dice`` (its best post-processing and that post-processing's mean
        whole-scan validation Dice).
    chosen : str
        The variant with the highest ``val_dice``; a tie goes to the variant given first.
    """

    table: pd.DataFrame
    chosen: str

    def postprocessing(self, variant: str | None = None) -> dict[str, float]:
        """``threshold``, ``min_volume_mm3`` and ``min_peak`` of a variant (default the chosen
        one), as keyword arguments of :func:`lunglib.inference.candidate_mask`."""
        row = self.table.set_index("variant").loc[self.chosen if variant is None else variant]
        return {"threshold": float(row.threshold), "min_volume_mm3": float(row.min_volume_mm3),
                "min_peak": float(row.min_peak)}


def choose_variant(
    variants: Mapping[str, Sequence[np.ndarray]],
    truths: Sequence[np.ndarray],
    spacings: Sequence[Sequence[float]],
    thresholds: Sequence[float] = (0.3, 0.5, 0.7, 0.9),
    min_volumes_mm3: Sequence[float] = (0.0, 20.0, 50.0, 100.0),
    min_peaks: Sequence[float] = (0.0,),
) -> VariantChoice:
    """Each variant's best post-processing on the validation patients, and the best variant.

    Parameters
    ----------
    variants : mapping of str to sequence of ndarray (z, y, x)
        Per variant name, the probability maps of the validation patients, in the order of
        ``truths``.
    truths : sequence of ndarray (z, y, x)
        The validation patients' ground-truth masks (nonzero = nodule).
    spacings : sequence of spacing tuples
        Voxel size (z, y, x) in mm of each validation patient.
    thresholds, min_volumes_mm3, min_peaks : sequence of float
        The post-processing grid searched for every variant
        (:func:`lunglib.evaluation.choose_postprocessing`).

    Returns
    -------
    VariantChoice
    """
    if not variants:
        raise ValueError("no variant to choose from")
    rows = []
    for name, probs in variants.items():
        best = choose_postprocessing(probs, truths, spacings, thresholds=thresholds,
                                     min_volumes_mm3=min_volumes_mm3, min_peaks=min_peaks).iloc[0]
        rows.append((name, float(best.threshold), float(best.min_volume_mm3),
                     float(best.min_peak), float(best.dice)))
    table = pd.DataFrame(rows, columns=VARIANT_COLUMNS)
    chosen = table.sort_values("val_dice", ascending=False, kind="stable").variant.iloc[0]
    return VariantChoice(table=table, chosen=str(chosen))
