"""What a run report must be, as people see it: checks shared by the report's tests.

:func:`page_problems` reads the HTML file (fast, no browser); :func:`browser_problems` opens the
page in headless Chromium from disk and asks the browser. Both return a list of problems (empty
when the page is right), so a test can also show that they catch a broken page:

* no failed resource (browser: no SEVERE console entry, every ``<img>`` loaded with a width);
* every figure has real content: at least :data:`MIN_COLOURS` distinct pixel values and a spread
  of grey levels, so a blank or uniform image fails;
* every value of ``metrics.json`` is in an element ``data-metric="<dotted key>"`` whose text is
  exactly :func:`lunglib.report.formatting.format_metric` of it, and visible;
* no absolute path of the machine (the given ``forbidden`` strings, and any ``/home/``, ``/tmp/``,
  ``/root/``, ``/work/`` path) and no patient identifier of a public collection.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from lunglib.report.formatting import flatten, format_metric
from lunglib.report.privacy import contains_patient_id

MIN_COLOURS = 16
"""Distinct pixel values a real figure has at least (a blank image has 1, text on white a few)."""
MIN_GREY_STD = 8.0
"""Standard deviation of the grey levels (0-255) below which an image counts as blank."""
ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:/home/|/tmp/|/root/|/work/|/Users/|[A-Z]:\\\\)")


def image_problems(name: str, png: bytes) -> list[str]:
    """Why the PNG ``png`` is not a figure with real content (empty list when it is)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(png)).convert("RGB")
    except Exception as exc:  # PIL raises several types for an undecodable image
        return [f"{name} does not decode as an image ({type(exc).__name__})"]
    found = image.getcolors(maxcolors=MIN_COLOURS)  # None: more colours than that
    colours = MIN_COLOURS if found is None else len(found)
    grey = np.asarray(image.convert("L"), dtype=float)
    problems = []
    if min(image.size) < 50:
        problems.append(f"{name} is only {image.size[0]}x{image.size[1]} pixels")
    if colours < MIN_COLOURS or grey.std() < MIN_GREY_STD:
        problems.append(f"{name} is blank: {colours} distinct colour(s), grey std "
                        f"{grey.std():.1f}")
    return problems


class _PageParser(HTMLParser):
    """Collects images, ``data-metric`` elements with their text, and the page's visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.metrics: dict[str, list[str]] = {}
        self.text: list[str] = []
        self._open: list[tuple[str, str | None]] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src") or "")
            return
        if tag in ("style", "script"):
            self._skip += 1
        self._open.append((tag, attributes.get("data-metric")))
        if attributes.get("data-metric") is not None:
            self.metrics.setdefault(attributes["data-metric"], []).append("")

    def handle_endtag(self, tag):
        while self._open:
            name, _ = self._open.pop()
            if name in ("style", "script"):
                self._skip -= 1
            if name == tag:
                break

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        for _, key in self._open:
            if key is not None:
                self.metrics[key][-1] += data


def metric_problems(found: dict[str, list[str]], metrics: dict) -> list[str]:
    """Every value of ``metrics`` against the page's ``{data-metric key: [texts]}``."""
    problems = []
    for key, value in flatten(metrics).items():
        expected = format_metric(key, value)
        texts = [t.strip() for t in found.get(key, [])]
        if not texts:
            problems.append(f"metric {key} ({expected}) is not on the page")
        elif any(t != expected for t in texts):
            problems.append(f"metric {key} shows {texts}, expected {expected!r}")
    return problems


def text_problems(text: str, forbidden: Iterable[str]) -> list[str]:
    """Absolute paths and patient identifiers in the page's text and attributes."""
    problems = [f"the page contains {s!r}" for s in forbidden if s and s in text]
    match = ABSOLUTE_PATH.search(text)
    if match:
        around = text[max(0, match.start() - 30):match.end() + 30]
        problems.append(f"the page contains an absolute path: ...{around!r}...")
    if contains_patient_id(text):
        problems.append("the page contains a patient identifier")
    return problems


