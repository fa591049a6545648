"""Inference: a trained model over a whole scan (sliding windows) and nodule candidates from it.

:mod:`~lunglib.inference.sliding` runs a patch model over the lungs of a scan into a probability
map; :mod:`~lunglib.inference.candidates` turns a probability map into nodule candidates (a
table or a mask); :mod:`~lunglib.inference.rerank` re-orders the candidates by a
false-positive reducer's score on a crop around each.
"""

from lunglib.inference.candidates import (
    CANDIDATE_COLUMNS,
    candidate_mask,
    find_candidates,
    kept_components,
    label_candidates,
)
from lunglib.inference.rerank import RERANK_COLUMNS, reducer_scores, rerank_candidates
from lunglib.inference.sliding import context_step_for, lung_box, predict_volume, slice_window

__all__ = [
    "CANDIDATE_COLUMNS",
    "RERANK_COLUMNS",
    "candidate_mask",
    "context_step_for",
    "find_candidates",
    "kept_components",
    "label_candidates",
    "lung_box",
    "predict_volume",
    "reducer_scores",
    "rerank_candidates",
    "slice_window",
]
