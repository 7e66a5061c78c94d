"""/docs (Swagger UI) and /redoc (ReDoc) work on a network that blocks CDNs: every request to a host
other than the service's is aborted (and recorded: none may be attempted), the pages render from
the assets the service serves, under the docs' Content-Security-Policy (the `page` fixture fails
on any violation), and "Try it out" on POST /v1/assessments sends its example and gets a 200.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture
def offline(page: Page) -> list[str]:
    """The page with every request to another host aborted: the URLs it tried."""
    attempted: list[str] = []

    def handle(route: Route) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", handle)
    return attempted


def test_swagger_ui_renders_offline_and_try_it_out_grades(page: Page, offline: list[str], screenshots: Path) -> None:
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("aegrade", timeout=15_000)
    operation = page.locator("#operations-default-create_assessment_v1_assessments_post")
    expect(operation).to_be_visible()
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    body = operation.locator("textarea.body-param__text")
    expect(body).to_contain_text('"patient"')  # the first example, not a generated body
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    expect(status).to_have_text(re.compile(r"^\s*200"), timeout=30_000)
    expect(operation.locator(".live-responses-table .response .response-col_description").first).to_contain_text('"crs"')
    page.screenshot(path=str(screenshots / "docs-offline-try-it-out.png"), full_page=False)
    assert offline == [], f"/docs tried to reach other hosts: {offline}"
    assert failed == [], f"requests failed: {failed}"


def test_redoc_renders_offline(page: Page, offline: list[str], screenshots: Path) -> None:
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto("/redoc")
    expect(page.get_by_role("heading", name=re.compile(r"^aegrade"))).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Grade one snapshot of one patient").first).to_be_attached()
    page.screenshot(path=str(screenshots / "redoc-offline.png"), full_page=False)
    assert offline == [], f"/redoc tried to reach other hosts: {offline}"
    assert failed == [], f"requests failed: {failed}"
