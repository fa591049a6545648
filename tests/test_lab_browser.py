"""The live SliceViewer in JupyterLab, in headless Chromium: it draws, it scrolls, it has contrast.

The widget is what a student uses, and it cannot be checked without a browser: papermill and
nbval only see the static montage saved beside it. Here a JupyterLab server (this venv's, with
this checkout of lunglib on the kernel's ``PYTHONPATH``) serves copies of notebooks 01 and 02
with their outputs cleared; Chromium opens each one, runs every cell up to and including the
viewer's, reads the slice image the widget shows, moves the slider by key presses and reads it
again. The image must change and show at least ``MIN_GREY_LEVELS`` grey levels: a prepared
volume (values 0-1) drawn through the lung window -- what the viewer did before it honoured
``window=None`` -- is one flat grey square.

Skips, saying why, where no Chromium/chromedriver is installed; fails instead under
``LUNGLIB_REQUIRE_BROWSER=1`` (see ``tests/_browser.py``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import numpy as np
import pytest
from _browser import chromium_paths

from lunglib.viz.viewer import STATIC_VIEWER_ENV

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_explore.ipynb", "02_preprocess.ipynb")
MIN_GREY_LEVELS = 10
SERVER_START_S = 90  # JupyterLab's first start builds nothing, but imports a lot
RUN_S = 240  # kernel start, imports and the cells above the viewer, on a slow shared machine
REDRAW_S = 60

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_without_outputs(source: Path, target: Path) -> None:
    """The notebook with outputs and saved widget state removed, so what the browser shows
    can only come from this run (and nothing is ever saved back into the repository)."""
    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, target)


def lab_environment(home: Path) -> dict[str, str]:
    """The server's (and so the kernel's) environment: this venv, this checkout of lunglib,
    Jupyter's folders in ``home`` (no user settings, kernels or workspaces leak in), and the
    live widget allowed (no static-viewer switch, no non-interactive matplotlib backend)."""
    env = dict(os.environ)
    for name in (STATIC_VIEWER_ENV, "MPLBACKEND", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for name, folder in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                         ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"),
                         ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                         ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):
        (home / folder).mkdir(parents=True, exist_ok=True)
        env[name] = str(home / folder)
    env.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[str]:
    """A JupyterLab server on a free localhost port serving cleared copies of 01 and 02;
    yields its base URL. The app object is exposed in the page so the test can drive it."""
    chromium_paths()  # skip (or fail) before starting a server no browser will visit
    tmp = tmp_path_factory.mktemp("lab")
    served = tmp / "notebooks"
    served.mkdir()
    for name in NOTEBOOKS:
        copy_without_outputs(ROOT / "notebooks" / name, served / name)
    port, token = free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
               "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={served}", "--ServerApp.port_retries=0",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = (tmp / "lab.log").open("wb")
    server = subprocess.Popen(command, cwd=served, env=lab_environment(tmp / "home"),
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("JupyterLab did not start:\n"
                                + (tmp / "lab.log").read_text(errors="replace")[-3000:])
                time.sleep(0.5)
        yield f"{url}/lab/tree/{{name}}?reset&token={token}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


# JavaScript run in the page (selenium's execute_async_script passes a callback last).
OPEN_NOTEBOOK_JS = """
const done = arguments[arguments.length - 1];
const name = arguments[0];
(async () => {
  const app = window.jupyterapp;
  await app.started; await app.restored;
  let panel = null;
  for (let i = 0; i < 600 && !panel; i++) {
    const widget = app.shell.currentWidget;
    if (widget && widget.context && widget.context.path.endsWith(name)) panel = widget;
    else await new Promise(r => setTimeout(r, 100));
  }
  if (!panel) throw new Error('notebook ' + name + ' did not open');
  await panel.context.ready;
  await panel.sessionContext.ready;
  const cells = panel.content.widgets;
  const viewer = cells.findIndex(c => c.model.type === 'code'
      && /SliceViewer\\(/.test(c.model.sharedModel.getSource())
      && /\\.show\\(\\)/.test(c.model.sharedModel.getSource()));
  if (viewer < 0 || viewer + 1 >= cells.length) throw new Error('no viewer cell in ' + name);
  panel.content.activeCellIndex = viewer + 1;   // "run all above" then includes the viewer
  await app.commands.execute('notebook:run-all-above');
  return viewer;
})().then(done, e => done('ERROR ' + e));
"""

ERRORS_JS = """
const panel = window.jupyterapp.shell.currentWidget;
const errors = [];
for (const cell of panel.content.widgets) {
  if (cell.model.type !== 'code') continue;
  for (const out of cell.model.sharedModel.toJSON().outputs || []) {
    if (out.output_type === 'error') errors.push(out.ename + ': ' + out.evalue);
  }
}
return errors;
"""


def viewer_state(browser, cell_index: int) -> tuple[str, str] | None:
    """``(slider readout, image src)`` of the viewer cell's widget once it shows both.

    Elements are looked up afresh on every call: the widget re-renders parts of itself on each
    redraw, and a kept reference would go stale.
    """
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        cells = browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")
        if len(cells) <= cell_index:
            return None
        images = cells[cell_index].find_elements(By.CSS_SELECTOR, ".widget-output img")
        readouts = cells[cell_index].find_elements(By.CSS_SELECTOR,
                                                   ".widget-slider .widget-readout")
        if not images or not readouts:
            return None
        return readouts[0].text, images[0].get_attribute("src")
    except StaleElementReferenceException:
        return None


def press_on_slider(browser, cell_index: int, key: str, times: int) -> None:
    """Focus the viewer's slider handle and press ``key``, as a student would."""
    from selenium.webdriver.common.by import By

    cell = browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[cell_index]
    handle = cell.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", handle)
    handle.click()
    for _ in range(times):
        handle.send_keys(key)


def save_image(src: str, path: Path) -> None:
    path.write_bytes(base64.b64decode(src.split(",", 1)[1]))


def grey_levels(src: str) -> int:
    """Distinct grey values (R = G = B) in the middle half of a ``data:image/png`` image: the
    slice itself, not the title above it nor the coloured outlines on it."""
    from PIL import Image

    assert src.startswith("data:image/png;base64,"), src[:60]
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
                       .convert("RGB"))
    h, w, _ = image.shape
    middle = image[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3).astype(int)
    grey = middle[(middle[:, 0] == middle[:, 1]) & (middle[:, 1] == middle[:, 2])]
    return len(np.unique(grey[:, 0]))


