"""A failed write leaves the old file untouched and no temporary file behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from lunglib.io.atomic import atomic_path, write_text_atomic


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
