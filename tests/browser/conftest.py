"""Browser tests: Playwright for Python driving Debian's Chromium (/usr/bin/chromium), never a downloaded build.

With CI=true a missing Chromium is installed from the apt package ``chromium`` (``.ci/run``
does it first; this is the fallback for ``make test`` run directly), and a missing browser
or Playwright is a failure; elsewhere the tests are skipped with the reason.
Screenshots go to ``$MGECACHE_BROWSER_ARTIFACTS`` (default: a pytest temporary directory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {what}")
    pytest.skip(what)


def _install_chromium() -> None:
    if CHROMIUM.exists() or not IN_CI or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=False, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=False, env=env, timeout=1200)


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    _install_chromium()
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def browser(chromium_path, monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # still synchronous (Playwright's documented set-up for Django tests).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()
            # ORM calls made while Playwright's loop runs got their own (context-local) connections.
            from django.db import connections

            connections.close_all()


@pytest.fixture
def artifacts(tmp_path_factory) -> Path:
    configured = os.environ.get("MGECACHE_BROWSER_ARTIFACTS")
    path = Path(configured) if configured else tmp_path_factory.mktemp("browser-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
