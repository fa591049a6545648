"""The run report: one self-contained HTML page of what a course run did and what it measured.

``lunglib run`` (and ``make demo``) end with :func:`build_report`; ``lunglib report RUN_DIR``
rebuilds the page from a run folder. Modules by job:

* :mod:`~lunglib.report.runinfo` -- ``run.json``: versions, parameters, run times, the machine and
  its speed reference;
* :mod:`~lunglib.report.runfolder` -- read the run folder's files (each optional);
* :mod:`~lunglib.report.formatting` and :mod:`~lunglib.report.privacy` -- how values are written,
  and that no patient id or absolute path reaches the page;
* :mod:`~lunglib.report.figures` -- the figures as PNG bytes;
* :mod:`~lunglib.report.html` -- the page; :mod:`~lunglib.report.build` -- writing it.
"""

from lunglib.report.build import build_report
from lunglib.report.runfolder import NotARunFolderError, is_run_folder, read_run_folder
from lunglib.report.runinfo import (
    REFERENCE_TEXT,
    collect_run_info,
    describe_machine,
    machine_speed_reference,
    read_run_info,
    write_run_info,
)

__all__ = [
    "NotARunFolderError",
    "REFERENCE_TEXT",
    "build_report",
    "collect_run_info",
    "describe_machine",
    "is_run_folder",
    "machine_speed_reference",
    "read_run_folder",
    "read_run_info",
    "write_run_info",
]
