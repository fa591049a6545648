"""Atomic file writes: a file is either its old self or complete, never half written.

Every writer in lunglib goes through :func:`atomic_path`: write to ``<name>.<pid>.tmp`` beside the
target, then :func:`os.replace` it into place (atomic on POSIX and Windows). The process id keeps
two runs on one folder out of each other's temporary files, and lets a later run recognise the
leftovers of a killed one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    Parameters
    ----------
    path : path-like
        The final file. Its folder is created when missing.
    keep_suffix : bool, default False
        End the temporary name with ``path``'s suffixes too (``.nii.gz``, ``.keras``), for
        writers that choose the format from the file name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = "".join(path.suffixes) if keep_suffix else ""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp{ending}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))
