"""How the report writes numbers: one function per kind of value, used by the page and its tests.

A metric is shown to three decimals (millimetres to two, seconds to one), never to the 17 digits a
float prints by itself; the browser test compares the page with :func:`format_metric` of every
value in ``metrics.json``, so the page and the check cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from lunglib.report.privacy import public_text

MISSING = "n/a"
"""What a value that does not exist (None, NaN) is shown as."""

DEGENERATE_NOTE = "not informative: every resample gave the same value"
"""The flag beside a bootstrap interval of zero width."""


def flatten(values: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Nested mappings as one level of dotted keys (``classification.ci95.roc_auc``).

    Lists stay whole: a confidence interval ``[low, high]`` is one value.
    """
    flat: dict[str, object] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _decimals(key: str) -> int:
    leaf = key.rsplit(".", 1)[-1].lower()
    if leaf.endswith("_mm") or "(mm)" in leaf or leaf.endswith(" mm"):
        return 2
    if leaf in ("seconds", "reference_seconds") or leaf.endswith("_seconds"):
        return 3 if leaf == "reference_seconds" else 1
    return 3


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_number(value: object, decimals: int = 3) -> str:
    """A number to ``decimals`` places (integers as they are); None and NaN as :data:`MISSING`;
    text as :func:`~lunglib.report.privacy.public_text` shows it."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return MISSING if not math.isfinite(value) else f"{value:.{decimals}f}"
    return public_text(value)


def format_interval(low: object, high: object, decimals: int = 3) -> str:
    """``[low, high]`` as ``0.690 to 1.000``."""
    return f"{format_number(low, decimals)} to {format_number(high, decimals)}"


def is_interval(value: object) -> bool:
    """A two-number list, as ``metrics.json`` stores a confidence interval."""
    return (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
            and all(v is None or _is_number(v) for v in value))


def format_metric(key: str, value: object) -> str:
    """Any value of ``metrics.json`` (by its dotted key) as the report writes it."""
    decimals = _decimals(key)
    if is_interval(value):
        return format_interval(value[0], value[1], decimals)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(format_number(v, decimals) for v in value) or "none"
    return format_number(value, decimals)


def is_degenerate(low: object, high: object) -> bool:
    """A bootstrap interval that says nothing: zero width (every resample gave one value)."""
    return (_is_number(low) and _is_number(high) and math.isfinite(low) and math.isfinite(high)
            and math.isclose(float(low), float(high), rel_tol=0.0, abs_tol=1e-12))


def degenerate_metrics(classification: Mapping[str, object]) -> set[str]:
    """Metric names whose interval is not informative.

    ``classification["ci_degenerate"]`` (written by lunglib.evaluation) when present, plus every
    interval of zero width found in ``classification["ci95"]`` -- an older ``metrics.json`` has
    no list, and a zero-width interval is never shown as certainty either way.
    """
    named = set(classification.get("ci_degenerate") or [])
    intervals = classification.get("ci95") or {}
    found = {name for name, ci in intervals.items() if is_interval(ci) and is_degenerate(*ci)}
    return named | found


def format_setting(value: object) -> str:
    """A setting or hyperparameter: a float to 4 significant digits (a learning rate of
    ``0.0013729549758241346`` is ``0.001373``), anything else as the run gave it."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return public_text(value)
