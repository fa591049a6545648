"""The course's default settings, in one validated place.

The original project proposal kept its settings as attributes of one object; lunglib keeps the
same five, with the same meaning, in the :class:`Settings` dataclass:

======================  ==============  ==================================================
proposal                ``Settings.``   meaning
======================  ==============  ==================================================
``self.size``           ``size``        in-plane pixels of the model input (size x size)
``self.NoSlices``       ``n_slices``    slices per volume after preprocessing
``self.dataDirectory``  ``data_dir``    folder with one sub-folder of DICOM per patient
``self.labels``         ``labels``      labels CSV (an id and a label column) or a mapping
``Visualize``           ``visualize``   draw figures while running
======================  ==============  ==================================================

plus ``seed`` (every random choice) and ``cache_dir`` (where prepared volumes are kept).

Values come from keyword arguments, from ``LUNGLIB_<NAME>`` environment variables
(``LUNGLIB_SIZE=96``, ``LUNGLIB_N_SLICES``, ``LUNGLIB_DATA_DIR``, ``LUNGLIB_LABELS``,
``LUNGLIB_VISUALIZE``, ``LUNGLIB_SEED``, ``LUNGLIB_CACHE_DIR``; :meth:`Settings.from_env`), or
from a papermill parameters dict (:meth:`Settings.from_params`, which ignores the notebook's
other parameters). Every value is checked when the settings are made: a bad one raises a
``ValueError`` that names it and says what is expected. The course notebooks leave ``size`` and
``n_slices`` (and ``data_dir``, ``labels``) unset unless given, so the variables reach them; their
``seed`` and ``visualize`` are notebook parameters.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

ID_COLUMNS = ("id", "patient_id", "patient", "case", "case_id", "seriesuid")
LABEL_COLUMNS = ("cancer", "label", "malignant", "class", "y")


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory, for reprs and printouts.

    Notebooks print datasets and caches; an absolute path would put the folder layout of the
    machine that ran them into every committed output.
    """
    return os.path.relpath(Path(path).absolute())


def project_root() -> Path:
    """The repository root when lunglib runs from a checkout, else ``~/.lunglib``."""
    here = Path(__file__).resolve().parents[1]
    if (here / "pyproject.toml").exists():
        return here
    return Path.home() / ".lunglib"


def default_data_root() -> Path:
    """Where user data and caches live: ``$LUNGLIB_HOME`` or ``<project root>/data``."""
    env = os.environ.get("LUNGLIB_HOME")
    return Path(env) if env else project_root() / "data"


def _label_columns(header: list[str]) -> tuple[str, str] | None:
    lowered = {h.strip().lower(): h for h in header}
    id_col = next((lowered[c] for c in ID_COLUMNS if c in lowered), None)
    label_col = next((lowered[c] for c in LABEL_COLUMNS if c in lowered), None)
    if id_col is None or label_col is None:
        return None
    return id_col, label_col


