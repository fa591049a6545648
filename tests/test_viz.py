"""Visualisation, headless (matplotlib Agg): windows, montage, histogram, SliceViewer."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lunglib.viz.viewer import (  # noqa: E402
    WINDOWS,
    SliceViewer,
    auto_limits,
    has_widget_frontend,
    hu_histogram,
    montage,
    spread_indices,
    window_limits,
)


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    hu = rng.normal(-800, 50, size=(20, 30, 40)).astype(np.int16)
    mask = np.zeros(hu.shape, np.uint8)
    mask[5:15, 10:20, 10:30] = 1
    yield hu, mask
    plt.close("all")


def test_window_presets_are_the_radiology_ones():
    assert window_limits("lung") == (-1350.0, 150.0)  # W1500 / L-600
    assert window_limits("mediastinum") == (-125.0, 225.0)  # W350 / L50
    assert window_limits((400, 40)) == (-160.0, 240.0)
    assert window_limits(None) is None
    assert set(WINDOWS) == {"lung", "mediastinum", "bone"}
    with pytest.raises(ValueError, match="unknown window"):
        window_limits("brain")


def test_montage_draws_the_requested_slices_with_outlines(volume):
    hu, mask = volume
    fig = montage(hu, n=6, masks={"lungs": mask}, spacing=(2.5, 0.7, 0.7), title="case-01",
                  columns=3)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 6
    shown = [int(ax.get_title()) for ax in images]
    assert shown == sorted(shown) and len(set(shown)) == 6
    assert images[0].images[0].get_clim() == (-1350.0, 150.0)
    # slices that cross the mask carry an outline, the others none
    for ax, z in zip(images, shown, strict=True):
        assert bool(ax.collections) == bool(mask[z].any())
    coronal = montage(hu, n=4, axis="coronal", spacing=(2.5, 0.7, 0.7))
    assert coronal.axes[0].images[0].get_array().shape == (20, 40)


def test_hu_histogram_counts_every_voxel_in_range(volume):
    hu, mask = volume
    ax = hu_histogram(hu, bins=50, hu_range=(-1200, 1200))
    assert sum(p.get_height() for p in ax.patches) == hu.size
    ax = hu_histogram(hu, mask=mask)
    assert sum(p.get_height() for p in ax.patches) == mask.sum()


def test_slice_viewer_falls_back_to_a_montage_without_a_widget_frontend(volume):
    hu, mask = volume
    assert not has_widget_frontend()  # plain pytest: no Jupyter kernel
    viewer = SliceViewer(hu, masks={"lungs": mask}, spacing=(2.5, 0.7, 0.7), title="case-01")
    assert viewer.static
    plt.close("all")
    assert viewer.show() is None
    fig = plt.gcf()
    assert len([ax for ax in fig.axes if ax.images]) == 16
    assert fig._suptitle.get_text() == "case-01"


def test_slice_viewer_widget_controls(volume):
    hu, mask = volume
    viewer = SliceViewer(hu, masks=mask, window="mediastinum", static=False)
    box = viewer.widget()
    controls, slider, _ = box.children
    axis, win, overlay = controls.children
    assert (slider.min, slider.max, slider.value) == (0, 19, 10)
    assert win.value == "mediastinum" and overlay.value is True
    axis.value = "sagittal"
    assert slider.max == hu.shape[2] - 1
    fig = viewer.figure("coronal", 3, "bone")
    assert fig.axes[0].images[0].get_array().shape == (20, 40)
    with pytest.raises(IndexError):
        viewer.figure("axial", 99)


def test_slice_viewer_checks_its_input(volume):
    hu, mask = volume
    with pytest.raises(ValueError, match="3-D"):
        SliceViewer(hu[0])
    with pytest.raises(ValueError, match="overlay"):
        SliceViewer(hu, masks={"lungs": mask[:, :10]})


def grey_levels(fig, ax=None) -> int:
    """Distinct grey values (R = G = B) drawn inside ``ax`` (default: the first axes).

    Coloured mask outlines and the title fall outside the count, so a flat grey square counts
    one or two levels whatever else the figure holds.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the widget closes its figures; draw them again here
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    box = (ax or fig.axes[0]).get_window_extent()
    height = rgba.shape[0]
    rows = slice(int(height - box.y1) + 2, int(height - box.y0) - 2)
    cols = slice(int(box.x0) + 2, int(box.x1) - 2)
    pixels = rgba[rows, cols, :3].reshape(-1, 3)
    grey = pixels[(pixels[:, 0] == pixels[:, 1]) & (pixels[:, 1] == pixels[:, 2])]
    return len(np.unique(grey[:, 0]))


