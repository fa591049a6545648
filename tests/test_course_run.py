"""One end-to-end `python -m lunglib run` with tiny parameters: every notebook, one run folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _browser import start_chromium
from _report_checks import browser_problems, page_problems

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
    assert "speed reference" in done.stdout and "report: " in done.stdout
    assert sorted(p.name for p in out.glob("*.ipynb")) == [p.name for p in notebooks]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_patients"] >= 1
    assert 0.0 <= metrics["classification"]["roc_auc"] <= 1.0
    index = out / "report" / "index.html"
    assert index.is_file()
    # the run report, as a reader sees it: the same checks as tests/test_report.py's, on the
    # real tiny run (every figure drawn, every metric as formatted, no path or id)
    machine_paths = [p for p in (str(out.resolve()), str(tmp_path.resolve()), str(Path.home()))
                     if len(p) > 1]
    assert page_problems(index, metrics, forbidden=machine_paths, min_figures=4) == []
    assert "not available: run notebook" not in index.read_text(), "a contract file is missing"
    assert json.loads((out / "run.json").read_text())["seconds"].keys() == {
        p.name for p in notebooks}
    # the inputs really were the tiny ones: the classifier bundle records them
    classifier = json.loads((out / "classifier.json").read_text())
    assert (classifier["size"], classifier["n_slices"]) == (32, 16)
    # no synthetic patient name in anything the run wrote
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in {".ipynb", ".html", ".json", ".csv"}:
            assert "SYNTHETIC^DO-NOT-USE" not in path.read_text(errors="ignore"), path
    # last, as it may skip where no browser is installed: the page in headless Chromium
    browser = start_chromium()
    try:
        assert browser_problems(browser, index, metrics, forbidden=machine_paths,
                                min_figures=4) == []
    finally:
        browser.quit()
        shutil.rmtree(browser._lunglib_profile, ignore_errors=True)
