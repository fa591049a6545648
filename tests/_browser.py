"""Headless Chromium for the browser tests (the report page, JupyterLab's live viewer).

Debian's ``chromium`` and ``chromium-driver`` packages give ``/usr/bin/chromium`` and
``/usr/bin/chromedriver``; ``.ci/run`` installs them when missing. Selenium drives them. Where no
browser can be found or started the tests skip and say why; with ``LUNGLIB_REQUIRE_BROWSER=1``
(set by ``.ci/run`` once it has installed the packages) they fail instead, so CI cannot pass by
skipping them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

REQUIRE_ENV = "LUNGLIB_REQUIRE_BROWSER"


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, but {REQUIRE_ENV}=1 says a browser must be present")
    pytest.skip(f"{reason}: browser test skipped (install Debian's chromium and chromium-driver)")


def chromium_paths() -> tuple[str, str]:
    """``(browser, driver)`` executables, or skip/fail the test when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        _unavailable("no chromium/chromedriver on PATH")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _unavailable("selenium is not installed")
    return browser, driver


def start_chromium(width: int = 1280, height: int = 900):
    """A headless Chromium WebDriver that makes no connection of its own to the network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    profile = tempfile.mkdtemp(prefix="lunglib-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--allow-file-access-from-files",
                 f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        session = webdriver.Chrome(service=Service(driver), options=options)
    except Exception as exc:  # selenium wraps every start failure in WebDriverException
        shutil.rmtree(profile, ignore_errors=True)
        _unavailable(f"chromium did not start ({type(exc).__name__}: {str(exc)[:200]})")
    session._lunglib_profile = profile
    return session


@pytest.fixture
def chromium() -> Iterator[object]:
    """A fresh headless Chromium session for one test, closed afterwards."""
    session = start_chromium()
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(session._lunglib_profile, ignore_errors=True)
