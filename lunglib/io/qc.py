"""Quality-control findings: what went wrong (or looked odd) with an input, recorded, not hidden.

Every loader and batch step in lunglib returns or records :class:`QCFinding` objects instead of
printing warnings, so that a batch over hundreds of scans can end with one table that says which
scans were used, which were repaired and which were skipped, and why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class QCFinding:
    """One observation about an input.

    Parameters
    ----------
    code : str
        Short machine-readable tag, e.g. ``"missing_slices"`` or ``"unreadable_file"``.
    message : str
        A sentence for a person: what was found and what lunglib did about it.
    severity : {"info", "warning", "error"}
        ``info``: normal and handled; ``warning``: repaired or skipped, results still usable;
        ``error``: the input could not be used.
    file : str or None
        The file concerned, when there is one.
    """

    code: str
    message: str
    severity: Severity = "warning"
    file: str | None = None

    def __post_init__(self) -> None:
        if self.severity not in ("info", "warning", "error"):
            raise ValueError(
                f"QCFinding severity must be 'info', 'warning' or 'error', got {self.severity!r}"
            )

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def __str__(self) -> str:
        where = f" [{self.file}]" if self.file else ""
        return f"{self.severity}: {self.code}: {self.message}{where}"


def summarize(findings: list[QCFinding]) -> str:
    """One line per finding, or ``"ok"`` when there are none worth a warning."""
    worth = [f for f in findings if f.severity != "info"]
    if not worth:
        return "ok"
    return "; ".join(f"{f.code}: {f.message}" for f in worth)
