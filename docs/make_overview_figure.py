"""Draw docs/images/overview.png (the README picture) from the synthetic cohort.

Run: .venv/bin/python docs/make_overview_figure.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lunglib.datasets import open_dataset  # noqa: E402
from lunglib.preprocess import prepare  # noqa: E402
from lunglib.settings import Settings  # noqa: E402
from lunglib.synthetic import ensure_cohort  # noqa: E402
from lunglib.viz.viewer import window_limits  # noqa: E402

OUT = Path(__file__).resolve().parent / "images" / "overview.png"


def main() -> None:
    data = open_dataset("synthetic", ensure_cohort())
    patient = next(p for p in data.patient_ids() if data.label(p) == 1)
    scan = data.load_scan(patient)
    nodules = data.nodule_mask(patient, scan)
    lungs = data.lung_mask(patient, scan)
    z = int(np.argmax((nodules > 0).sum(axis=(1, 2))))
    prepared = prepare(scan, Settings(), nodule_mask=nodules)
    pz = int(np.argmax((prepared.nodule_mask > 0).sum(axis=(1, 2))))

    lo, hi = window_limits("lung")
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    axes[0].imshow(scan.hu[z], cmap="gray", vmin=lo, vmax=hi)
    axes[0].set_title(f"{patient}: DICOM in HU, lung window")
    axes[1].imshow(scan.hu[z], cmap="gray", vmin=lo, vmax=hi)
    axes[1].contour(lungs[z], levels=[0.5], colors="tab:cyan", linewidths=0.8)
    axes[1].contour(nodules[z] > 0, levels=[0.5], colors="tab:red", linewidths=1.2)
    axes[1].set_title("lung mask (cyan) and nodule (red)")
    axes[2].imshow(prepared.image[pz], cmap="gray", vmin=0, vmax=1)
    axes[2].contour(prepared.nodule_mask[pz] > 0, levels=[0.5], colors="tab:red", linewidths=1)
    axes[2].set_title("model input: lung box, 32 x 64 x 64")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
