"""Visualisation: slice viewers, montages, histograms, prediction reports and Grad-CAM."""

from lunglib.viz.explain import grad_cam, last_conv_layer
from lunglib.viz.viewer import (
    AXES,
    OVERLAY_COLOURS,
    STATIC_VIEWER_ENV,
    SliceViewer,
    figure_png,
    has_widget_frontend,
    hu_histogram,
    montage,
    prediction_report,
    window_limits,
)

__all__ = [
    "AXES",
    "OVERLAY_COLOURS",
    "STATIC_VIEWER_ENV",
    "SliceViewer",
    "figure_png",
    "grad_cam",
    "has_widget_frontend",
    "hu_histogram",
    "last_conv_layer",
    "montage",
    "prediction_report",
    "window_limits",
]
