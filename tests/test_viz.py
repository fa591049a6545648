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
    has_widget_frontend,
    hu_histogram,
    montage,
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
