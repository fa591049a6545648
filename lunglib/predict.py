"""Use a finished run on a new scan: cancer probability, nodule candidates, masks and a report.

``python -m lunglib predict <scan_dir> --model <run folder>`` calls :func:`predict_scan`. The run
folder holds the ``classifier`` bundle written by notebook 04 and the ``segmenter`` bundle written
by notebook 06 (see :mod:`lunglib.models`); either may be missing, and the prediction then says
what it could not do instead of failing. On a real scan the candidates are re-ranked by the
real-data false-positive reducer that lunglib ships (:func:`rerank_scan_candidates`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lunglib.batch import run_batch
from lunglib.inference import (
    candidate_mask,
    context_step_for,
    find_candidates,
    predict_volume,
    slice_window,
)
from lunglib.io.atomic import write_text_atomic
from lunglib.io.dicom import CTScan, load_scan
from lunglib.io.export import save_dicom_seg, save_nifti
from lunglib.models.bundle import bundle_paths, load_bundle
from lunglib.preprocess import prepare, segment_lungs, window
from lunglib.settings import Settings


@dataclass
class Prediction:
    """What :func:`predict_scan` found for one scan (no patient identifiers)."""

    patient_key: str
    cancer_probability: float | None
    threshold: float | None
    candidates: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ranking: str = "segmenter"
    """What orders ``candidates``: ``"segmenter"`` (its peak probability) or
    ``"nodule_reducer"`` (the shipped reducer's score; the segmenter's rank is in
    ``segmenter_rank``)."""

    def summary(self) -> dict[str, object]:
        return {
            "patient_key": self.patient_key,
            "cancer_probability": self.cancer_probability,
            "threshold": self.threshold,
            "n_candidates": int(len(self.candidates)),
            "ranking": self.ranking,
            "files": {k: str(v) for k, v in self.files.items()},
            "notes": self.notes,
            "warnings": self.warnings,
        }


def domain_warnings(scan: CTScan, trained_on: dict[str, object]) -> list[str]:
    """Why a model's answer on ``scan`` should not be trusted, judged by its training data.

    ``trained_on`` maps a bundle name to the ``dataset`` its bundle records (None when the bundle
    predates that entry). A model trained on lunglib's synthetic phantoms has never seen real
    anatomy, scanners or noise: on a real scan it answers confidently and meaninglessly (vessels at
    the hilum as nodules of probability 1.0). The reverse, a real-data model on a phantom, is
    flagged as well.
    """
    from lunglib.synthetic import is_synthetic_scan

    synthetic_scan = is_synthetic_scan(scan.metadata)
    warnings = []
    for name, dataset in trained_on.items():
        if dataset is None:
            warnings.append(f"the {name} bundle does not record what data it was trained on; "
                            "its outputs may not apply to this scan")
        elif dataset == "synthetic" and not synthetic_scan:
            warnings.append(f"the {name} was trained on lunglib's synthetic phantom cohort, and "
                            "this is a real scan: its outputs are not meaningful on real CT "
                            "(use a model trained on real scans)")
        elif dataset != "synthetic" and synthetic_scan:
            warnings.append(f"the {name} was trained on real CT ({dataset}), and this is one of "
                            "lunglib's synthetic phantoms: its outputs say little about either")
    return warnings


def _has_bundle(folder: Path, name: str) -> bool:
    return all(p.is_file() for p in bundle_paths(folder, name))


def classify_scan(scan: CTScan, model, info: dict) -> float:
    """Cancer probability of a whole scan from a volume classifier bundle."""
    from lunglib.training import predict_proba

    settings = Settings(size=int(info["size"]), n_slices=int(info["n_slices"]))
    prepared = prepare(scan, settings)
    x = prepared.image[None, ..., None].astype(np.float32)
    if "zero_center_mean" in info:
        x = x - np.float32(info["zero_center_mean"])
    return float(predict_proba(model, x)[0])


def segment_scan(scan: CTScan, model, info: dict, lung_mask: np.ndarray) -> np.ndarray:
    """Nodule probability per voxel of the scan from a per-slice 2D (or 2.5D) U-Net bundle.

    ``info["context"]`` (default 0) is the number of neighbouring slices on each side that the
    model takes as extra input channels, ``info["context_mm"]`` (optional) their distance in mm:
    the slice step is chosen from this scan's spacing, as in training.
    """
    from lunglib.models.unet import resize_unet

    lo, hi = info.get("window", (-1000.0, 400.0))
    image = window(scan.hu, lo, hi)
    whole = slice_window(lung_mask, multiple=2 ** int(info["depth"]))
    return predict_volume(resize_unet(model, whole), image, lung_mask, whole,
                          context=int(info.get("context", 0)),
                          context_step=context_step_for(scan.spacing[0], info.get("context_mm")))


# no dataset name here: prediction.json must not contain a patient id's prefix ("LIDC-IDRI-...")
REDUCER_NOTE = ("candidates are ranked by the nodule_reducer, a model trained on real CT "
                "(reducer_score, highest first); the segmenter's own rank is kept in "
                "segmenter_rank")


def rerank_scan_candidates(
    scan: CTScan, candidates: pd.DataFrame
) -> tuple[pd.DataFrame, str, str | None]:
    """Re-rank a real scan's candidates by the shipped ``nodule_reducer``, when that applies.

    Returns ``(candidates, ranking, note)``: ``ranking`` is ``"nodule_reducer"`` when the table
    was re-ranked (:func:`lunglib.inference.rerank_candidates`: columns ``segmenter_rank`` and
    ``reducer_score`` added) and ``"segmenter"`` when it is returned as it came -- no
    candidates, a synthetic phantom (the segmenter's own domain: the reducer has never seen
    phantoms), or no usable reducer bundle. ``note`` says what was done or why not (None when
    there is nothing to say).
    """
    from lunglib.synthetic import is_synthetic_scan

    if len(candidates) == 0 or is_synthetic_scan(scan.metadata):
        return candidates, "segmenter", None
    from lunglib.inference import rerank_candidates
    from lunglib.models.bundle import BundleFormatError
    from lunglib.models.pretrained import load_pretrained

    try:
        model, info = load_pretrained("nodule_reducer")
    except (FileNotFoundError, BundleFormatError) as exc:
        return candidates, "segmenter", ("candidates are ranked by the segmenter only: the "
                                         "shipped false-positive reducer is missing or "
                                         f"unreadable ({exc})")
    ranked = rerank_candidates(scan, candidates, model, info)
    return ranked, "nodule_reducer", REDUCER_NOTE


def predict_scan(
    scan_path: str | os.PathLike,
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    series_uid: str | None = None,
    report: bool = True,
) -> Prediction:
    """Run the run's models on one DICOM scan and write masks and a report.

    Parameters
    ----------
    scan_path : path-like
        A folder with one patient's DICOM files (any layout that :func:`lunglib.load_scan` reads),
        or one NIfTI, NRRD or MetaImage volume (then no DICOM SEG is written).
    model_dir : path-like
        A run folder (or ``output_dir`` of notebooks 04 and 06) with the model bundles.
    output_dir : path-like
        Receives ``lungs.nii.gz``, ``nodules.nii.gz``, ``nodules_seg.dcm`` (a DICOM SEG over the
        source series, its patient module the pseudonym), ``candidates.csv``,
        ``prediction.json`` and ``report.png``. On a real (not synthetic) scan the candidates
        are re-ranked by the shipped ``nodule_reducer`` (:func:`rerank_scan_candidates`);
        ``prediction.json``'s ``ranking`` says which order ``candidates.csv`` has.
    series_uid : str, optional
        Which series to read when the folder holds several.
    report : bool, default True
        Draw the one-page PNG report.
    """
    model_dir, out = Path(model_dir), Path(output_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    scan = load_scan(scan_path, series_uid=series_uid)
    notes: list[str] = []
    trained_on: dict[str, object] = {}
    probability = threshold = None
    if _has_bundle(model_dir, "classifier"):
        model, info = load_bundle(model_dir, "classifier")
        trained_on["classifier"] = info.get("dataset")
        if len(model.input_shape) == 5:
            probability = classify_scan(scan, model, info)
            threshold = info.get("threshold")
        else:
            notes.append("the classifier was trained on 2D nodule patches, not whole scans: "
                         "no scan-level probability")
    else:
        notes.append(f"no classifier bundle in {model_dir} (notebook 04 writes it)")

    lung = segment_lungs(scan.hu, scan.spacing, scan.direction)
    files = {"lungs": save_nifti(lung, scan, out / "lungs.nii.gz")}
    candidates = pd.DataFrame()
    ranking = "segmenter"
    if _has_bundle(model_dir, "segmenter") and lung.any():
        model, info = load_bundle(model_dir, "segmenter")
        trained_on["segmenter"] = info.get("dataset")
        probability_map = segment_scan(scan, model, info, lung)
        seg_threshold = float(info.get("threshold", 0.5))
        min_volume = float(info.get("min_volume_mm3", 0.0))
        probability_map = probability_map * (lung > 0)
        nodules = candidate_mask(probability_map, scan.spacing, seg_threshold,
                                 min_volume).astype(np.uint8)
        candidates = find_candidates(probability_map, scan=scan, threshold=seg_threshold,
                                     min_volume_mm3=min_volume)
        candidates, ranking, ranking_note = rerank_scan_candidates(scan, candidates)
        if ranking_note:
            notes.append(ranking_note)
        files["nodules"] = save_nifti(nodules, scan, out / "nodules.nii.gz")
        if nodules.any() and scan.metadata.get("format") is None:  # DICOM in, so SEG out
            files["dicom_seg"] = save_dicom_seg(nodules, scan, out / "nodules_seg.dcm",
                                                source=scan_path,
                                                segment_labels=["nodule candidates"])
        elif nodules.any():
            notes.append(f"no DICOM SEG: the scan was read from a {scan.metadata['format']} "
                         "file, not DICOM (nodules.nii.gz holds the mask)")
    elif not lung.any():
        notes.append("no lungs found in the scan: nothing to segment")
    else:
        notes.append(f"no segmenter bundle in {model_dir} (notebook 06 writes it)")
    candidates_path = out / "candidates.csv"
    candidates.to_csv(candidates_path, index=False)
    files["candidates"] = candidates_path
    result = Prediction(scan.patient_key, probability, threshold, candidates, files, notes,
                        domain_warnings(scan, trained_on), ranking)
    if report:
        from lunglib.viz.viewer import prediction_report

        files["report"] = prediction_report(scan, lung, candidates, result.summary(),
                                            out / "report.png")
    write_text_atomic(out / "prediction.json", json.dumps(result.summary(), indent=2))
    return result


def predict_batch(
    folder: str | os.PathLike,
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    num_parts: int = 1,
    part_id: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """:func:`predict_scan` on every scan of a folder, one output folder each, surviving failures
    (:func:`lunglib.batch.run_batch`).

    Parameters
    ----------
    folder : path-like
        Holds the scans (:func:`lunglib.batch.batch_items`): DICOM folders and/or volume files.
    model_dir : path-like
        As for :func:`predict_scan`.
    output_dir : path-like
        Receives ``<scan name>/`` per scan (the files of :func:`predict_scan`) and the summary
        CSV: ``summary.csv``, or ``summary_part<K>of<N>.csv`` for one part of a split run.
    num_parts, part_id : int
        Split a long run across jobs: this call does the items ``part_id, part_id + num_parts,
        ...`` of the sorted list (``0 <= part_id < num_parts``), so N jobs with ids 0..N-1 do
        every scan once.
    progress : bool, default True
        A tqdm progress bar on stderr.

    Returns
    -------
    DataFrame
        One row per scan of this part: ``scan`` (its name in ``folder``, as the user named it),
        ``patient_key`` (the pseudonym), ``status`` (``ok`` or ``failed``), ``reason`` (why it
        failed, naming the file), ``cancer_probability``, ``n_candidates``, ``warnings``.
    """
    def work(item: Path, out: Path) -> dict[str, object]:
        result = predict_scan(item, model_dir, out)
        return {"patient_key": result.patient_key,
                "cancer_probability": result.cancer_probability,
                "n_candidates": len(result.candidates), "warnings": " | ".join(result.warnings)}

    return run_batch(folder, output_dir, work, ["cancer_probability", "n_candidates", "warnings"],
                     num_parts, part_id, progress, desc="predicting")
