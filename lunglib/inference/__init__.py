"""Inference: a trained model over a whole scan (sliding windows) and nodule candidates from it."""

from lunglib.inference.segment import (
    CANDIDATE_COLUMNS,
    candidate_mask,
    context_step_for,
    find_candidates,
    kept_components,
    label_candidates,
    lung_box,
    predict_volume,
    slice_window,
)

__all__ = [
    "CANDIDATE_COLUMNS",
    "candidate_mask",
    "context_step_for",
    "find_candidates",
    "kept_components",
    "label_candidates",
    "lung_box",
    "predict_volume",
    "slice_window",
]
