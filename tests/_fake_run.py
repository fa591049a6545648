"""A small run folder with realistic, mutually consistent contents, without running the course.

Predictions are drawn from a seeded generator and every number of ``metrics.json`` is computed
from them by :mod:`lunglib.evaluation` (as notebook 07 does), so the report's figures and its
table describe the same data. The gallery and failure arrays are small real images (a lung-window
CT slice with a nodule, its mask, a shifted prediction, a Grad-CAM blob).
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss

from lunglib.evaluation import dice, evaluate_binary
from lunglib.report.runinfo import collect_run_info, write_run_info

NOTEBOOK_NAMES = ("01_explore", "02_preprocess", "03_augment", "04_train_cnn", "05_tune",
                  "06_segment", "07_evaluate")
SECONDS = (21.4, 9.8, 14.1, 74.6, 61.0, 88.3, 30.2)
MACHINE = {"platform": "Linux-6.1-x86_64-with-glibc2.36", "cpu": "AMD EPYC 7B13", "cores": 2,
           "gpus": [], "reference_seconds": 0.0831}


def _predictions(rng: np.random.Generator, n_test: int, n_val: int,
                 first_patient: str | None) -> pd.DataFrame:
    """One or two samples per patient; healthy patients' probabilities stay low, so that
    specificity is 1 on every resample (a degenerate interval, as happens on small test sets)."""
    rows = []
    patient = 0
    for split, n_patients in (("val", n_val), ("test", n_test)):
        for k in range(n_patients):
            patient += 1
            label = int(k % 2 == 0)
            code = first_patient if (first_patient and patient == 1) else f"P{patient:03d}"
            for _ in range(1 + int(rng.random() < 0.4)):
                p = rng.beta(3, 2) if label else rng.uniform(0.02, 0.4)
                rows.append({"split": split, "patient": code, "y_true": label,
                             "probability": round(float(p), 4)})
    return pd.DataFrame(rows)


def _disk(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _ct_slice(rng: np.random.Generator, nodule: np.ndarray, size: int) -> np.ndarray:
    """An axial slice in HU: air outside, soft-tissue body wall, two lungs, one nodule."""
    image = np.full((size, size), -1000.0)
    body = _disk((size, size), (size / 2, size / 2), size * 0.46)
    image[body] = 40.0
    for side in (0.3, 0.7):
        image[_disk((size, size), (size / 2, size * side), size * 0.17)] = -850.0
    image[nodule] = 20.0
    return image + rng.normal(0, 25, image.shape)


def _gallery(rng: np.random.Generator, size: int = 48) -> dict[str, np.ndarray]:
    images, truths, preds, scores = [], [], [], []
    for shift, radius in ((0.5, 4.0), (2.0, 3.0), (6.0, 2.5)):
        truth = _disk((size, size), (size / 2, size * 0.3), radius)
        pred = _disk((size, size), (size / 2 + shift, size * 0.3 + shift / 2), radius)
        images.append(_ct_slice(rng, truth, size))
        truths.append(truth)
        preds.append(pred)
        scores.append(dice(truth, pred))
    return {"image": np.stack(images).astype(np.float32), "truth": np.stack(truths),
            "prediction": np.stack(preds), "dice": np.asarray(scores),
            "label": np.asarray(["best", "median", "worst"])}


def _failures(rng: np.random.Generator, size: int = 40) -> dict[str, np.ndarray]:
    images, cams, truths = [], [], []
    yy, xx = np.mgrid[:size, :size]
    for centre, focus in (((18, 12), (19, 13)), (None, (13, 27))):
        truth = _disk((size, size), centre, 2.5) if centre else np.zeros((size, size), bool)
        image = np.clip((_ct_slice(rng, truth, size) + 1000) / 1400, 0, 1)
        cam = np.exp(-((yy - focus[0]) ** 2 + (xx - focus[1]) ** 2) / 40.0)
        images.append(image)
        cams.append(cam / cam.max())
        truths.append(truth)
    return {"image": np.stack(images).astype(np.float32), "cam": np.stack(cams),
            "truth": np.stack(truths), "kind": np.asarray(["false negative", "false positive"]),
            "probability": np.asarray([0.21, 0.64])}


def _search_results(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for trial, (layers, filters) in enumerate(((1, 8), (1, 16), (2, 8), (2, 16))):
        rows.append({"search": "grid", "trial": trial, "layers": layers, "filters": filters,
                     "learning_rate": 1e-3, "score": round(float(rng.uniform(0.6, 0.85)), 4),
                     "seconds": round(float(rng.uniform(5, 12)), 1)})
    for trial in range(3):
        rows.append({"search": "random", "trial": trial, "layers": int(rng.integers(1, 4)),
                     "filters": int(rng.choice([8, 16, 32])),
                     "learning_rate": float(10 ** rng.uniform(-4, -2)),
                     "score": round(float(rng.uniform(0.6, 0.9)), 4),
                     "seconds": round(float(rng.uniform(5, 12)), 1)})
    return pd.DataFrame(rows)


def _notebook(path: Path, title: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('done')", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="done\n")]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"), cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


def write_fake_run(folder: Path, seed: int = 2, first_patient: str | None = None,
                   parameters: dict | None = None, ci_degenerate_list: bool = True,
                   notebooks: int = 7) -> Path:
    """Write a complete run folder (every contract file) into ``folder``; returns it.

    Parameters
    ----------
    first_patient : str, optional
        The ``patient`` code of the first patient in predictions.csv (put a real-looking id here
        to check that none reaches the page).
    parameters : dict, optional
        The papermill parameters recorded in run.json.
    ci_degenerate_list : bool
        Write ``classification.ci_degenerate`` (newer metrics.json) or leave it out (older).
    notebooks : int
        How many executed notebooks (01..07) to put beside the results.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    predictions = _predictions(rng, n_test=16, n_val=16, first_patient=first_patient)
    predictions.to_csv(folder / "predictions.csv", index=False)
    val, test = (predictions[predictions.split == s] for s in ("val", "test"))
    evaluation = evaluate_binary(val.y_true, val.probability, test.y_true, test.probability,
                                 groups_test=test.patient, n_boot=100, seed=seed)
    classification = evaluation.as_dict()
    assert classification["brier"] == brier_score_loss(test.y_true, test.probability)
    if not ci_degenerate_list:  # a metrics.json written before lunglib flagged them
        del classification["ci_degenerate"]
    levels = {
        "whole scan, mean per patient": {"n": 5, "dice": 0.6123, "iou": 0.5012,
                                         "hd95_mm": 7.8125, "nsd": 0.7081},
        "whole scan, global (pooled voxels)": {"n": 5, "dice": 0.8084, "iou": 0.6783,
                                               "hd95_mm": None, "nsd": None},
        "per nodule, >= 1000 mm3": {"n": 2, "dice": 0.9271, "iou": 0.8646, "hd95_mm": 1.4142,
                                    "nsd": 0.9812},
        "per nodule, < 1000 mm3": {"n": 0, "dice": None, "iou": None, "hd95_mm": None,
                                   "nsd": None},
    }
    metrics = {
        "dataset": "synthetic",
        "test_patients": int(test.patient.nunique()),
        "test_samples": int(len(test)),
        "split": {"train": 48, "val": int(val.patient.nunique()),
                  "test": int(test.patient.nunique())},
        "classification": classification,
        "segmentation": {"patients": 5, "dice": 0.6123, "iou": 0.5012, "levels": levels},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pd.DataFrame({name: {"n": v["n"], "Dice": v["dice"], "IoU": v["iou"],
                         "HD95 (mm)": v["hd95_mm"]} for name, v in levels.items()}).T.to_csv(
        folder / "segmentation_levels.csv")
    results = _search_results(rng)
    results.to_csv(folder / "search_results.csv", index=False)
    best = results.loc[results.score.idxmax()]
    (folder / "best_config.json").write_text(json.dumps(
        {"layers": int(best.layers), "filters": int(best.filters),
         "learning_rate": float(best.learning_rate), "kernel_size": 3, "dropout": 0.3}))
    np.savez_compressed(folder / "segmentation_gallery.npz", **_gallery(rng))
    np.savez_compressed(folder / "failures.npz", **_failures(rng))
    names = NOTEBOOK_NAMES[:notebooks]
    for name in names:
        _notebook(folder / f"{name}.ipynb", name)
    seconds = {f"{n}.ipynb": s for n, s in zip(names, SECONDS, strict=False)}
    info = collect_run_info(parameters or {"size": 64, "n_slices": 32, "epochs": 20},
                            "synthetic", seconds, "2025-01-01T10:00:00+00:00",
                            "2025-01-01T10:05:00+00:00", machine=MACHINE)
    write_run_info(folder, info)
    return folder