def wait_for(what: str, seconds: float, probe, browser):
    """Poll ``probe()`` until it returns something truthy; fail with the notebook's errors."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        errors = browser.execute_script(ERRORS_JS)
        if errors:
            pytest.fail(f"a cell failed while waiting for {what}: {errors}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}; browser log: "
                + json.dumps(browser.get_log("browser")[-10:])[:2000])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_live_viewer_scrolls_and_has_contrast(lab, chromium, name, tmp_path):
    try:
        check_live_viewer(lab, chromium, name, tmp_path)
    except BaseException:
        shot = tmp_path / f"{Path(name).stem}.png"
        chromium.save_screenshot(str(shot))
        print(f"screenshot of the page: {shot}")
        raise


def check_live_viewer(lab: str, browser, name: str, tmp_path: Path) -> None:
    """Open ``name``, run it up to the viewer, check the image, move the slider, check again.

    The two slice images are saved in ``tmp_path`` to look at.
    """
    from selenium.webdriver.common.keys import Keys

    browser.set_script_timeout(SERVER_START_S)
    browser.get(lab.format(name=name))
    wait_for("JupyterLab to load", SERVER_START_S,
             lambda: browser.execute_script("return !!window.jupyterapp"), browser)
    cell_index = browser.execute_async_script(OPEN_NOTEBOOK_JS, name)
    assert isinstance(cell_index, int), cell_index

    before, first = wait_for("the viewer's slice image", RUN_S,
                             lambda: viewer_state(browser, cell_index), browser)
    save_image(first, tmp_path / f"{Path(name).stem}_slice{before}.png")
    assert grey_levels(first) >= MIN_GREY_LEVELS, (
        f"{name}: the viewer's slice {before} shows {grey_levels(first)} grey levels")

    steps = 3
    press_on_slider(browser, cell_index, Keys.ARROW_RIGHT, steps)
    target = str(int(before) + steps)
    after, moved = wait_for(
        f"the slider to move from {before} to {target} and the image to redraw", REDRAW_S,
        lambda: (state := viewer_state(browser, cell_index)) and state[0] == target
        and state[1] != first and state, browser)
    save_image(moved, tmp_path / f"{Path(name).stem}_slice{after}.png")
    assert grey_levels(moved) >= MIN_GREY_LEVELS, (
        f"{name}: after moving to slice {after} the image shows "
        f"{grey_levels(moved)} grey levels")
