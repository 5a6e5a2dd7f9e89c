"""Headless Debian Chromium through its chromedriver (Selenium), for the browser tests: no
browser download; `.ci/setup` installs both with apt."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator


@contextlib.contextmanager
def headless_chromium(window: str = "1280,1000", *arguments: str) -> Iterator:
    """A Selenium Chrome session on /usr/bin/chromium, headless, `window` wide,x high."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, (
        "the browser test needs Debian's chromium and chromium-driver: "
        "bash .ci/setup installs them (apt-get install chromium chromium-driver)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={window}",
        *arguments,
    ):
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield session
    finally:
        session.quit()
