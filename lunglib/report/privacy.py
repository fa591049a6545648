"""Nothing on a report page may name a patient or the folder layout of the machine that built it.

Values copied from a run's inputs (papermill parameters, configurations) pass through
:func:`public_text`: patient identifiers of the public collections
(:data:`lunglib.datasets.provenance.PATIENT_ID_PATTERNS`) become ``[patient id]``, and an absolute
path keeps only its last part (``.../LIDC-IDRI``), since the run folder may be read on another
machine and the path says nothing there.
"""

from __future__ import annotations

import re

from lunglib.datasets.provenance import PATIENT_ID_PATTERNS

REDACTED = "[patient id]"
_IDS = re.compile("|".join(f"(?:{p})" for p in PATIENT_ID_PATTERNS))
_ABSOLUTE = re.compile(r"^(?:/|~|[A-Za-z]:[\\/]|\\\\)")


def redact_ids(text: str) -> str:
    """``text`` with every patient identifier of a known collection replaced by ``[patient id]``."""
    return _IDS.sub(REDACTED, text)


def contains_patient_id(text: str) -> bool:
    """Whether ``text`` holds an identifier of the form a public collection gives its patients."""
    return _IDS.search(text) is not None


def short_path(text: str) -> str:
    """An absolute path as ``.../<last part>``; anything else unchanged."""
    if not _ABSOLUTE.match(text):
        return text
    last = re.split(r"[\\/]+", text.rstrip("/\\"))[-1]
    return f".../{last}" if last else "..."


def public_text(value: object) -> str:
    """A value from a run's inputs as it may appear in the report (no id, no absolute path)."""
    if isinstance(value, (list, tuple)):
        inner = ", ".join(public_text(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    text = value if isinstance(value, str) else repr(value)
    return redact_ids(short_path(text))
