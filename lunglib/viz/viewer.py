"""Looking at CT: window presets, a slice viewer, montages and HU histograms.

:class:`SliceViewer` is interactive in Jupyter (a slider through the slices, a window preset, the
view axis, overlays on or off). Where no widget front end exists -- papermill, nbconvert, a
plain Python session -- it draws a static montage instead, so notebooks run in batch never fail
and their saved outputs still show the volume.

Titles name volumes by the caller's ``title`` (use the patient key or the dataset's case id):
nothing here reads or prints DICOM patient identifiers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np

#: Window presets as (width, level) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "bone": (1800.0, 400.0),
}
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
STATIC_VIEWER_ENV = "LUNGLIB_STATIC_VIEWER"  # set to 1: SliceViewer.show draws the static montage
OVERLAY_COLOURS = ("tab:red", "tab:cyan", "tab:orange", "tab:green", "tab:purple")


def window_limits(window: str | tuple[float, float] | None) -> tuple[float, float] | None:
    """``(vmin, vmax)`` for a preset name or a ``(width, level)`` pair; None leaves data as is."""
    if window is None:
        return None
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; choose one of {sorted(WINDOWS)}")
        window = WINDOWS[window]
    width, level = window
    return level - width / 2.0, level + width / 2.0


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(volume, index, axis=axis)


def _aspect(spacing: Sequence[float] | None, axis: int) -> float:
    """Pixel aspect (row mm / column mm) of a slice taken across ``axis``."""
    if spacing is None:
        return 1.0
    rows, cols = [s for a, s in enumerate(spacing) if a != axis]
    return float(rows / cols)


def _draw(ax, volume, axis, index, limits, masks, spacing, show_masks=True):
    img = _slice(volume, axis, index)
    origin = "lower" if axis != 0 else "upper"  # head up in coronal and sagittal views
    kwargs = {} if limits is None else {"vmin": limits[0], "vmax": limits[1]}
    ax.imshow(img, cmap="gray", origin=origin, aspect=_aspect(spacing, axis),
              interpolation="nearest", **kwargs)
    if show_masks:
        for colour, (_, mask) in zip(OVERLAY_COLOURS, (masks or {}).items(), strict=False):
            m = _slice(mask, axis, index) > 0
            if m.any() and not m.all():
                ax.contour(m, levels=[0.5], colors=[colour], linewidths=1.0, origin=origin)
    ax.set_xticks([])
    ax.set_yticks([])


def _check_masks(volume: np.ndarray, masks) -> dict[str, np.ndarray]:
    if masks is None:
        return {}
    if not isinstance(masks, Mapping):
        masks = {"mask": masks}
    out = {}
    for name, mask in masks.items():
        if mask is None:
            continue
        mask = np.asarray(mask)
        if mask.shape != volume.shape:
            raise ValueError(f"overlay {name!r} has shape {mask.shape}, volume {volume.shape}")
        out[str(name)] = mask
    return out


def montage(
    volume: np.ndarray,
    n: int = 16,
    axis: str | int = "axial",
    window: str | tuple[float, float] | None = "lung",
    masks: Mapping[str, np.ndarray] | np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    title: str | None = None,
    columns: int = 8,
    ax_size: float = 1.6,
):
    """A grid of ``n`` evenly spaced slices with optional mask outlines; returns the figure.

    Parameters
    ----------
    volume : ndarray (z, y, x)
        HU (use a preset ``window``) or already-scaled values (``window=None``).
    n : int
        Number of slices shown.
    axis : {"axial", "coronal", "sagittal"} or int
    window : preset name, (width, level) or None
    masks : ndarray or {name: ndarray}, optional
        Drawn as coloured outlines (lung mask, nodules, predictions ...).
    spacing : (z, y, x) mm, optional
        Gives coronal and sagittal slices their true aspect.
    title : str, optional
        Figure title -- a patient key or case id, never a patient's name.
    """
    import matplotlib.pyplot as plt

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"montage needs a 3-D (z, y, x) volume, got shape {volume.shape}")
    masks = _check_masks(volume, masks)
    axis_i = AXES[axis] if isinstance(axis, str) else int(axis)
    n = max(1, min(n, volume.shape[axis_i]))
    indices = np.linspace(0, volume.shape[axis_i] - 1, n + 2)[1:-1].round().astype(int)
    columns = min(columns, n)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * ax_size, rows * ax_size),
                             squeeze=False)
    limits = window_limits(window)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index in zip(axes.ravel(), indices, strict=False):
        _draw(ax, volume, axis_i, int(index), limits, masks, spacing)
        ax.set_title(f"{index}", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def hu_histogram(
    hu: np.ndarray,
    bins: int = 200,
    hu_range: tuple[float, float] = (-1200.0, 1200.0),
    mask: np.ndarray | None = None,
    ax=None,
    title: str | None = None,
):
    """Histogram of Hounsfield units with the usual tissues marked; returns the axes.

    Air (-1000), lung (-700 .. -600), fat (-100), water (0) and bone (>400) are marked, so a
    student can check that a scan's HU scale is right. ``mask`` restricts the count (e.g. lungs).
    """
    import matplotlib.pyplot as plt

    values = np.asarray(hu)
    if mask is not None:
        values = values[np.asarray(mask) > 0]
    values = values.ravel()
    if values.size > 2_000_000:  # a regular subsample draws the same histogram, faster
        values = values[:: values.size // 2_000_000 + 1]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    ax.hist(values, bins=bins, range=hu_range, color="0.3")
    ax.set_yscale("log")
    for hu_value, name in ((-1000, "air"), (-650, "lung"), (-100, "fat"), (0, "water"),
                           (400, "bone")):
        ax.axvline(hu_value, color="tab:red", lw=0.8, ls="--")
        ax.text(hu_value, ax.get_ylim()[1], name, rotation=90, va="top", ha="right", fontsize=8)
    ax.set_xlabel("Hounsfield units")
    ax.set_ylabel("voxels (log)")
    if title:
        ax.set_title(title)
    return ax


def has_widget_frontend() -> bool:
    """True inside a Jupyter kernel with ipywidgets (``LUNGLIB_STATIC_VIEWER=1`` forces False).

    A kernel cannot tell whether a person is watching (JupyterLab) or a batch runner is
    (papermill, nbconvert), so :meth:`SliceViewer.show` sends both the widget and a PNG montage
    in one display bundle; each front end shows the richest one it can.
    """
    if os.environ.get(STATIC_VIEWER_ENV, "") not in ("", "0"):
        return False
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


class SliceViewer:
    """Scroll through a CT volume with window presets, view axes and mask overlays.

    Parameters
    ----------
    volume : ndarray (z, y, x)
        HU values (or scaled values with ``window=None``).
    masks : ndarray or {name: ndarray}, optional
        Overlays drawn as outlines: lung mask, nodule masks, predictions.
    spacing : (z, y, x) mm, optional
        For true proportions in coronal and sagittal views.
    window : preset name, (width, level) or None
        Initial window: ``"lung"`` (W1500/L-600), ``"mediastinum"`` (W350/L50), ``"bone"``.
    title : str, optional
        Shown above the image (a patient key or case id).
    static : bool, optional
        Force the static montage (default: automatic, see :func:`has_widget_frontend`).

    Examples
    --------
    >>> SliceViewer(scan.hu, masks={"lungs": lung_mask}, spacing=scan.spacing).show()
    """

    def __init__(self, volume, masks=None, spacing=None, window="lung", title=None, static=None):
        self.volume = np.asarray(volume)
        if self.volume.ndim != 3:
            raise ValueError(f"SliceViewer needs a 3-D (z, y, x) volume, got {self.volume.shape}")
        self.masks = _check_masks(self.volume, masks)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        window_limits(window)  # validate now
        self.window = window
        self.title = title
        self.static = (not has_widget_frontend()) if static is None else bool(static)

    def figure(self, axis: str = "axial", index: int | None = None, window=None,
               show_masks: bool = True):
        """One slice as a matplotlib figure (what the widget redraws)."""
        import matplotlib.pyplot as plt

        axis_i = AXES[axis]
        index = self.volume.shape[axis_i] // 2 if index is None else int(index)
        if not 0 <= index < self.volume.shape[axis_i]:
            raise IndexError(f"slice {index} outside 0..{self.volume.shape[axis_i] - 1}")
        fig, ax = plt.subplots(figsize=(5, 5))
        _draw(ax, self.volume, axis_i, index, window_limits(window or self.window), self.masks,
              self.spacing, show_masks)
        label = f"{axis} slice {index}/{self.volume.shape[axis_i] - 1}"
        ax.set_title(f"{self.title} - {label}" if self.title else label, fontsize=9)
        return fig

    def montage(self, axis: str = "axial", n: int = 16):
        """The static view: :func:`montage` of this volume with its overlays."""
        return montage(self.volume, n=n, axis=axis, window=self.window, masks=self.masks,
                       spacing=self.spacing, title=self.title)

    def widget(self):
        """The interactive ipywidgets view (slider, window preset, view axis, overlays)."""
        import ipywidgets as widgets
        import matplotlib.pyplot as plt
        from IPython.display import display

        axis = widgets.Dropdown(options=list(AXES), value="axial", description="view")
        preset = self.window if isinstance(self.window, str) else "lung"
        win = widgets.Dropdown(options=list(WINDOWS), value=preset, description="window")
        index = widgets.IntSlider(value=self.volume.shape[0] // 2, min=0,
                                  max=self.volume.shape[0] - 1, description="slice",
                                  continuous_update=False)
        overlay = widgets.Checkbox(value=bool(self.masks), description="overlays",
                                   disabled=not self.masks)
        out = widgets.Output()

        def redraw(*_):
            n = self.volume.shape[AXES[axis.value]]
            index.max = n - 1
            index.value = min(index.value, n - 1)
            with out:
                out.clear_output(wait=True)
                fig = self.figure(axis.value, index.value, win.value, overlay.value)
                display(fig)
                plt.close(fig)

        def axis_changed(change):
            index.value = self.volume.shape[AXES[change["new"]]] // 2
            redraw()

        axis.observe(axis_changed, names="value")
        for control in (win, index, overlay):
            control.observe(redraw, names="value")
        redraw()
        return widgets.VBox([widgets.HBox([axis, win, overlay]), index, out])

    def show(self) -> None:
        """Display the viewer: the widget in Jupyter (with a PNG montage as the fallback that
        papermill, nbconvert and static renderers show), else a static matplotlib montage.

        Returns nothing, so that a cell ending in ``viewer.show()`` displays it once; use
        :meth:`widget` or :meth:`montage` to get the objects.
        """
        import matplotlib.pyplot as plt

        fig = self.montage()
        if self.static:
            plt.show()
            return
        import base64

        from IPython.display import display

        png = base64.b64encode(figure_png(fig)).decode()
        plt.close(fig)
        view = self.widget()
        bundle = view._repr_mimebundle_()
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        display({**data, "image/png": png}, raw=True)


def prediction_report(scan, lung_mask: np.ndarray, candidates, summary: Mapping[str, object],
                      path: str | os.PathLike, n_slices: int = 3):
    """A one-page PNG: the probability, the candidate table and the key slices.

    Parameters
    ----------
    scan : CTScan
        The scan that was predicted (named by its pseudonymous ``patient_key`` only).
    lung_mask : ndarray
        Lung mask in the scan's grid, outlined on the slices.
    candidates : DataFrame
        From :func:`lunglib.inference.find_candidates`; the most probable ones are circled.
    summary : mapping
        ``cancer_probability``, ``threshold`` and ``notes`` as in
        :meth:`lunglib.predict.Prediction.summary`.
    path : path-like
        Where the PNG goes (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from lunglib.io.atomic import write_bytes_atomic

    top = candidates.head(n_slices) if len(candidates) else None
    if top is not None:
        slices = [int(round(z)) for z in top["centroid_z"]]
    else:
        filled = np.flatnonzero(lung_mask.any(axis=(1, 2)))
        slices = [int(filled[len(filled) // 2])] if len(filled) else [scan.hu.shape[0] // 2]
    fig = plt.figure(figsize=(4 * (len(slices) + 1), 4.6))
    text = fig.add_subplot(1, len(slices) + 1, 1)
    text.axis("off")
    p = summary.get("cancer_probability")
    threshold = summary.get("threshold")
    lines = [f"patient {scan.patient_key}",
             "cancer probability: " + ("n/a" if p is None else f"{p:.2f}")]
    if p is not None and threshold is not None:
        verdict = "above" if p >= threshold else "below"
        lines.append(f"({verdict} the validation threshold {threshold:.2f})")
    lines.append(f"nodule candidates: {len(candidates)}")
    if top is not None:
        lines += [f"  #{int(r.candidate)}: p {r.peak_prob:.2f}, {r.diameter_mm:.1f} mm, "
                  f"slice {int(round(r.centroid_z))}" for r in top.itertuples()]
    lines += [f"note: {n}" for n in summary.get("notes", [])]
    lines.append("research software: not for diagnosis")
    text.text(0, 1, "\n".join(lines), va="top", fontsize=9, family="monospace", wrap=True)
    lo, hi = window_limits("lung")
    for k, z in enumerate(slices, start=2):
        ax = fig.add_subplot(1, len(slices) + 1, k)
        ax.imshow(scan.hu[z], cmap="gray", vmin=lo, vmax=hi,
                  aspect=scan.spacing[1] / scan.spacing[2])
        if lung_mask[z].any():
            ax.contour(lung_mask[z], levels=[0.5], colors="tab:cyan", linewidths=0.6)
        if top is not None:
            for r in top.itertuples():
                if int(round(r.centroid_z)) == z:
                    radius = max(r.diameter_mm / scan.spacing[2], 4) * 0.8
                    ax.add_patch(Circle((r.centroid_x, r.centroid_y), radius, fill=False,
                                        color="tab:red", linewidth=1.2))
        ax.set_title(f"slice {z}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = write_bytes_atomic(path, figure_png(fig))
    plt.close(fig)
    return path
