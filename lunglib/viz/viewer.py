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
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np

#: Window presets as (width, level) in HU: a window shows ``level - width / 2`` as black and
#: ``level + width / 2`` as white. Every ``window`` argument in this module uses this order.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "bone": (1800.0, 400.0),
}
#: ``window=None`` ("auto") shows these percentiles of the whole volume as black and white, so
#: data of any scale -- HU, a prepared volume in [0, 1], a probability map -- has contrast, and a
#: few extreme voxels (metal, padding) do not wash it out.
AUTO_PERCENTILES: tuple[float, float] = (1.0, 99.0)
AUTO_LABEL = "auto"  # the window dropdown's name for ``window=None``
AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
STATIC_VIEWER_ENV = "LUNGLIB_STATIC_VIEWER"  # set to 1: SliceViewer.show draws the static montage
OVERLAY_COLOURS = ("tab:red", "tab:cyan", "tab:orange", "tab:green", "tab:purple")
_SAMPLE_LIMIT = 2_000_000  # voxels read for a histogram or an auto range (a regular subsample)

Window = str | tuple[float, float] | None


def window_limits(window: Window) -> tuple[float, float] | None:
    """``(vmin, vmax)`` for a preset name or a ``(width, level)`` pair.

    ``None`` (the auto range) returns None: its limits depend on the data, see
    :func:`auto_limits` and :func:`display_limits`.

    Raises
    ------
    ValueError
        For an unknown preset, anything but two numbers, or a width that is not positive -- a
        ``(low, high)`` range such as ``(0, 1)`` passed by mistake is refused, not drawn black.
    """
    if window is None:
        return None
    if isinstance(window, str):
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; choose one of {sorted(WINDOWS)}, "
                             "a (width, level) pair or None for the auto range")
        window = WINDOWS[window]
    try:
        width, level = (float(value) for value in window)
    except (TypeError, ValueError) as error:
        raise ValueError(f"window must be a preset name, a (width, level) pair or None; "
                         f"got {window!r}") from error
    if not (np.isfinite(width) and np.isfinite(level) and width > 0):
        raise ValueError(
            f"window {tuple(window)!r} is (width, level) and needs a finite width > 0; for a "
            f"range [low, high] pass (high - low, (low + high) / 2), e.g. (1, 0.5) for [0, 1]")
    return level - width / 2.0, level + width / 2.0


def _subsample(values: np.ndarray, limit: int = _SAMPLE_LIMIT) -> np.ndarray:
    """At most about ``limit`` values, a regular subsample (same histogram, less work)."""
    values = np.asarray(values).ravel()
    if values.size > limit:
        values = values[:: values.size // limit + 1]
    return values


def auto_limits(
    volume: np.ndarray, percentiles: tuple[float, float] = AUTO_PERCENTILES
) -> tuple[float, float]:
    """``(vmin, vmax)`` from the volume's own values: its 1st and 99th percentiles.

    Falls back to the minimum and maximum when those percentiles coincide (e.g. a mask that is
    mostly 0), and to a unit range around a constant volume, so ``vmin < vmax`` always holds.
    """
    values = _subsample(volume).astype(np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, percentiles))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return low, high


def display_limits(volume: np.ndarray, window: Window) -> tuple[float, float]:
    """``(vmin, vmax)`` for drawing ``volume`` through ``window`` (None: :func:`auto_limits`)."""
    limits = window_limits(window)
    return auto_limits(volume) if limits is None else limits


def window_name(window: Window) -> str:
    """How a window is labelled: the preset name, ``"W1500 / L-600"`` for a pair, or auto."""
    if window is None:
        return AUTO_LABEL
    if isinstance(window, str):
        return window
    width, level = (float(v) for v in window)
    return f"W{width:g} / L{level:g}"


