"""Run the course notebooks end to end with papermill, into one run folder with a report.

``python -m lunglib run`` and ``make demo`` call :func:`run_course`. Every notebook receives the
same parameters (and the run folder as ``output_dir``); the first failing notebook stops the run
with its name and the failing cell in the message. The run folder gets ``run.json`` (versions,
parameters, run times, the machine and its speed reference) and the report page of
:mod:`lunglib.report`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lunglib.settings import project_root

if TYPE_CHECKING:
    from traitlets.config import Config


class PipelineError(RuntimeError):
    """A notebook of the run failed; the message names it and the failing cell."""


@dataclass
class RunResult:
    """What a run produced."""

    output_dir: Path
    notebooks: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    report: Path | None = None
    metrics: dict[str, object] = field(default_factory=dict)
    reference_seconds: float | None = None
    """The machine-speed reference measured before the run
    (:func:`lunglib.report.runinfo.machine_speed_reference`)."""


def notebooks_dir() -> Path:
    """The folder of the numbered course notebooks."""
    folder = project_root() / "notebooks"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} not found: run the pipeline from a checkout of the lunglib repository"
        )
    return folder


def course_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks (``01_*.ipynb`` ...) in order."""
    folder = folder or notebooks_dir()
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's ``parameters``-tagged cell.

    Read with :mod:`ast`, which sees every assignment (papermill's own inspector skips one
    whose comment holds '=').
    """
    import ast

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    names: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            for node in ast.parse(cell.source).body:
                targets = node.targets if isinstance(node, ast.Assign) else (
                    [node.target] if isinstance(node, ast.AnnAssign) else [])
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


@contextlib.contextmanager
def _kernel_config() -> Iterator[Config]:
    """Kernel manager settings: on POSIX the kernel talks over local sockets, not TCP.

    Over TCP ipykernel warns on every start that the traffic is unencrypted; the course's
    kernels are always local, so IPC (Unix-domain sockets) is both quieter and not reachable
    from the network. Windows keeps the default TCP transport.

    The sockets go in a private temporary folder, removed afterwards. jupyter_client would
    otherwise name them ``kernel-ipc-1`` ... ``-5`` in the notebooks folder, choosing the first
    names no file has yet, so two runs started together from one checkout (two datasets in
    parallel, or ``make demo`` beside ``make test``) can pick the same names before either
    kernel has bound them; one run then fails with "Invalid Signature" and "Kernel didn't
    respond in 60 seconds" (3 of 9 such pairs here).
    """
    from traitlets.config import Config

    config = Config()
    if os.name != "posix":
        yield config
        return
    with tempfile.TemporaryDirectory(prefix="lunglib-kernel-") as sockets:
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = os.path.join(sockets, "ipc")
        yield config


@contextlib.contextmanager
def _static_viewers() -> Iterator[None]:
    """Kernels started inside this block show ``SliceViewer`` as its static montage.

    A batch run has no one to move a slider, and nbclient (papermill's executor) is known to
    hang now and then on cells that display ipywidgets (jupyter/nbclient#312); a course run once
    stalled on 01's viewer cell with the kernel idle. Kernels inherit the environment, so the
    switch is set here and put back afterwards.
    """
    from lunglib.viz.viewer import STATIC_VIEWER_ENV

    previous = os.environ.get(STATIC_VIEWER_ENV)
    os.environ[STATIC_VIEWER_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(STATIC_VIEWER_ENV, None)
        else:
            os.environ[STATIC_VIEWER_ENV] = previous


def run_course(
    output_dir: str | os.PathLike,
    parameters: Mapping[str, object] | None = None,
    notebooks: Sequence[str | os.PathLike] | None = None,
    kernel_name: str | None = None,
    report: bool = True,
    log=print,
) -> RunResult:
    """Execute the course notebooks in order with papermill.

    Parameters
    ----------
    output_dir : path-like
        The run folder; receives the executed notebooks, what they write (``metrics.json``,
        ...), ``run.json`` and ``report/``.
    parameters : mapping, optional
        Papermill parameters given to every notebook that declares them (``data_dir``,
        ``labels``, ``size``, ``n_slices``, ...). ``output_dir`` is always set to the run folder.
    notebooks : sequence of path-like, optional
        Which notebooks to run; default every numbered notebook in ``notebooks/``.
    kernel_name : str, optional
        Jupyter kernel; default the notebook's own (the environment's ``python3``).
    report : bool, default True
        Write the run report (``report/index.html``, :func:`lunglib.report.build_report`).
    log : callable
        Where progress lines go.

    Raises
    ------
    PipelineError
        When a notebook fails, naming it and the failing cell.
    ValueError
        When a parameter is declared by none of the notebooks (a typo would otherwise be
        silently ignored).
    """
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in notebooks] if notebooks else course_notebooks()
    if not paths:
        raise FileNotFoundError("no course notebooks found to run")
    params = dict(parameters or {})
    declared = {p: declared_parameters(p) for p in paths}
    unknown = set(params) - set().union(*declared.values())
    if unknown:
        raise ValueError(
            f"parameter(s) {', '.join(sorted(unknown))} are declared by none of the notebooks "
            f"({', '.join(p.name for p in paths)})"
        )
    from lunglib.datasets import PATCH_SET
    from lunglib.settings import Settings

    # bad values, and bad LUNGLIB_* variables, are refused before any notebook runs; a patch set
    # is one .npz file, which the notebooks keep out of Settings (it describes scan folders)
    Settings.from_params({k: v for k, v in params.items()
                          if not (k == "data_dir" and params.get("dataset") == PATCH_SET)})
    from lunglib.report.runinfo import (
        REFERENCE_TEXT,
        collect_run_info,
        describe_machine,
        now_iso,
        write_run_info,
    )

    machine = describe_machine()  # timed before the notebooks load the machine
    result = RunResult(output_dir=output_dir, reference_seconds=machine["reference_seconds"])
    log(f"machine-speed reference: {result.reference_seconds:.3f} s ({REFERENCE_TEXT})")
    started = now_iso()
    try:
        for path in paths:
            result.notebooks.append(_execute(path, output_dir, params, declared[path],
                                             kernel_name, result.seconds, log))
    finally:  # a failed run keeps its record too, so its report can still be built
        dataset = str(params.get("dataset", "synthetic"))  # the notebooks' default dataset
        write_run_info(output_dir, collect_run_info(
            params, dataset, result.seconds, started, now_iso(),
            machine=machine))
    metrics_path = output_dir / "metrics.json"
    if metrics_path.is_file():
        result.metrics = json.loads(metrics_path.read_text())
    if report:
        from lunglib.report import build_report

        result.report = build_report(output_dir)
    return result


def _execute(path: Path, output_dir: Path, params: Mapping[str, object],
             declared: set[str], kernel_name: str | None, seconds: dict[str, float],
             log) -> Path:
    """Run one notebook into the run folder; record its seconds; name the failing cell."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    given = {k: v for k, v in params.items() if k in declared}
    if "output_dir" in declared:
        given["output_dir"] = str(output_dir)
    target = output_dir / path.name
    log(f"running {path.name} ...")
    started = time.perf_counter()
    try:
        with _static_viewers(), _kernel_config() as config:
            pm.execute_notebook(
                str(path),
                str(target),
                parameters=given,
                kernel_name=kernel_name,
                cwd=str(path.parent),
                progress_bar=False,
                log_output=False,
                config=config,
            )
    except PapermillExecutionError as exc:
        first_line = next((line for line in exc.source.splitlines() if line.strip()), "")
        raise PipelineError(
            f"notebook {path.name} failed in cell {exc.cell_index + 1} (In [{exc.exec_count}]:"
            f" {first_line.strip()[:80]}): {exc.ename}: {exc.evalue}\n"
            f"the executed copy with the traceback is {target}"
        ) from None
    elapsed = time.perf_counter() - started
    seconds[path.name] = round(elapsed, 1)
    log(f"  {path.name} done in {elapsed:.0f} s")
    return target


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def headline(metrics: Mapping[str, object]) -> str:
    """The few numbers a person wants first, one line: each section's own accuracy, F1,
    ROC-AUC and Dice (``classification.roc_auc 0.859``), not the confidence intervals or the
    per-level breakdowns nested below them (those are in ``metrics.json`` and the report)."""
    wanted = ("accuracy", "f1", "roc_auc", "dice")
    parts = [
        f"{section}.{name} {_fmt(values[name])}"
        for section, values in metrics.items() if isinstance(values, Mapping)
        for name in wanted if isinstance(values.get(name), (int, float))
    ]
    return ", ".join(parts) or "no headline metrics"
