"""The bedside form and the patient's course in Simplified Chinese, in Debian's Chromium (Playwright):
a browser that asks for zh-CN gets the pages in Chinese (<html lang="zh-CN">), on a 360×740 phone and
a desktop; the Chinese text fits (nothing scrolls sideways, no label or button overflows its box); the
language switch goes back to English; axe finds no serious or critical violation in zh-CN.
Screenshots: zh-*.png under the screenshots directory (tests/browser/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.api.server import Server
from tests.browser.test_course_browser import serious_violations
from tests.browser.test_form_browser import by_id, fill
from tests.browser.test_form_v2_browser import ICANS3_WITHHOLD

PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
SIZES = {"phone": PHONE, "desktop": DESKTOP}
DAY = "2026-01-10"

# Boxes whose text must fit: a label, a button or a heading cut off or running out of its box is
# unreadable. (Tables and the chart scroll inside their own containers by design, so are not listed.)
OVERFLOWING = """(width) => {
  const out = [];
  for (const el of document.querySelectorAll('label, button, legend, summary, h1, h2, h3, h4, p, li, dt, dd, a, .summary-item, [data-summary]')) {
    const style = getComputedStyle(el);
    if (style.display === 'inline' || style.display === 'none' || el.closest('table, svg, pre, .table-scroll, .chart, .visually-hidden')) continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0) continue;
    if (el.scrollWidth > el.clientWidth + 1 || box.right > width + 1) {
      out.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}: ${el.textContent.trim().slice(0, 40)}`);
    }
  }
  return out;
}"""


def context_for(browser: Browser, server: Server, size: str, **extra: object) -> BrowserContext:
    """A Chromium whose language is Simplified Chinese (its Accept-Language is zh-CN)."""
    return browser.new_context(base_url=server.url, locale="zh-CN", **SIZES[size], **extra)  # type: ignore[arg-type]


@pytest.fixture(params=sorted(SIZES))
def chinese(request: pytest.FixtureRequest, browser: Browser, server: Server) -> Iterator[tuple[str, Page]]:
    context = context_for(browser, server, request.param)
    yield request.param, context.new_page()
    context.close()


def assert_fits(page: Page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
    assert page.evaluate(OVERFLOWING, width) == []


def test_the_form_and_its_result_in_chinese_fit(chinese: tuple[str, Page], screenshots: Path) -> None:
    size, page = chinese
    width = SIZES[size]["viewport"]["width"]  # type: ignore[index]
    page.goto("/")
    assert page.get_attribute("html", "lang") == "zh-CN"
    expect(page.get_by_role("button", name="分级")).to_be_visible()
    expect(page.get_by_text("空白项视为未报告，绝不视为正常。")).to_be_visible()
    assert_fits(page, width)
    page.screenshot(path=screenshots / f"zh-form-{size}.png", full_page=True)

    fill(page, ICANS3_WITHHOLD)
    page.get_by_role("button", name="分级").click()
    summary = page.locator("#summary")
    expect(summary).to_be_visible()
    expect(summary.locator('[data-summary="icans"]')).to_have_text("ICANS 3")
    expect(summary.locator('[data-summary="action"]')).to_contain_text("暂停")
    expect(summary.locator('[data-summary="flags"]')).to_have_text("无危急警示")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert_fits(page, width)
    page.screenshot(path=screenshots / f"zh-result-{size}.png")
    page.screenshot(path=screenshots / f"zh-result-{size}-full.png", full_page=True)


def test_the_language_switch_goes_to_english_and_back(browser: Browser, server: Server) -> None:
    context = context_for(browser, server, "phone")
    page = context.new_page()
    page.goto("/")
    page.get_by_role("link", name="English").click()
    assert page.get_attribute("html", "lang") == "en"
    expect(page.get_by_role("button", name="Grade")).to_be_visible()
    page.goto("/")  # the choice is kept (the cookie), over the browser's zh-CN
    assert page.get_attribute("html", "lang") == "en"
    page.get_by_role("link", name="简体中文").click()
    assert page.get_attribute("html", "lang") == "zh-CN"
    context.close()


def add_observation(page: Page, at: str, values: dict[str, str], *, oxygen: str) -> None:
    page.fill(by_id("obs-observed_at"), at)
    for name, value in values.items():
        page.fill(by_id(f"obs-{name}"), value)
    page.select_option(by_id("obs-crs.oxygen.device"), oxygen)
    page.check(by_id("obs-crs.vasopressors--none"))
    page.get_by_role("button", name="添加此观察记录").click()
    expect(page.locator("#added")).to_contain_text("已记录")


def test_the_course_in_chinese_fits_with_its_chart_in_chinese(chinese: tuple[str, Page], screenshots: Path) -> None:
    size, page = chinese
    width = SIZES[size]["viewport"]["width"]  # type: ignore[index]
    patient = f"browser-zh-{uuid.uuid4().hex[:10]}"
    page.goto("/patients")
    assert page.get_attribute("html", "lang") == "zh-CN"
    page.fill(by_id("patient_id"), patient)
    page.get_by_role("button", name="打开病程").click()
    expect(page.locator("#empty-course")).to_be_visible()
    page.fill(by_id("obs-patient.age_years"), "9")
    add_observation(page, f"{DAY}T10:00", {"vitals.temperature": "39.2", "vitals.sbp_mmhg": "78"}, oxygen="none")
    page.select_option(by_id("treatment-agent"), "tocilizumab")
    page.fill(by_id("treatment-administered_at"), f"{DAY}T14:00")
    page.get_by_role("button", name="添加此治疗").click()
    expect(page.locator("#added")).to_contain_text("托珠单抗")
    add_observation(page, f"{DAY}T20:00", {"vitals.temperature": "37.0", "vitals.sbp_mmhg": "96"}, oxygen="none")
    expect(page.locator("#timeline > li.masked")).to_contain_text("发热被托珠单抗")

    chart = page.locator("svg#course-chart")
    expect(chart).to_be_visible()
    expect(chart.locator("text", has_text="体温 °C")).to_have_count(1)
    expect(chart.locator("text", has_text="Temperature")).to_have_count(0)
    assert "托珠单抗" in (chart.locator("title").first.text_content() or "") + chart.inner_html()
    assert_fits(page, width)
    page.screenshot(path=screenshots / f"zh-course-{size}.png", full_page=True)


def test_no_serious_accessibility_violations_in_chinese(browser: Browser, server: Server, axe_source: str) -> None:
    # axe-core is injected as an inline script, which the service's policy forbids: this context
    # alone bypasses it.
    context = context_for(browser, server, "desktop", bypass_csp=True)
    page = context.new_page()
    page.goto("/")
    assert serious_violations(page, axe_source) == []
    fill(page, ICANS3_WITHHOLD)
    page.get_by_role("button", name="分级").click()
    expect(page.locator("#summary")).to_be_visible()
    assert serious_violations(page, axe_source) == []
    page.goto("/")
    page.fill(by_id("vitals.sbp_mmhg"), "85/50")
    page.get_by_role("button", name="分级").click()
    expect(page.locator(".error").first).to_be_visible()
    assert serious_violations(page, axe_source) == []
    patient = f"browser-zh-axe-{uuid.uuid4().hex[:8]}"
    page.goto("/patients")
    assert serious_violations(page, axe_source) == []
    page.goto(f"/patients/{patient}")
    page.fill(by_id("obs-patient.age_years"), "9")
    add_observation(page, f"{DAY}T10:00", {"vitals.temperature": "39.2", "vitals.sbp_mmhg": "78"}, oxygen="none")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert serious_violations(page, axe_source) == []
    context.close()
