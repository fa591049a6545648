"""The one-page figure of ``lunglib characterize``: each nodule's patch, outline and numbers."""

from __future__ import annotations

import os
import textwrap

import numpy as np

from lunglib.viz.viewer import figure_png, window_limits


def characterization_figure(result, path: str | os.PathLike, max_nodules: int = 6):
    """Draw one row per nodule: the patch, the patch with its outlines, and the measures.

    Parameters
    ----------
    result : lunglib.characterize.Characterization
        Its ``table`` (one row per nodule), ``views`` (patch, outline, consensus, pixel size
        per nodule; None where nothing was found), ``notes`` and ``patient_key`` (the only
        identifier shown: a pseudonym).
    path : path-like
        Where the PNG goes (written atomically).
    max_nodules : int, default 6
        Rows drawn; the CSV and JSON hold every nodule.

    Returns
    -------
    pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from lunglib.io.atomic import write_bytes_atomic

    rows = list(result.table.to_dict("records"))[:max_nodules]
    n = max(len(rows), 1)
    fig, axes = plt.subplots(n, 3, figsize=(11, 3.6 * n + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1.3]})
    lo, hi = window_limits("lung")
    for ax_row, row, view in zip(axes, rows, result.views, strict=False):
        patch_ax, outline_ax, text_ax = ax_row
        for ax in ax_row:
            ax.axis("off")
        if view is None:
            text_ax.text(0, 1, f"nodule {row['nodule']}: nothing outlined at the point",
                         va="top", fontsize=10)
            continue
        extent_mm = (0, view.patch_hu.shape[1] * view.pixel_mm[1],
                     view.patch_hu.shape[0] * view.pixel_mm[0], 0)
        patch_ax.imshow(view.patch_hu, cmap="gray", vmin=lo, vmax=hi, extent=extent_mm)
        soft_lo, soft_hi = window_limits("mediastinum")
        outline_ax.imshow(view.patch_hu, cmap="gray", vmin=soft_lo, vmax=soft_hi,
                          extent=extent_mm)
        patch_ax.set_title(f"nodule {row['nodule']}: slice {row['slice']} (lung window)",
                           fontsize=9)
        patch_ax.plot([2, 12], [extent_mm[2] - 3] * 2, color="white", linewidth=2)
        patch_ax.text(7, extent_mm[2] - 4.5, "10 mm", color="white", ha="center", fontsize=8)
        handles = [Line2D([], [], color="tab:cyan", label="lunglib outline")]
        outline_ax.contour(*_grid_mm(view.outline, view.pixel_mm), view.outline.astype(float),
                           levels=[0.5], colors="tab:cyan", linewidths=1.4)
        if view.consensus is not None and view.consensus.any():
            outline_ax.contour(*_grid_mm(view.consensus, view.pixel_mm),
                               view.consensus.astype(float), levels=[0.5], colors="tab:red",
                               linewidths=1.2, linestyles="dashed")
            handles.append(Line2D([], [], color="tab:red", linestyle="dashed",
                                  label="readers' consensus"))
        outline_ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.8)
        outline_ax.set_title("outline (soft-tissue window)", fontsize=9)
        text_ax.text(0, 1, "\n".join(_lines(row)), va="top", fontsize=9, family="monospace")
    fig.suptitle(f"lunglib characterize -- patient {result.patient_key}   (research software: "
                 "not for diagnosis)", fontsize=10)
    if result.notes:
        fig.text(0.01, 0.002, textwrap.fill("; ".join(result.notes), 150), fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    path = write_bytes_atomic(path, figure_png(fig))
    plt.close(fig)
    return path


def _grid_mm(mask: np.ndarray, pixel_mm) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in mm: (columns, rows), the x and y that ``contour`` takes."""
    return ((np.arange(mask.shape[1]) + 0.5) * pixel_mm[1],
            (np.arange(mask.shape[0]) + 0.5) * pixel_mm[0])


def _lines(row: dict) -> list[str]:
    lines = [
        f"long axis      {row['long_axis_mm']:6.1f} mm",
        f"short axis     {row['short_axis_mm']:6.1f} mm",
        f"area           {row['area_mm2']:6.0f} mm2",
        f"volume (approx){row['volume_mm3']:6.0f} mm3 over {row['slices']} slices",
        f"mean HU        {row['mean_hu']:6.0f}",
        f"malignancy     {row['malignancy']:6.2f} (calibrated)",
    ]
    if row.get("dice_consensus") is not None and np.isfinite(row["dice_consensus"]):
        lines.append(f"Dice vs readers {row['dice_consensus']:5.2f}")
    ratings = row.get("malignancy_by_reader")
    if ratings:
        lines.append(f"readers' ratings {ratings}")
    lines.append(f"at ({row['x_mm']:.1f}, {row['y_mm']:.1f}, {row['z_mm']:.1f}) mm")
    return lines
