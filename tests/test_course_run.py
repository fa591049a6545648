"""One end-to-end `python -m lunglib run` with tiny parameters: every notebook, one run folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lunglib.pipeline import course_notebooks

TINY = {
    "size": 32, "n_slices": 16, "epochs": 2, "patience": 1, "compare_epochs": 1,
    "random_trials": 1, "n_patients": 8, "n_boot": 50, "n_failures": 1,
}


@pytest.mark.slow
def test_the_whole_course_runs_with_tiny_parameters(tmp_path: Path) -> None:
    notebooks = course_notebooks()
    if len(notebooks) < 7:
        pytest.skip(f"only {len(notebooks)} course notebooks present")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lunglib", "run", "--output", str(out)]
    for key, value in TINY.items():
        command += ["-p", f"{key}={value}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "all 7 notebooks ran" in done.stdout
    assert sorted(p.name for p in out.glob("*.ipynb")) == [p.name for p in notebooks]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_patients"] >= 1
    assert 0.0 <= metrics["classification"]["roc_auc"] <= 1.0
    assert (out / "report" / "index.html").is_file()
    # the inputs really were the tiny ones: the classifier bundle records them
    classifier = json.loads((out / "classifier.json").read_text())
    assert (classifier["size"], classifier["n_slices"]) == (32, 16)
    # no synthetic patient name in anything the run wrote
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in {".ipynb", ".html", ".json", ".csv"}:
            assert "SYNTHETIC^DO-NOT-USE" not in path.read_text(errors="ignore"), path