def _without_images(html_text: str) -> str:
    """The HTML without its embedded image data (base64 may contain any short string)."""
    return re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "data:image", html_text)


def _decode(src: str) -> bytes | None:
    if not src.startswith("data:image/png;base64,"):
        return None
    return base64.b64decode(src.split(",", 1)[1])


def page_problems(index: Path, metrics: dict | None = None, forbidden: Iterable[str] = (),
                  min_figures: int = 1) -> list[str]:
    """Everything wrong with the report page ``index`` that can be seen without a browser.

    ``metrics`` defaults to the run folder's ``metrics.json`` (``index``'s grandparent); the page
    must hold at least ``min_figures`` figures.
    """
    html_text = index.read_text()
    if metrics is None:
        metrics_file = index.parent.parent / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    parser = _PageParser()
    parser.feed(html_text)
    problems = []
    if len(parser.images) < min_figures:
        problems.append(f"the page has {len(parser.images)} figure(s), expected {min_figures}+")
    for number, src in enumerate(parser.images, 1):
        png = _decode(src)
        if png is None:
            problems.append(f"image {number} is not an embedded PNG: {src[:40]!r}")
        else:
            problems += image_problems(f"image {number}", png)
    problems += metric_problems(parser.metrics, metrics)
    problems += text_problems(_without_images(html_text), forbidden)
    return problems


_BROWSER_STATE = """
const images = Array.from(document.images).map((img, i) => {
  const out = {index: i + 1, complete: img.complete, width: img.naturalWidth,
               height: img.naturalHeight, colours: -1, std: -1};
  if (img.complete && img.naturalWidth > 0) {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set(); let sum = 0, squares = 0; const n = data.length / 4;
    for (let k = 0; k < data.length; k += 4) {
      seen.add((data[k] << 16) | (data[k + 1] << 8) | data[k + 2]);
      const grey = (data[k] + data[k + 1] + data[k + 2]) / 3; sum += grey; squares += grey * grey;
    }
    out.colours = seen.size;
    out.std = Math.sqrt(Math.max(squares / n - (sum / n) ** 2, 0));
  }
  return out;
});
const metrics = {};
for (const el of document.querySelectorAll('[data-metric]')) {
  (metrics[el.dataset.metric] = metrics[el.dataset.metric] || []).push(el.innerText);
}
return {images: images, metrics: metrics, text: document.body.innerText,
        ready: document.readyState};
"""


def browser_problems(driver, index: Path, metrics: dict | None = None,
                     forbidden: Iterable[str] = (), min_figures: int = 1) -> list[str]:
    """Open ``index`` from disk in the Selenium ``driver`` and check it as the browser shows it
    (the same checks as :func:`page_problems`, plus failed resources and console errors)."""
    if metrics is None:
        metrics_file = index.parent.parent / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    driver.get(index.resolve().as_uri())
    state = driver.execute_script(_BROWSER_STATE)
    problems = []
    if state["ready"] != "complete":
        problems.append(f"the page did not finish loading ({state['ready']})")
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    problems += [f"browser console: {e.get('message', '')[:200]}" for e in severe]
    if len(state["images"]) < min_figures:
        problems.append(f"the page has {len(state['images'])} figure(s), expected "
                        f"{min_figures}+")
    for image in state["images"]:
        name = f"image {image['index']}"
        if not image["complete"] or image["width"] == 0:
            problems.append(f"{name} did not load")
        elif image["colours"] < MIN_COLOURS or image["std"] < MIN_GREY_STD:
            problems.append(f"{name} is blank: {image['colours']} distinct colour(s), grey std "
                            f"{image['std']:.1f}")
    problems += metric_problems(state["metrics"], metrics)
    problems += text_problems(state["text"] + _without_images(driver.page_source), forbidden)
    return problems