def spread_indices(length: int, n: int) -> np.ndarray:
    """``n`` distinct, evenly spaced indices into ``range(length)`` (all of them when n >= length).

    The first and last index are left out when there is room (the edge slices of a scan are
    mostly air); when there is not, every index is kept distinct rather than repeated.
    """
    if length < 1 or n < 1:
        raise ValueError(f"need length >= 1 and n >= 1, got length {length}, n {n}")
    n = min(n, length)
    if length >= n + 2:
        return np.linspace(0, length - 1, n + 2)[1:-1].round().astype(int)
    return np.linspace(0, length - 1, n).round().astype(int)


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
    ax.imshow(img, cmap="gray", origin=origin, aspect=_aspect(spacing, axis),
              interpolation="nearest", vmin=limits[0], vmax=limits[1])
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
    window: Window = "lung",
    masks: Mapping[str, np.ndarray] | np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    title: str | None = None,
    columns: int = 8,
    ax_size: float = 1.6,
    indices: Sequence[int] | None = None,
):
    """A grid of ``n`` evenly spaced, distinct slices with optional mask outlines; returns the
    figure.

    Parameters
    ----------
    volume : ndarray (z, y, x)
        HU (use a preset ``window``) or already-scaled values (``window=None``).
    n : int
        Number of slices shown (every slice when the volume has no more than ``n``).
    axis : {"axial", "coronal", "sagittal"} or int
    window : preset name, (width, level) or None
        A preset (:data:`WINDOWS`), a ``(width, level)`` pair used as given, or None for the
        volume's auto range (:func:`auto_limits`). One range for every panel, so slices compare.
    masks : ndarray or {name: ndarray}, optional
        Drawn as coloured outlines (lung mask, nodules, predictions ...).
    spacing : (z, y, x) mm, optional
        Gives coronal and sagittal slices their true aspect.
    title : str, optional
        Figure title -- a patient key or case id, never a patient's name.
    indices : sequence of int, optional
        The slices to show, instead of ``n`` evenly spaced ones.
    """
    import matplotlib.pyplot as plt

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"montage needs a 3-D (z, y, x) volume, got shape {volume.shape}")
    masks = _check_masks(volume, masks)
    axis_i = AXES[axis] if isinstance(axis, str) else int(axis)
    length = volume.shape[axis_i]
    if indices is None:
        indices = spread_indices(length, max(1, n))
    indices = [int(i) for i in indices]
    if not indices or not all(0 <= i < length for i in indices):
        raise IndexError(f"montage slices {indices} must be in 0..{length - 1}")
    n = len(indices)
    columns = min(columns, n)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * ax_size, rows * ax_size),
                             squeeze=False)
    limits = display_limits(volume, window)
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
    values = _subsample(values)
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


_OWN_WINDOW = object()  # SliceViewer.figure's default: the window the viewer was made with


