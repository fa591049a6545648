"""Build a run folder's report: ``<run>/report/index.html`` and one HTML page per notebook."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lunglib.io.atomic import write_text_atomic
from lunglib.report.html import render_page
from lunglib.report.runfolder import read_run_folder

REPORT_DIR = "report"


def notebook_pages(notebooks: Sequence[Path], report_dir: Path) -> dict[str, str]:
    """Each executed notebook as an HTML page in ``report_dir`` (nbconvert's classic layout);
    ``{notebook file name: page file name}``."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    pages = {}
    for notebook in notebooks:
        body, _ = exporter.from_filename(str(notebook))
        page = report_dir / f"{notebook.stem}.html"
        write_text_atomic(page, body)
        pages[notebook.name] = page.name
    return pages


def build_report(run_dir: str | os.PathLike, notebooks: bool = True) -> Path:
    """Write the report of the run folder ``run_dir``; returns ``run_dir/report/index.html``.

    Parameters
    ----------
    run_dir : path-like
        A folder written by ``lunglib run`` (every file of it is optional; see
        :mod:`lunglib.report.runfolder`).
    notebooks : bool, default True
        Also convert each executed notebook to HTML beside the page (a second or two each);
        without, the page still links the pages already there.

    Raises
    ------
    lunglib.report.runfolder.NotARunFolderError
        When ``run_dir`` holds nothing a course run writes.
    """
    run = read_run_folder(run_dir)
    report_dir = run.path / REPORT_DIR
    report_dir.mkdir(exist_ok=True)
    if notebooks:
        pages = notebook_pages(run.notebooks, report_dir)
    else:
        pages = {nb.name: f"{nb.stem}.html" for nb in run.notebooks
                 if (report_dir / f"{nb.stem}.html").is_file()}
    index = report_dir / "index.html"
    write_text_atomic(index, render_page(run, pages))
    return index
