"""Atomic file writes: a file is either its old self or complete, never half written.

Every writer in lunglib goes through :func:`atomic_path`: write to a temporary file beside the
target, then :func:`os.replace` it into place (atomic on POSIX and Windows, and within one folder
of a network file system).

Temporary names are ``<name>.<host>.<random>.tmp`` (:func:`create_temporary`), created with
``O_EXCL`` so that no two writers ever share one -- not two processes of one host, and not two
hosts that write into one shared folder, where process ids collide. The host part is there for
a person looking at the folder; nothing parses it.

A temporary that outlives its writer (the process was killed) is never read, since only
complete files are renamed into place. It is removed by age (:func:`remove_stale_temporaries`),
never by asking whether the process that made it is alive: a process id means nothing on
another host sharing the disk, so a live writer elsewhere would look dead, and a dead one's id
may have been reused here.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

#: Globs that match lunglib's temporary files (with and without a kept suffix).
TEMPORARY_GLOBS = ("*.tmp", "*.tmp.*")


def host_tag() -> str:
    """This host's name as a short, file-name-safe tag (``[A-Za-z0-9-]``, at most 32 chars)."""
    tag = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-")
    return tag[:32] or "host"


def create_temporary(path: str | os.PathLike, ending: str = "", mode: int = 0o666) -> Path:
    """Create an empty temporary file beside ``path`` whose name no other writer can hold.

    Parameters
    ----------
    path : path-like
        The file the temporary will become; its folder must exist.
    ending : str, default ""
        Appended after ``.tmp`` (``.nii.gz``), for writers that choose the format from the name.
    mode : int, default 0o666
        Permissions before the umask (``0o600`` for a secret). Unlike :func:`tempfile.mkstemp`,
        the default keeps the permissions an ordinary file gets, so the renamed file is readable
        by whoever could read the folder's other files.

    Returns
    -------
    Path
        ``<name>.<host>.<16 hex digits>.tmp<ending>``, created exclusively (``O_EXCL``).
    """
    path = Path(path)
    for _ in range(100):
        tmp = path.with_name(f"{path.name}.{host_tag()}.{secrets.token_hex(8)}.tmp{ending}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        except FileExistsError:  # 64 random bits: only an adversary gets here twice
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: could not create a unique temporary file for "
                          f"{path.name} (100 names taken)")


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

    Notes
    -----
    The temporary exists (empty) when the block starts: writers that open it by name overwrite
    it. It is removed when the block fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temporary(path, "".join(path.suffixes) if keep_suffix else "")
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


def remove_stale_temporaries(folder: str | os.PathLike, older_than: float,
                             globs: Iterable[str] = TEMPORARY_GLOBS) -> int:
    """Delete the temporary files in ``folder`` last modified ``older_than`` seconds ago or more.

    A writer fills its temporary in one go and renames it at once, so a temporary that has not
    changed for long belongs to a writer that was killed. Choose ``older_than`` well above the
    longest single write and the clock difference between the hosts sharing the folder; ``0``
    removes every temporary, which is right only when nothing else writes into ``folder``.

    Returns
    -------
    int
        How many files were removed.
    """
    now = time.time()
    removed = 0
    for pattern in globs:
        for tmp in Path(folder).glob(pattern):
            try:
                if now - tmp.stat().st_mtime >= older_than:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:  # renamed or removed by its writer meanwhile
                continue
    return removed