class SliceViewer:
    """Scroll through a CT volume with window presets, view axes and mask overlays.

    Parameters
    ----------
    volume : ndarray (z, y, x)
        HU values, or scaled values (e.g. a prepared volume in [0, 1]) with ``window=None``.
    masks : ndarray or {name: ndarray}, optional
        Overlays drawn as outlines: lung mask, nodule masks, predictions.
    spacing : (z, y, x) mm, optional
        For true proportions in coronal and sagittal views.
    window : preset name, (width, level) or None
        Initial window, honoured as given: a preset (``"lung"`` W1500/L-600,
        ``"mediastinum"`` W350/L50, ``"bone"``), a ``(width, level)`` pair, or None for the
        volume's auto range (1st-99th percentile, :func:`auto_limits`). The widget's window
        menu offers it first, then the presets and the auto range.
    title : str, optional
        Shown above the image (a patient key or case id).
    static : bool, optional
        Force the static montage (default: automatic, see :func:`has_widget_frontend`).
    index : int, optional
        The axial slice the widget opens on (default: the middle one), e.g. the slice with the
        largest nodule cross-section, so the outline is in view from the start.

    Examples
    --------
    >>> SliceViewer(scan.hu, masks={"lungs": lung_mask}, spacing=scan.spacing).show()
    """

    def __init__(self, volume, masks=None, spacing=None, window: Window = "lung", title=None,
                 static=None, index: int | None = None):
        self.volume = np.asarray(volume)
        if self.volume.ndim != 3:
            raise ValueError(f"SliceViewer needs a 3-D (z, y, x) volume, got {self.volume.shape}")
        self.masks = _check_masks(self.volume, masks)
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        window_limits(window)  # validate now
        self.window = window
        self.title = title
        self.static = (not has_widget_frontend()) if static is None else bool(static)
        depth = self.volume.shape[0]
        self.index = depth // 2 if index is None else int(index)
        if not 0 <= self.index < depth:
            raise IndexError(f"slice {self.index} outside 0..{depth - 1}")
        self._index_chosen = index is not None
        self._auto_limits: tuple[float, float] | None = None

    def limits(self, window: Window) -> tuple[float, float]:
        """``(vmin, vmax)`` for ``window`` on this volume (the auto range is computed once)."""
        if window is not None:
            return window_limits(window)
        if self._auto_limits is None:
            self._auto_limits = auto_limits(self.volume)
        return self._auto_limits

    def window_choices(self) -> dict[str, Window]:
        """The widget's window menu: the viewer's own window first, then presets and auto."""
        choices: dict[str, Window] = {window_name(self.window): self.window}
        for window in (*WINDOWS, None):
            choices.setdefault(window_name(window), window)
        return choices

    def figure(self, axis: str = "axial", index: int | None = None, window=_OWN_WINDOW,
               show_masks: bool = True):
        """One slice as a matplotlib figure (what the widget redraws).

        ``window`` as in the constructor (None is the auto range); left out, the viewer's own.
        ``index`` defaults to the viewer's ``index`` in the axial view, else the middle slice.
        """
        import matplotlib.pyplot as plt

        axis_i = AXES[axis]
        if index is None:
            index = self.index if axis_i == 0 else self.volume.shape[axis_i] // 2
        index = int(index)
        if not 0 <= index < self.volume.shape[axis_i]:
            raise IndexError(f"slice {index} outside 0..{self.volume.shape[axis_i] - 1}")
        window = self.window if window is _OWN_WINDOW else window
        fig, ax = plt.subplots(figsize=(5, 5))
        _draw(ax, self.volume, axis_i, index, self.limits(window), self.masks, self.spacing,
              show_masks)
        label = f"{axis} slice {index}/{self.volume.shape[axis_i] - 1}"
        ax.set_title(f"{self.title} - {label}" if self.title else label, fontsize=9)
        return fig

    def montage(self, axis: str = "axial", n: int = 16):
        """The static view: :func:`montage` of this volume with its overlays.

        When the viewer was given an ``index``, the axial montage shows that slice in place of
        the evenly spaced one nearest to it.
        """
        indices = spread_indices(self.volume.shape[AXES[axis]], n)
        if self._index_chosen and AXES[axis] == 0:
            indices[np.argmin(np.abs(indices - self.index))] = self.index
            indices = np.unique(indices)
        return montage(self.volume, axis=axis, window=self.window, masks=self.masks,
                       spacing=self.spacing, title=self.title, indices=indices)

    def widget(self):
        """The interactive ipywidgets view (slider, window menu, view axis, overlays)."""
        import ipywidgets as widgets
        import matplotlib.pyplot as plt
        from IPython.display import display

        choices = self.window_choices()
        axis = widgets.Dropdown(options=list(AXES), value="axial", description="view")
        win = widgets.Dropdown(options=list(choices), value=window_name(self.window),
                               description="window")
        index = widgets.IntSlider(value=self.index, min=0, max=self.volume.shape[0] - 1,
                                  description="slice", continuous_update=False)
        overlay = widgets.Checkbox(value=bool(self.masks), description="overlays",
                                   disabled=not self.masks)
        out = widgets.Output()

        def redraw(*_):
            n = self.volume.shape[AXES[axis.value]]
            index.max = n - 1
            index.value = min(index.value, n - 1)
            with out:
                out.clear_output(wait=True)
                fig = self.figure(axis.value, index.value, choices[win.value], overlay.value)
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
        From :func:`lunglib.inference.find_candidates` (or re-ranked by
        :func:`lunglib.inference.rerank_candidates`, whose ``reducer_score`` is then listed);
        the first ones in its order are circled.
    summary : mapping
        ``cancer_probability``, ``threshold``, ``notes`` and ``warnings`` as in
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
    lines = [textwrap.fill(f"WARNING: {w}", 44, subsequent_indent="  ")
             for w in summary.get("warnings", [])]
    lines += [f"patient {scan.patient_key}",
             "cancer probability: " + ("n/a" if p is None else f"{p:.2f}")]
    if p is not None and threshold is not None:
        verdict = "above" if p >= threshold else "below"
        lines.append(f"({verdict} the validation threshold {threshold:.2f})")
    # a table re-ranked by lunglib.inference.rerank_candidates lists the reducer's score first
    reranked = "reducer_score" in candidates.columns
    lines.append(f"nodule candidates: {len(candidates)}"
                 + (", by reducer score (p)" if reranked and len(candidates) else ""))
    if top is not None:
        lines += [f"  #{int(r.candidate)}: "
                  + (f"{r.reducer_score:.2f} (p {r.peak_prob:.2f})" if reranked
                     else f"p {r.peak_prob:.2f}")
                  + f", {r.diameter_mm:.1f} mm, slice {int(round(r.centroid_z))}"
                  for r in top.itertuples()]
    lines += [textwrap.fill(f"note: {n}", 44, subsequent_indent="  ")
              for n in summary.get("notes", [])]
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