def read_labels(path: str | os.PathLike) -> dict[str, str]:
    """Read a labels CSV into ``{id: label}``.

    The id column may be called any of ``id, patient_id, patient, case, case_id, seriesuid`` and
    the label column any of ``cancer, label, malignant, class, y``.

    Raises
    ------
    ValueError
        When the file is missing or empty, lacks an id or a label column, or repeats an id.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"labels file {path} does not exist")
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's BOM
        reader = csv.DictReader(handle)
        columns = _label_columns(reader.fieldnames or [])
        if columns is None:
            raise ValueError(
                f"labels file {path}: needs an id column (one of {', '.join(ID_COLUMNS)}) and a "
                f"label column (one of {', '.join(LABEL_COLUMNS)}); found {reader.fieldnames}"
            )
        id_col, label_col = columns
        labels: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            key = (row.get(id_col) or "").strip()
            if not key:
                raise ValueError(f"labels file {path}, line {line}: empty id")
            if key in labels:
                raise ValueError(f"labels file {path}, line {line}: id {key!r} appears twice")
            labels[key] = (row.get(label_col) or "").strip()
    if not labels:
        raise ValueError(f"labels file {path}: has a header but no rows")
    return labels


def _coerce_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _coerce_int(name: str, value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        number = int(str(value)) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return number


@dataclass(frozen=True)
class Settings:
    """Default settings of the course (the proposal's ``size``, ``NoSlices``, ...).

    Parameters
    ----------
    size : int, default 64
        In-plane pixels of the model input (proposal: ``self.size``).
    n_slices : int, default 32
        Slices per prepared volume (proposal: ``self.NoSlices``).
    data_dir : path-like or None
        Folder with one sub-folder per patient (proposal: ``self.dataDirectory``). ``None``
        means the embedded synthetic cohort under ``data/synthetic``.
    labels : path-like, mapping or None
        Labels CSV with an id and a label column, or a ``{id: label}`` mapping
        (proposal: ``self.labels``). ``None`` means ``<data_dir>/labels.csv`` when present.
    visualize : bool, default True
        Draw figures while running (proposal: ``Visualize``).
    seed : int, default 42
        Seed for every random choice.
    cache_dir : path-like or None
        Where prepared volumes are cached; ``None`` means ``data/cache``.
    """

    size: int = 64
    n_slices: int = 32
    data_dir: Path | None = None
    labels: Path | Mapping[str, object] | None = None
    visualize: bool = True
    seed: int = 42
    cache_dir: Path | None = field(default=None)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: normalise once, here
        set_(self, "size", _coerce_int("size", self.size))
        set_(self, "n_slices", _coerce_int("n_slices", self.n_slices))
        set_(self, "seed", _coerce_int("seed", self.seed))
        set_(self, "visualize", _coerce_bool("visualize", self.visualize))
        if self.size <= 0:
            raise ValueError(f"size must be a positive number of pixels, got {self.size}")
        if self.n_slices <= 0:
            raise ValueError(f"n_slices must be a positive number of slices, got {self.n_slices}")
        if self.seed < 0:
            raise ValueError(f"seed must be zero or positive, got {self.seed}")
        if self.data_dir is not None and str(self.data_dir) != "":
            data_dir = Path(self.data_dir).expanduser()
            if not data_dir.is_dir():
                raise ValueError(
                    f"data_dir {data_dir} does not exist or is not a folder; give the folder "
                    "that holds one sub-folder per patient, or leave it empty for the synthetic "
                    "cohort"
                )
            set_(self, "data_dir", data_dir)
        else:
            set_(self, "data_dir", None)
        if isinstance(self.labels, Mapping):
            set_(self, "labels", dict(self.labels))
        elif self.labels is not None and str(self.labels) != "":
            labels_path = Path(self.labels).expanduser()
            read_labels(labels_path)  # validates columns now, not halfway through a run
            set_(self, "labels", labels_path)
        else:
            set_(self, "labels", None)
        cache = Path(self.cache_dir).expanduser() if self.cache_dir else None
        set_(self, "cache_dir", cache or default_data_root() / "cache")

    @property
    def resolved_data_dir(self) -> Path:
        """``data_dir``, or the synthetic cohort's folder when none was given."""
        return self.data_dir or default_data_root() / "synthetic"

    def label_map(self) -> dict[str, str]:
        """Labels as ``{id: label}``; empty when there are none."""
        if isinstance(self.labels, dict):
            return {str(k): str(v) for k, v in self.labels.items()}
        if isinstance(self.labels, Path):
            return read_labels(self.labels)
        default = self.resolved_data_dir / "labels.csv"
        return read_labels(default) if default.is_file() else {}

    def replace(self, **changes: object) -> Settings:
        """A copy with some values changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``LUNGLIB_<NAME>`` variables, then keyword overrides on top."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            key = f"LUNGLIB_{f.name.upper()}"
            if key in environ:
                values[f.name] = environ[key]
        from_environment = dict(values)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValueError as exc:
            used = {k: v for k, v in from_environment.items() if k not in overrides}
            if not used:
                raise
            where = ", ".join(f"LUNGLIB_{k.upper()}={v!r}" for k, v in used.items())
            raise ValueError(f"{exc} (environment: {where})") from None

    @classmethod
    def from_params(cls, params: Mapping[str, object], use_env: bool = True) -> Settings:
        """Settings from a papermill parameters dict; keys that are not settings are ignored."""
        names = {f.name for f in fields(cls)}
        chosen = {k: v for k, v in params.items() if k in names and v not in (None, "")}
        return cls.from_env(**chosen) if use_env else cls(**chosen)
