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
