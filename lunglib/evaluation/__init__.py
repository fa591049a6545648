"""Evaluation: patient-level splits, classification and segmentation metrics, choices on validation.

:mod:`~lunglib.evaluation.splits` keeps every patient on one side of a split;
:mod:`~lunglib.evaluation.classification` scores probabilities (thresholds, bootstrap CIs);
:mod:`~lunglib.evaluation.segmentation` scores masks (Dice, IoU, HD95, surface Dice, per nodule);
:mod:`~lunglib.evaluation.detection` scores detected candidates against nodule centres (LUNA16's
FROC and CPM);
:mod:`~lunglib.evaluation.cases` picks the cases a report shows and names them pseudonymously.
"""

from lunglib.evaluation.cases import (
    axial_gallery,
    largest_section,
    patient_codes,
    pick_cases,
    strongest_slice,
)
from lunglib.evaluation.classification import (
    THRESHOLD_RULES,
    BinaryEvaluation,
    BootstrapInterval,
    aggregate_by_group,
    bootstrap_ci,
    bootstrap_interval,
    calibration_table,
    choose_threshold,
    classification_metrics,
    confusion_table,
    evaluate_binary,
    paired_bootstrap_ci,
)
from lunglib.evaluation.detection import (
    FROC,
    LUNA16_FP_RATES,
    froc,
    match_candidates,
    nodule_centres,
)
from lunglib.evaluation.segmentation import (
    BINARIZATION_THRESHOLDS,
    DEFAULT_NSD_TOLERANCE_MM,
    binarize,
    central_component,
    choose_binarization,
    choose_postprocessing,
    dice,
    dice_global,
    error_breakdown,
    hausdorff95,
    iou,
    iou_global,
    score_cases,
    score_nodules,
    surface_dice,
    surface_distances,
)
from lunglib.evaluation.selection import VariantChoice, choose_variant
from lunglib.evaluation.splits import (
    Split,
    SplitOverlapError,
    load_split,
    patient_kfold,
    patient_shuffle_split,
    patient_split,
)

__all__ = [
    "FROC",
    "LUNA16_FP_RATES",
    "froc",
    "match_candidates",
    "nodule_centres",
    "BINARIZATION_THRESHOLDS",
    "DEFAULT_NSD_TOLERANCE_MM",
    "THRESHOLD_RULES",
    "VariantChoice",
    "BinaryEvaluation",
    "BootstrapInterval",
    "Split",
    "SplitOverlapError",
    "aggregate_by_group",
    "axial_gallery",
    "binarize",
    "bootstrap_ci",
    "bootstrap_interval",
    "calibration_table",
    "central_component",
    "choose_binarization",
    "choose_postprocessing",
    "choose_threshold",
    "choose_variant",
    "classification_metrics",
    "confusion_table",
    "dice",
    "dice_global",
    "error_breakdown",
    "evaluate_binary",
    "hausdorff95",
    "iou",
    "iou_global",
    "largest_section",
    "load_split",
    "paired_bootstrap_ci",
    "patient_codes",
    "patient_kfold",
    "patient_shuffle_split",
    "patient_split",
    "pick_cases",
    "score_cases",
    "score_nodules",
    "strongest_slice",
    "surface_dice",
    "surface_distances",
]
