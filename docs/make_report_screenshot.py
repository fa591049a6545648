"""Draw docs/images/report.png (the README's picture of the run report) in headless Chromium.

Given a run folder (``make demo`` writes ``outputs/demo``), the picture is the top of that run's
report page, rebuilt from its files. Without one, the page is built from the small, consistent
fake run folder of the tests (tests/_fake_run.py: seeded predictions scored by lunglib.evaluation,
a tiny segmentation gallery), so that the picture can be redrawn in seconds. Needs Debian's
chromium and chromium-driver (see tests/_browser.py).

Run: .venv/bin/python docs/make_report_screenshot.py [outputs/demo]
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _browser import start_chromium  # noqa: E402
from _fake_run import write_fake_run  # noqa: E402
from PIL import Image  # noqa: E402

from lunglib.report import build_report  # noqa: E402

OUT = ROOT / "docs" / "images" / "report.png"


def main(run_dir: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        run = Path(run_dir) if run_dir else write_fake_run(Path(folder) / "demo")
        index = build_report(run)
        browser = start_chromium(width=1280, height=860)
        try:
            browser.get(index.as_uri())
            png = browser.get_screenshot_as_png()
        finally:
            browser.quit()
            shutil.rmtree(browser._lunglib_profile, ignore_errors=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    Image.open(io.BytesIO(png)).convert("RGB").save(OUT, optimize=True)
    print(f"written {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
