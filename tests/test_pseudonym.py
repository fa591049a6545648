"""Patient keys are a keyed hash under a secret of the installation, not a guessable hash."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from lunglib.io import pseudonym
from lunglib.io.pseudonym import KEY_ENV, KEY_FILE_ENV, pseudonymize

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def key_file(tmp_path, monkeypatch) -> Path:
    """A fresh installation: no key yet, the key file in a temporary home."""
    path = tmp_path / "home" / ".config" / "lunglib" / "pseudonym.key"
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    return path


def test_a_short_hospital_id_cannot_be_recovered_by_hashing_candidates(key_file):
    # an attacker who knows the scheme but not the secret hashes every 6-digit MRN, with and
    # without the old public salt: none of them gives the key
    key = pseudonymize("MRN-004217")
    assert key.startswith("pt-") and len(key) == 3 + 16 and int(key[3:], 16) >= 0
    guesses = {f"MRN-{n:06d}" for n in range(4000, 4400)}
    for guess in guesses:
        for text in (guess, f"lunglib:{guess}"):
            digest = hashlib.sha256(text.encode()).hexdigest()
            assert key[3:] not in (digest[:10], digest[:16])
    # with the secret, it is exactly HMAC-SHA256 of the id
    secret = key_file.read_text().strip().encode()
    assert key[3:] == hmac.new(secret, b"MRN-004217", hashlib.sha256).hexdigest()[:16]


def test_the_secret_is_made_once_private_and_outside_the_repository(key_file):
    assert not key_file.exists()
    first = pseudonymize("LIDC-IDRI-0001")
    assert key_file.is_file() and len(key_file.read_text().strip()) == 64
    if os.name == "posix":
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert pseudonymize("LIDC-IDRI-0001") == first  # stable: the file is reused
    assert pseudonymize("LIDC-IDRI-0002") != first
    assert ROOT not in key_file.parents
    assert not list(key_file.parent.glob("*.tmp"))


def test_the_default_key_file_is_in_the_users_config_folder(monkeypatch):
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    assert pseudonym.key_file() == Path.home() / ".config" / "lunglib" / "pseudonym.key"


def test_another_secret_gives_other_keys_and_a_given_one_is_used(key_file, monkeypatch):
    mine = pseudonymize("12345")
    monkeypatch.setenv(KEY_ENV, "shared between our two sites")
    shared = pseudonymize("12345")
    assert shared != mine
    expected = hmac.new(b"shared between our two sites", b"12345", hashlib.sha256).hexdigest()
    assert shared == f"pt-{expected[:16]}"


def test_an_empty_key_file_is_refused_with_what_to_do(key_file):
    key_file.parent.mkdir(parents=True)
    key_file.write_text("")
    with pytest.raises(ValueError, match="delete it to make a new key"):
        pseudonymize("12345")
