"""Committed notebooks carry no absolute path of the machine that ran them and no patient name.

A saved output such as ``SyntheticDataset(root='/home/me/lunglib/data/synthetic')`` tells every
reader where the author's files were, and breaks nothing, so nothing else would catch it. The
synthetic cohort writes ``SYNTHETIC^DO-NOT-USE`` as every patient's DICOM name: seeing it in a
notebook means a DICOM header reached an output, which a real patient's name would too.

Every notebook in ``notebooks/`` and ``docs/`` is read as JSON and every string in it is
searched -- sources, outputs, tracebacks, notebook and cell metadata (papermill records paths
there) -- except the base64 data of images, which is not text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("docs/**/*.ipynb")])

#: An absolute path of a machine: POSIX home, work and temporary folders, macOS and Windows
#: user folders. A slash preceded by a word character, a dot or ``~`` is part of a relative
#: path or a URL (``../data``, ``https://host/home/``) and does not count.
ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~/-])/(?:work|home|root|tmp|Users|private/var|mnt/[a-z])/"
    r"|\b[A-Za-z]:(?:\\\\|\\|/)Users\b",
)
PATIENT_NAME_MARKER = "SYNTHETIC^DO-NOT-USE"


def strings(node: object, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string in a notebook's JSON with its location; image data is skipped."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from strings(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("image/") and key != "image/svg+xml":
                continue  # base64: '/' is one of its letters, so it would match by chance
            yield from strings(value, f"{where}.{key}")


def findings(notebook: Path) -> list[str]:
    """``"<location>: <snippet>"`` for each absolute path or patient-name marker found."""
    found = []
    for where, text in strings(json.loads(notebook.read_text(encoding="utf-8"))):
        for match in ABSOLUTE_PATH.finditer(text):
            found.append(f"{where}: ...{text[max(0, match.start() - 40):match.end() + 40]!r}")
        if PATIENT_NAME_MARKER in text:
            found.append(f"{where}: patient name marker {PATIENT_NAME_MARKER!r}")
    return found


def test_every_course_notebook_is_scanned():
    names = {p.name for p in NOTEBOOKS}
    assert {f"0{k}" for k in range(1, 8)} <= {name[:2] for name in names}, names


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_has_no_machine_paths_or_patient_names(notebook: Path):
    found = findings(notebook)
    assert not found, f"{notebook.relative_to(ROOT)}:\n" + "\n".join(found[:20])


@pytest.mark.parametrize("text", [
    "SyntheticDataset(root='/work/main/data/synthetic', patients=80)",
    "CacheIndex('/home/student/lunglib/data/cache/855b', ok=80)",
    "saved to /tmp/tmpab12/model.keras",
    "File /root/.cache/x.py:3",
    "C:\\Users\\me\\lunglib",
    "C:\\\\Users\\\\me",  # as a repr prints it
    "/Users/me/lunglib",
    "Name: SYNTHETIC^DO-NOT-USE",
])
def test_the_scan_finds_paths_and_names(tmp_path: Path, text: str):
    notebook = tmp_path / "x.ipynb"
    cell = {"cell_type": "code", "source": "", "metadata": {}, "execution_count": 1,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": [text]}]}
    notebook.write_text(json.dumps({"cells": [cell], "metadata": {}}), encoding="utf-8")
    assert findings(notebook)


@pytest.mark.parametrize("text", [
    "SyntheticDataset(root='../data/synthetic', patients=80)",
    "see https://example.org/home/docs and data/cache/tmp/x",
    "~/work/x is a student's own folder",
])
def test_relative_paths_and_urls_pass(tmp_path: Path, text: str):
    notebook = tmp_path / "x.ipynb"
    cell = {"cell_type": "markdown", "source": [text], "metadata": {}}
    image = {"output_type": "display_data", "metadata": {},
             "data": {"image/png": "iVBOR/work/tmp/home/x"}}  # base64 is not searched
    code = {"cell_type": "code", "source": "", "metadata": {}, "execution_count": 1,
            "outputs": [image]}
    notebook.write_text(json.dumps({"cells": [cell, code], "metadata": {}}), encoding="utf-8")
    assert findings(notebook) == []
