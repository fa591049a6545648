"""A failed write leaves the old file untouched and no temporary file behind; temporary names
are unique across writers and hosts, and stale ones are told by age."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lunglib.io.atomic import atomic_path, remove_stale_temporaries, write_text_atomic


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "metrics.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_keep_suffix_lets_writers_pick_the_format_from_the_name(tmp_path: Path) -> None:
    target = tmp_path / "mask.nii.gz"
    with atomic_path(target, keep_suffix=True) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"


def test_temporary_names_are_unique_per_writer_whatever_the_host_or_pid(tmp_path: Path,
                                                                      monkeypatch) -> None:
    # two hosts sharing a folder can run writers with one pid: the name must not rest on it
    import os
    import socket

    monkeypatch.setattr(os, "getpid", lambda: 4242)
    target = tmp_path / "volume.npz"
    monkeypatch.setattr(socket, "gethostname", lambda: "node-a.cluster.example")
    with atomic_path(target) as first:
        monkeypatch.setattr(socket, "gethostname", lambda: "node-b")
        with atomic_path(target) as second:
            with atomic_path(target) as third:  # same host, same pid, same target
                assert len({first, second, third}) == 3
                assert first.name.startswith("volume.npz.node-a-cluster-example.")
                assert second.name.startswith("volume.npz.node-b.")
                assert all(p.name.endswith(".tmp") and p.parent == tmp_path
                           for p in (first, second, third))
                third.write_text("third")
            second.write_text("second")
        assert target.read_text() == "second"
        first.write_text("first")
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume.npz"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_written_file_has_the_permissions_of_an_ordinary_file(tmp_path: Path) -> None:
    # unlike tempfile.mkstemp's 0o600: a shared cache must stay readable by its group
    import stat

    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "qc.csv", "id\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_stale_temporaries_are_told_by_age_never_by_process_id(tmp_path: Path) -> None:
    # a fresh temporary named after a pid that is dead here may be a live writer on another
    # host: it stays. One untouched for two hours goes; older_than=0 clears them all.
    import time

    fresh_dead_pid = tmp_path / "a.npz.999999999.tmp"  # the naming of lunglib before 2026-12
    fresh_other_host = tmp_path / "b.npz.node-b.0123456789abcdef.tmp"
    old = tmp_path / "c.npz.node-c.fedcba9876543210.tmp.nii.gz"
    keep = tmp_path / "c.npz"
    for path in (fresh_dead_pid, fresh_other_host, old, keep):
        path.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(keep, (two_hours_ago, two_hours_ago))
    assert remove_stale_temporaries(tmp_path, older_than=3600) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (fresh_dead_pid, fresh_other_host, keep))
    assert remove_stale_temporaries(tmp_path, older_than=0) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