@pytest.fixture
def prepared():
    """A prepared-looking volume: values in [0, 1] (a dark body, brighter blobs), no HU."""
    z, y, x = np.mgrid[0:16, 0:48, 0:48]
    volume = 0.2 + 0.6 * (x / 47.0) * (y / 47.0)  # a smooth ramp through many grey levels
    volume[(z - 8) ** 2 + (y - 20) ** 2 + (x - 30) ** 2 < 25] = 0.95
    yield volume.astype(np.float32)
    plt.close("all")


def widget_figures(viewer):
    """Build the viewer's widget and return it with every figure its redraw made."""
    drawn = []
    figure = viewer.figure

    def recording(*args, **kwargs):
        drawn.append(figure(*args, **kwargs))
        return drawn[-1]

    viewer.figure = recording
    return viewer.widget(), drawn


def test_auto_window_gives_a_prepared_volume_contrast_in_the_widget(prepared):
    # the old viewer replaced window=None by the lung preset: a 0-1 volume became flat grey
    viewer = SliceViewer(prepared, window=None, static=False)
    box, drawn = widget_figures(viewer)
    controls, slider, _ = box.children
    assert controls.children[1].value == "auto"
    assert drawn, "the widget drew no slice"
    low, high = drawn[-1].axes[0].images[0].get_clim()
    assert (low, high) == pytest.approx(tuple(np.percentile(prepared, [1, 99])))
    assert grey_levels(drawn[-1]) >= 40
    slider.value = 3  # moving the slider redraws with the same auto range
    assert drawn[-1].axes[0].images[0].get_clim() == (low, high)
    assert grey_levels(drawn[-1]) >= 40
    # the lung preset on the same data is the flat square the student used to see
    flat = viewer.figure("axial", 8, "lung")
    assert grey_levels(flat) <= 2


def test_a_width_level_pair_is_used_as_given(prepared, volume):
    hu, _ = volume
    viewer = SliceViewer(hu, window=(400, 40), static=False)
    box, drawn = widget_figures(viewer)
    window_menu = box.children[0].children[1]
    assert window_menu.value == "W400 / L40"
    assert list(window_menu.options) == ["W400 / L40", "lung", "mediastinum", "bone", "auto"]
    assert drawn[-1].axes[0].images[0].get_clim() == (-160.0, 240.0)
    window_menu.value = "auto"
    assert drawn[-1].axes[0].images[0].get_clim() == pytest.approx(
        tuple(np.percentile(hu, [1, 99])))
    # the same pair through montage and the static view: [0, 1] as width 1, level 0.5
    fig = montage(prepared, n=4, window=(1.0, 0.5))
    assert all(ax.images[0].get_clim() == (0.0, 1.0) for ax in fig.axes if ax.images)
    assert grey_levels(fig, fig.axes[0]) >= 10


@pytest.mark.parametrize("bad", [(0, 1), (-100, 40), (float("nan"), 0), (1, 2, 3), "brain"])
def test_a_bad_window_is_refused_with_a_clear_error(bad, prepared):
    with pytest.raises(ValueError, match="width|window"):
        window_limits(bad)
    with pytest.raises(ValueError, match="width|window"):
        SliceViewer(prepared, window=bad)
    with pytest.raises(ValueError, match="width|window"):
        montage(prepared, window=bad)


def test_montage_of_few_slices_shows_each_once(prepared):
    draws = np.stack([prepared[8] * k / 8 for k in range(1, 9)])  # eight different images
    fig = montage(draws, n=8, window=None, columns=8)
    assert [int(ax.get_title()) for ax in fig.axes if ax.images] == list(range(8))
    for length in range(1, 40):
        for n in range(1, 20):
            chosen = spread_indices(length, n)
            assert len(chosen) == min(n, length) == len(set(chosen.tolist()))
            assert chosen.min() >= 0 and chosen.max() < length
    assert spread_indices(100, 3).tolist() == [25, 50, 74]  # edges left out when there is room


def test_viewer_opens_on_the_chosen_slice(volume):
    hu, mask = volume
    viewer = SliceViewer(hu, masks=mask, index=3, static=False)
    box, drawn = widget_figures(viewer)
    assert box.children[1].value == 3
    assert drawn[-1].axes[0].get_title().startswith("axial slice 3/")
    shown = [int(ax.get_title()) for ax in viewer.montage(n=6).axes if ax.images]
    assert 3 in shown and len(shown) == 6
    with pytest.raises(IndexError):
        SliceViewer(hu, index=20)


def test_auto_limits_ignore_outliers_and_never_collapse():
    values = np.zeros((10, 10, 10))
    values[0, 0, :5] = 5000.0  # a few metal voxels
    values[1:] = np.linspace(0, 1, 900).reshape(9, 10, 10)
    low, high = auto_limits(values)
    assert high < 5000 and 0 <= low < high <= 1
    assert auto_limits(np.full((2, 2, 2), 7.0)) == (6.5, 7.5)
    mostly_zero = np.zeros((10, 10, 10))
    mostly_zero[0, 0, 0] = 1
    assert auto_limits(mostly_zero) == (0.0, 1.0)
