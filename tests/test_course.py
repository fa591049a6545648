"""Notebook support: seeding repeats, native stderr noise stays out, datasets open by name."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lunglib.course import course_settings, open_course_dataset, setup_notebook


def test_setup_notebook_seeds_numpy_and_the_returned_generator() -> None:
    first = setup_notebook(7)
    a = (np.random.rand(3), first.random(3))
    second = setup_notebook(7)
    b = (np.random.rand(3), second.random(3))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(setup_notebook(8).random(3), b[1])


def test_native_stderr_is_silenced_only_inside_the_block() -> None:
    code = (
        "import os\n"
        "from lunglib.course import native_stderr_silenced\n"
        "with native_stderr_silenced():\n"
        "    os.write(2, b'hidden native noise\\n')\n"
        "os.write(2, b'visible after\\n')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert "hidden native noise" not in done.stderr
    assert "visible after" in done.stderr


def test_unknown_and_patch_datasets_are_explained(tmp_path) -> None:
    settings = course_settings(data_dir=tmp_path)
    with pytest.raises(ValueError, match="one of synthetic"):
        open_course_dataset("kaggle", settings)
    with pytest.raises(ValueError, match="load_patch_set"):
        open_course_dataset("patches", settings)


def _cohort(n: int = 80) -> tuple[list[str], list[int]]:
    """Patient ids and labels shaped like the default synthetic cohort (half of them cancer)."""
    ids = [f"synth-{i:04d}" for i in range(1, n + 1)]
    return ids, [i % 2 for i in range(n)]


def test_the_split_02_saves_is_the_split_04_uses(tmp_path) -> None:
    """02 draws from the cache's sorted ids, 04 from its training arrays (another order):
    the same patients either way, whether 04 reads 02's file or runs alone."""
    from lunglib.course import SPLIT_FILE, course_split, saved_or_course_split

    ids, labels = _cohort()
    in_02 = course_split(ids, labels, seed=42)
    assert (len(in_02.train), len(in_02.val), len(in_02.test)) == (48, 16, 16)
    order = np.random.default_rng(0).permutation(len(ids))
    groups_04, y_04 = [ids[i] for i in order], [labels[i] for i in order]

    alone, source = saved_or_course_split(tmp_path / SPLIT_FILE, groups_04, y_04, seed=42)
    assert "drawn here" in source
    in_02.save(tmp_path / SPLIT_FILE)
    read, source = saved_or_course_split(tmp_path / SPLIT_FILE, groups_04, y_04, seed=42)
    assert "read from" in source
    for name in ("train", "val", "test"):
        assert getattr(alone, name) == getattr(in_02, name) == getattr(read, name)
    assert course_split(ids, labels, seed=7).test != in_02.test  # the seed matters


def test_a_saved_split_that_does_not_fit_is_not_used(tmp_path) -> None:
    from lunglib.course import course_split, saved_or_course_split

    ids, labels = _cohort()
    path = tmp_path / "split.json"
    course_split(ids, labels, seed=42, val_fraction=0.15, test_fraction=0.15).save(path)
    split, source = saved_or_course_split(path, ids, labels, seed=42)
    assert "other settings" in source and len(split.val) == 16  # 02's old 15 % split: redrawn

    course_split(ids[:40], labels[:40], seed=42).save(path)
    split, source = saved_or_course_split(path, ids, labels, seed=42)
    assert "lacks 40" in source and len(split.train) == 48

    course_split(ids, labels, seed=42).save(path)  # more patients than asked for: restricted
    split, source = saved_or_course_split(path, ids[:60], labels[:60], seed=42)
    assert "read from" in source
    assert set(split.train) | set(split.val) | set(split.test) == set(ids[:60])
    assert set(split.test) <= set(course_split(ids, labels, seed=42).test)
