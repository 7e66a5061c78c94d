"""Browser tests: Python Playwright driving Debian's Chromium (/usr/bin/chromium) against a real
uvicorn on loopback. Screenshots go to $AEGRADE_SCREENSHOTS (default: artifacts/screenshots).

They do not skip when Chromium or axe-core is missing: `.ci/run` installs both (apt-get chromium;
npm install in tests/browser), and a browser test that silently did not run would prove nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.api.server import Server

CHROMIUM = os.environ.get("AEGRADE_CHROMIUM", "/usr/bin/chromium")
HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(os.environ.get("AEGRADE_SCREENSHOTS", HERE.parents[1] / "artifacts" / "screenshots"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every browser test is slow (a uvicorn and a Chromium): out of the fast lane."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'audit.sqlite3'}"
    running = Server({"AEGRADE_DATABASE_URL": url}).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium), as .ci/run does")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    """A page under the service's Content-Security-Policy: a test fails if the policy blocked anything."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    blocked: list[str] = []
    opened.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    yield opened
    context.close()
    assert blocked == [], f"the Content-Security-Policy blocked: {blocked}"


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE.exists():
        pytest.fail(f"{AXE} not found: run `npm install --prefix tests/browser` (as .ci/run does)")
    return AXE.read_text()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
