"""Pseudonymous patient keys: a keyed hash (HMAC-SHA256) under a secret of this installation.

A plain hash of a PatientID is not a pseudonym: hospital IDs are short (an MRN has a handful of
digits), so anyone can hash every possible ID and look the key up -- with a public salt, an
MRN-style ID came back from its key in seconds. :func:`pseudonymize` therefore uses HMAC-SHA256
(:mod:`hmac`, the standard library's keyed hash) with a secret key that only this installation
holds, and keeps 16 hex digits (64 bits), so that keys do not collide even in a dataset of a
million patients (probability about 3e-8).

The secret, in order of precedence:

1. ``$LUNGLIB_PSEUDONYM_KEY`` -- the key itself (any text; share it between machines that must
   give the same patient the same key);
2. the file ``$LUNGLIB_PSEUDONYM_KEY_FILE``, by default ``~/.config/lunglib/pseudonym.key`` --
   outside the repository and every output folder. When it does not exist, 32 random bytes are
   written there on first use (readable by the owner only).

Keep the key private: with it, and a list of candidate IDs, the keys can be matched again.
Delete or change it and the same patients get new keys.
"""

from __future__ import annotations

import hmac
import os
import secrets
from hashlib import sha256
from pathlib import Path

from lunglib.io.atomic import create_temporary

KEY_ENV = "LUNGLIB_PSEUDONYM_KEY"
KEY_FILE_ENV = "LUNGLIB_PSEUDONYM_KEY_FILE"
KEY_DIGITS = 16


def key_file() -> Path:
    """Where this installation's secret is kept (``$LUNGLIB_PSEUDONYM_KEY_FILE`` or
    ``~/.config/lunglib/pseudonym.key``)."""
    given = os.environ.get(KEY_FILE_ENV)
    return Path(given).expanduser() if given else Path.home() / ".config" / "lunglib" / (
        "pseudonym.key")


def _read_or_create(path: Path) -> bytes:
    """The key in ``path``; a new random one written there first if there is none.

    Created under a temporary name (:func:`~lunglib.io.atomic.create_temporary`: unique across
    processes and hosts) and linked into place, so that processes starting together (cache
    workers, on one host or several sharing a home folder) all end up with the one key that won,
    never a half-written file.
    """
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        # a name no other process or host can hold, private (0o600) before the key is written
        tmp = create_temporary(path.with_name(f".{path.name}"), mode=0o600)
        with open(tmp, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process was first: use its key
            pass
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"{path}: the pseudonym key file is empty; delete it to make a new key")
    return key.encode()


def pseudonym_key() -> bytes:
    """This installation's secret for :func:`pseudonymize` (see the module docstring)."""
    given = os.environ.get(KEY_ENV)
    if given:
        return given.encode()
    return _read_or_create(key_file())


def pseudonymize(patient_id: str) -> str:
    """Stable pseudonymous key of a patient identifier: ``pt-`` + 16 hex digits of
    HMAC-SHA256(secret, identifier). Without the secret the identifier cannot be recovered by
    hashing candidate IDs."""
    digest = hmac.new(pseudonym_key(), str(patient_id).encode(), sha256).hexdigest()
    return f"pt-{digest[:KEY_DIGITS]}"
