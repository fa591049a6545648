"""The run report: built from a small, consistent fake run folder, checked as people see it."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from _browser import chromium  # noqa: F401  (the fixture)
from _fake_run import write_fake_run
from _report_checks import browser_problems, image_problems, page_problems

from lunglib.cli import main
from lunglib.datasets import DATASETS, dataset_provenance
from lunglib.report import (
    NotARunFolderError,
    build_report,
    describe_machine,
    machine_speed_reference,
    read_run_folder,
    read_run_info,
    write_run_info,
)
from lunglib.report.formatting import DEGENERATE_NOTE, format_metric
from lunglib.report.privacy import REDACTED, contains_patient_id, public_text

FAKE_ID = "LIDC-IDRI-0042"


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    """A complete run folder whose first patient carries a real-looking id, and whose
    parameters hold an absolute path ending in an id; written once, copied by tests."""
    root = tmp_path_factory.mktemp("fake")
    return write_fake_run(root / "run", first_patient=FAKE_ID, notebooks=2, parameters={
        "data_dir": str(root / "data" / FAKE_ID), "labels": str(root / "labels.csv"),
        "size": 64, "learning_rate": 0.0013729549758241346, "cube": [10, 18, 18]})


@pytest.fixture(scope="module")
def built(fake_run) -> Path:
    return build_report(fake_run, notebooks=False)


@pytest.fixture
def run_copy(fake_run, tmp_path) -> Path:
    return Path(shutil.copytree(fake_run, tmp_path / "run"))


def _machine_paths(run: Path) -> list[str]:
    paths = (str(run.resolve()), str(run.resolve().parent), str(Path.home()))
    return [p for p in paths if len(p) > 1]  # a home of "/" says nothing


def test_run_info_records_the_machine_and_its_speed_reference(tmp_path: Path) -> None:
    seconds = machine_speed_reference(size=256, repeats=3)
    assert 0 < seconds < 5
    machine = describe_machine(reference_seconds=0.0831)
    assert machine["reference_seconds"] == 0.0831 and machine["cores"] >= 1
    assert isinstance(machine["gpus"], list) and machine["cpu"]
    info = {"lunglib_version": "0.1.0", "seconds": {"01_explore.ipynb": 12.5},
            "machine": machine}
    write_run_info(tmp_path, info)
    assert read_run_info(tmp_path) == info
    assert read_run_info(tmp_path / "elsewhere") is None


def test_page_shows_every_metric_as_formatted_and_nothing_to_17_digits(built, fake_run) -> None:
    assert page_problems(built, forbidden=_machine_paths(fake_run)) == []
    page = built.read_text()
    metrics = json.loads((fake_run / "metrics.json").read_text())
    c = metrics["classification"]
    row = re.search(r"<tr><td>ROC-AUC</td>(.*?)</tr>", page).group(1)
    assert f">{c['roc_auc']:.3f}<" in row
    assert f">{c['ci95']['roc_auc'][0]:.3f} to {c['ci95']['roc_auc'][1]:.3f}<" in row
    assert format_metric("classification.threshold", c["threshold"]) == f"{c['threshold']:.3f}"
    visible = re.sub(r"data:image/png;base64,[^'\"]+", "", page)
    assert not re.search(r"\d\.\d{7,}", visible), "a number printed to full float precision"
    for words in ("What was run", "Brier score", "HD95 (mm)", "NSD", "Chosen configuration",
                  "Grad-CAM", "speed reference", "synthetic chest-CT",
                  "0.001373"):  # a learning rate, to 4 significant digits
        assert words in page
    assert page.count("<img ") == 7  # ROC, PR, confusion, calibration, gallery, tuning, Grad-CAM


def test_every_figure_is_an_embedded_png_with_real_content(built) -> None:
    images = re.findall(r"src='data:image/png;base64,([^']+)'", built.read_text())
    assert len(images) == 7
    for number, data in enumerate(images, 1):
        assert image_problems(f"image {number}", base64.b64decode(data)) == []
    page = built.read_text()
    for remote in ("<script", "<link", "src='http", "src=\"http", "url(", "@import"):
        assert remote not in page, f"the page would load {remote!r} from outside itself"


@pytest.mark.parametrize("listed", [True, False], ids=["ci_degenerate listed", "detected"])
def test_zero_width_intervals_are_flagged_not_shown_as_certainty(tmp_path, listed) -> None:
    run = write_fake_run(tmp_path / "run", ci_degenerate_list=listed, notebooks=0)
    metrics = json.loads((run / "metrics.json").read_text())["classification"]
    degenerate = {m for m, (lo, hi) in metrics["ci95"].items() if lo == hi}
    assert degenerate == {"precision", "specificity"}  # 1.000 on every resample of 16 patients
    assert ("ci_degenerate" in metrics) == listed
    for part in ("predictions.csv", "segmentation_gallery.npz", "failures.npz",
                 "search_results.csv"):
        (run / part).unlink()  # figures are not what this test is about
    page = build_report(run, notebooks=False).read_text()
    rows = dict(re.findall(r"<tr><td>([^<]+)</td><td class='num' data-metric='classification"
                           r"\.[a-z_0-9]+'>[^<]*</td>(.*?)</tr>", page))
    assert DEGENERATE_NOTE in rows["precision (positive predictive value)"]
    assert DEGENERATE_NOTE in rows["specificity"]
    assert DEGENERATE_NOTE not in rows["accuracy"] and DEGENERATE_NOTE not in rows["ROC-AUC"]
    assert page.count(DEGENERATE_NOTE) == 2


def test_missing_parts_say_not_available_and_the_rest_still_shows(run_copy: Path) -> None:
    for part in ("predictions.csv", "search_results.csv", "best_config.json", "failures.npz",
                 "run.json"):
        (run_copy / part).unlink()
    (run_copy / "segmentation_gallery.npz").write_bytes(b"not a zip file")
    page = build_report(run_copy, notebooks=False).read_text()
    for line in ("not available: run notebook 07_evaluate (it writes predictions.csv)",
                 "not available: run notebook 05_tune (it writes search_results.csv)",
                 "not available: run notebook 05_tune (it writes best_config.json)",
                 "not available: run notebook 07_evaluate (it writes failures.npz)",
                 "not available: run the course with `lunglib run` (it writes run.json)",
                 "not available: segmentation_gallery.npz could not be read"):
        assert line in page, line
    assert page.count("<img ") == 0
    assert page_problems(page_path(run_copy), forbidden=_machine_paths(run_copy),
                         min_figures=0) == []


def page_path(run: Path) -> Path:
    return run / "report" / "index.html"


def test_a_run_folder_with_only_notebooks_gets_a_page(tmp_path: Path) -> None:
    run = write_fake_run(tmp_path / "run", notebooks=1)
    for part in run.iterdir():
        if part.is_file() and part.suffix != ".ipynb":
            part.unlink()
    page = build_report(run, notebooks=False).read_text()
    assert "01_explore.ipynb" in page
    assert "not available: run notebook 07_evaluate (it writes metrics.json)" in page
    assert "not available: run notebook 06_segment (it writes segmentation_levels.csv)" in page


def test_no_patient_id_and_no_absolute_path_reach_the_page(built, fake_run) -> None:
    assert FAKE_ID in (fake_run / "predictions.csv").read_text()
    assert FAKE_ID in (fake_run / "run.json").read_text()
    page = built.read_text()
    assert FAKE_ID not in page
    assert str(fake_run.resolve().parent) not in page
    assert ".../[patient id]" in page and ".../labels.csv" in page
    assert contains_patient_id(FAKE_ID) and not contains_patient_id(page)
    assert public_text("/data/Lung_Dx-A0002") == f".../{REDACTED}"


def test_the_checks_fail_on_a_blank_figure_and_a_missing_metric(built, fake_run, tmp_path):
    page = built.read_text()
    blank = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (400, 300), "white").save(blank, format="PNG")
    first = re.search(r"data:image/png;base64,[^']+", page).group(0)
    broken = tmp_path / "report" / "index.html"
    broken.parent.mkdir()
    broken.write_text(page.replace(first, "data:image/png;base64,"
                                   + base64.b64encode(blank.getvalue()).decode(), 1))
    metrics = json.loads((fake_run / "metrics.json").read_text())
    problems = page_problems(broken, metrics)
    assert problems == ["image 1 is blank: 1 distinct colour(s), grey std 0.0"]
    without = re.sub(r"<td class='num' data-metric='classification\.f1'>[^<]*</td>", "<td></td>",
                     page)
    broken.write_text(without)
    f1 = format_metric("classification.f1", metrics["classification"]["f1"])
    assert page_problems(broken, metrics) == [
        f"metric classification.f1 ({f1}) is not on the page"]
    broken.write_text(page.replace("run folder <b>run</b>", f"run folder <b>{fake_run}</b>"))
    assert any("absolute path" in p or str(fake_run) in p
               for p in page_problems(broken, metrics, forbidden=[str(fake_run)]))


def test_notebook_pages_are_written_and_linked(run_copy: Path) -> None:
    for part in run_copy.iterdir():  # only the notebooks matter here
        if part.suffix in (".csv", ".npz"):
            part.unlink()
    index = build_report(run_copy)
    page = index.read_text()
    for name in ("01_explore", "02_preprocess"):
        assert (index.parent / f"{name}.html").is_file()
        assert f"<a href='{name}.html'>{name}.ipynb</a>" in page


def test_cli_rebuilds_the_report_and_names_a_folder_that_is_no_run(run_copy, tmp_path,
                                                                   capsys) -> None:
    assert main(["report", str(run_copy), "--no-notebooks"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(page_path(run_copy)))
    stray = tmp_path / "holiday-photos"
    stray.mkdir()
    assert main(["report", str(stray)]) == 2
    error = capsys.readouterr().err
    assert "holiday-photos is not a lunglib run folder" in error
    with pytest.raises(NotARunFolderError, match="does not exist"):
        read_run_folder(tmp_path / "missing")


def test_every_dataset_has_its_provenance_and_licence() -> None:
    for name in [*DATASETS, "patches"]:
        assert dataset_provenance(name) is not None, name
    assert "CC BY 3.0" in dataset_provenance("LIDC-IDRI").line
    assert "Armato" in dataset_provenance("lidc").line
    assert "CC BY 4.0" in dataset_provenance("lung-pet-ct-dx").line
    assert "Li P" in dataset_provenance("lung-pet-ct-dx").line
    assert "Kaggle" in dataset_provenance("dsb2017").line
    assert "no patient" in dataset_provenance("synthetic").line
    assert dataset_provenance("unknown") is None


def test_report_in_a_real_browser(chromium, built, fake_run, tmp_path) -> None:  # noqa: F811
    """Opened from disk in headless Chromium: every resource loads, every figure has content,
    every metric shows as formatted, no path or id; and the same checks catch a broken page."""
    metrics = json.loads((fake_run / "metrics.json").read_text())
    assert browser_problems(chromium, built, metrics, forbidden=_machine_paths(fake_run)) == []
    page = built.read_text()
    broken = tmp_path / "report" / "index.html"
    broken.parent.mkdir()
    first = re.search(r"data:image/png;base64,[^']+", page).group(0)
    blank = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (400, 300), (250, 250, 250)).save(blank, format="PNG")
    broken.write_text(page.replace(
        first, "data:image/png;base64," + base64.b64encode(blank.getvalue()).decode(), 1))
    assert browser_problems(chromium, broken, metrics) == [
        "image 1 is blank: 1 distinct colour(s), grey std 0.0"]
    broken.write_text(re.sub(r"<span[^>]*data-metric='segmentation\.dice'[^>]*>[^<]*</span>", "",
                             page))
    problems = browser_problems(chromium, broken, metrics)
    assert problems and all("segmentation.dice" in p for p in problems), problems
    broken.write_text(page.replace(first, "missing-figure.png", 1))
    problems = browser_problems(chromium, broken, metrics)
    assert "image 1 did not load" in problems
    assert any("browser console" in p for p in problems)
