"""The papermill pipeline passes parameters through and names a failing notebook and cell."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from lunglib.cli import _parse_parameter
from lunglib.pipeline import (
    PipelineError,
    course_notebooks,
    declared_parameters,
    headline,
    run_course,
)


def _notebook(path: Path, cells: list[str], parameters: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_run_passes_parameters_and_writes_report(tmp_path: Path) -> None:
    first = _notebook(
        tmp_path / "01_first.ipynb",
        [
            "import json, pathlib\n"
            "pathlib.Path(output_dir, 'seen.json').write_text(json.dumps({'size': size}))",
        ],
        "size = 64\noutput_dir = ''",
    )
    second = _notebook(
        tmp_path / "02_second.ipynb",
        [
            "import json, pathlib\n"
            "pathlib.Path(output_dir, 'metrics.json').write_text("
            "json.dumps({'classification': {'roc_auc': 0.5 + size / 1000}}))",
        ],
        "size = 64\noutput_dir = ''",
    )
    out = tmp_path / "run"
    result = run_course(out, {"size": 96}, notebooks=[first, second], log=lambda _: None)
    assert json.loads((out / "seen.json").read_text()) == {"size": 96}
    assert result.metrics == {"classification": {"roc_auc": pytest.approx(0.596)}}
    assert [p.name for p in result.notebooks] == ["01_first.ipynb", "02_second.ipynb"]
    assert result.report is not None and result.report.is_file()
    index = result.report.read_text()
    assert "01_first" in index and "0.596" in index
    assert (out / "report" / "02_second.html").is_file()
    assert headline(result.metrics) == "classification.roc_auc 0.596"
    # run.json: what ran, how long, on which machine (the report's "What was run")
    info = json.loads((out / "run.json").read_text())
    assert info["parameters"] == {"size": 96} and info["dataset"] == "synthetic"
    assert set(info["seconds"]) == {"01_first.ipynb", "02_second.ipynb"}
    assert info["machine"]["reference_seconds"] == result.reference_seconds > 0
    assert info["started"] <= info["finished"]


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="IPC transport is used on POSIX only")
def test_kernels_talk_over_private_local_sockets_and_show_static_viewers(
    tmp_path: Path, capfd, monkeypatch
) -> None:
    probe = _notebook(
        tmp_path / "01_probe.ipynb",
        ["from ipykernel.kernelapp import IPKernelApp\n"
         "import pathlib\n"
         "from lunglib.viz.viewer import has_widget_frontend\n"
         "pathlib.Path(output_dir, 'transport.txt').write_text(IPKernelApp.instance().transport)\n"
         "pathlib.Path(output_dir, 'widgets.txt').write_text(str(has_widget_frontend()))\n"
         "pathlib.Path(output_dir, 'sockets.txt').write_text(IPKernelApp.instance().ip)"],
        "output_dir = ''",
    )
    monkeypatch.delenv("LUNGLIB_STATIC_VIEWER", raising=False)
    run_course(tmp_path / "run", {}, notebooks=[probe], report=False, log=lambda _: None)
    assert (tmp_path / "run" / "transport.txt").read_text() == "ipc"
    # Sockets live in a private folder, not under names in the notebooks folder that a second
    # run started at the same time could pick too; the folder is gone afterwards.
    sockets = Path((tmp_path / "run" / "sockets.txt").read_text())
    assert sockets.is_absolute() and tmp_path not in sockets.parents
    assert not sockets.parent.exists()
    assert not list(tmp_path.glob("kernel-ipc*"))
    run_course(tmp_path / "again", {}, notebooks=[probe], report=False, log=lambda _: None)
    assert Path((tmp_path / "again" / "sockets.txt").read_text()).parent != sockets.parent
    assert "without encryption" not in capfd.readouterr().err
    # a batch kernel draws the static montage (no widget: nbclient can stall on one) ...
    assert (tmp_path / "run" / "widgets.txt").read_text() == "False"
    assert "LUNGLIB_STATIC_VIEWER" not in os.environ  # ... and the switch is put back


def test_static_viewer_switch_is_restored_to_the_callers_value(monkeypatch) -> None:
    from lunglib.pipeline import _static_viewers

    monkeypatch.setenv("LUNGLIB_STATIC_VIEWER", "0")
    with _static_viewers():
        assert os.environ["LUNGLIB_STATIC_VIEWER"] == "1"
    assert os.environ["LUNGLIB_STATIC_VIEWER"] == "0"


def test_headline_keeps_each_sections_own_metrics_only() -> None:
    metrics = {
        "dataset": "synthetic",
        "classification": {"accuracy": 0.875, "roc_auc": 0.859375, "log_loss": 0.46,
                           "ci95": {"accuracy": [0.69, 1.0], "roc_auc": [0.6, 1.0]}},
        "segmentation": {"dice": 0.3579, "iou": 0.32,
                         "levels": {"whole scan, global (pooled voxels)": {"dice": 0.81}}},
    }
    assert headline(metrics) == (
        "classification.accuracy 0.875, classification.roc_auc 0.859, segmentation.dice 0.358")
    assert headline({"dataset": "synthetic"}) == "no headline metrics"


@pytest.mark.slow
def test_failing_notebook_is_named_with_its_cell(tmp_path: Path) -> None:
    good = _notebook(tmp_path / "01_good.ipynb", ["x = 1"], "size = 64")
    bad = _notebook(tmp_path / "02_bad.ipynb", ["y = 2", "raise RuntimeError('boom')"],
                    "size = 64")
    never = _notebook(tmp_path / "03_never.ipynb", ["z = 3"], "size = 64")
    with pytest.raises(PipelineError) as info:
        run_course(tmp_path / "run", {}, notebooks=[good, bad, never], report=False,
                   log=lambda _: None)
    message = str(info.value)
    assert "02_bad.ipynb" in message and "RuntimeError: boom" in message
    # markdown, parameters, "y = 2", then the failing cell: the 4th cell, third to execute
    assert "cell 4 (In [3]: raise RuntimeError('boom'))" in message
    assert not (tmp_path / "run" / "03_never.ipynb").exists()
    # the failed run still records what it ran, so `lunglib report` can show it
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["seconds"]
    assert list(recorded) == ["01_good.ipynb"]


def test_unknown_parameter_is_rejected_before_running(tmp_path: Path) -> None:
    nb = _notebook(tmp_path / "01_only.ipynb", ["x = 1"], "size = 64")
    with pytest.raises(ValueError, match="n_slicse"):
        run_course(tmp_path / "run", {"n_slicse": 3}, notebooks=[nb], log=lambda _: None)
    assert not (tmp_path / "run" / "01_only.ipynb").exists()


def test_a_bad_environment_setting_is_refused_before_running(tmp_path: Path,
                                                             monkeypatch) -> None:
    nb = _notebook(tmp_path / "01_only.ipynb", ["x = 1"], "size = None")
    monkeypatch.setenv("LUNGLIB_SIZE", "-1")
    with pytest.raises(ValueError, match="LUNGLIB_SIZE"):
        run_course(tmp_path / "run", {}, notebooks=[nb], log=lambda _: None)
    assert not (tmp_path / "run" / "01_only.ipynb").exists()


def test_a_patch_set_file_passes_the_up_front_check(tmp_path: Path) -> None:
    # dataset=patches takes the .npz file as data_dir, which is not a folder of scans
    nb = _notebook(tmp_path / "01_only.ipynb", ["x = 1"], 'dataset = ""\ndata_dir = ""')
    patches = tmp_path / "dev.npz"
    patches.write_bytes(b"")
    run_course(tmp_path / "run", {"dataset": "patches", "data_dir": str(patches)},
               notebooks=[nb], log=lambda _: None, report=False)
    assert (tmp_path / "run" / "01_only.ipynb").is_file()
    with pytest.raises(ValueError, match="data_dir"):
        run_course(tmp_path / "run2", {"dataset": "lidc", "data_dir": str(patches)},
                   notebooks=[nb], log=lambda _: None, report=False)


def test_environment_settings_reach_the_notebooks_unless_a_parameter_is_given(
        monkeypatch) -> None:
    from lunglib.course import course_settings

    monkeypatch.setenv("LUNGLIB_SIZE", "48")
    monkeypatch.setenv("LUNGLIB_N_SLICES", "24")
    assert (course_settings().size, course_settings().n_slices) == (48, 24)
    assert course_settings(size=32).size == 32  # a papermill parameter wins
    monkeypatch.delenv("LUNGLIB_SIZE")
    assert course_settings().size == 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [("size=96", ("size", 96)), ("dataset=lidc", ("dataset", "lidc")),
     ("lr=1e-3", ("lr", 0.001)), ("visualize=False", ("visualize", False))],
)
def test_cli_parameters_are_typed(text: str, expected: tuple[str, object]) -> None:
    assert _parse_parameter(text) == expected


@pytest.mark.parametrize("notebook", course_notebooks(), ids=lambda p: p.stem)
def test_papermill_reads_every_course_parameter(notebook: Path, caplog) -> None:
    # papermill skips (with an "Unable to parse line" warning) an assignment whose comment holds
    # '=', and then cannot type or list that parameter (papermill --help-notebook).
    from papermill.translators import PythonTranslator

    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    with caplog.at_level("WARNING", logger="papermill"):
        found = {p.name for p in PythonTranslator.inspect(cell)}
    assert found == declared_parameters(notebook), caplog.text
    assert "Unable to parse" not in caplog.text
