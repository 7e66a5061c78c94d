"""The bedside form, version 2 (issue 17), on a 360×740 phone in Debian's Chromium: the result's
summary in the first screen, a typical case in under 30 taps, CAPD answered in words, Enter and
Clear that forgive, the sticky bars never over the focused field, copy to notes, local time, and axe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.api.server import Server
from tests.browser.test_form_browser import by_id, fill, serious_violations, shown_grade, tap

PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}

# An adult on blinatumomab with ICE 2 and nothing else on the neuro side: ICANS 3, and the label's
# grade 3 neurological action is to withhold (BLIN-NEURO-G3-WITHHOLD). Filled as a nurse would.
ICANS3_WITHHOLD = {
    "patient.age_years": ["30"], "patient.weight_kg": ["70"], "vitals.temperature": ["37.2"],
    "crs.fever_masked": ["no"], "crs.hypotension": ["no"], "crs.vasopressors": ["none"], "crs.oxygen.device": ["none"],
    "neuro.ice.orientation": ["1"], "neuro.ice.naming": ["1"], "neuro.ice.commands": ["0"], "neuro.ice.writing": ["0"],
    "neuro.ice.attention": ["0"], "neuro.consciousness": ["alert"], "neuro.seizure": ["none"], "neuro.motor": ["none"],
    "neuro.cerebral_edema": ["none"], "neuro.icp_signs": ["none"],
    "blinatumomab.on": ["yes"], "blinatumomab.dose.value": ["28"], "blinatumomab.dose.unit": ["mcg/day"],
}
TAP_BUDGET = 30


@pytest.fixture
def phone(browser: Browser, server: Server) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=server.url, **PHONE)  # type: ignore[arg-type]
    yield context
    context.close()


def in_viewport(page: Page, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 740


def test_icans_3_with_a_withhold_in_the_first_screen_of_a_phone_in_under_30_taps(
    phone: BrowserContext, screenshots: Path
) -> None:
    page = phone.new_page()
    page.goto("/")
    taps = fill(page, ICANS3_WITHHOLD)
    page.get_by_role("button", name="Grade").click()
    taps += 1
    assert taps < TAP_BUDGET, f"{taps} taps"
    summary = page.locator("#summary")
    expect(summary).to_be_visible()
    expect(summary.locator('[data-summary="icans"]')).to_have_text("ICANS 3")
    expect(summary.locator('[data-summary="action"]')).to_have_text("Withhold blinatumomab")
    expect(summary.locator('[data-summary="crs"]')).to_have_text("CRS none")
    expect(summary.locator('[data-summary="flags"]')).to_have_text("No critical flags")
    assert page.evaluate("window.scrollY") == 0
    assert in_viewport(page, "#summary"), "the summary is in the first screen"
    assert in_viewport(page, "#actions-title"), "so is the action's heading"
    assert shown_grade(page, "ICANS") == ("3", "graded")
    page.screenshot(path=screenshots / "v2-phone-icans3-withhold.png")
    # it stays in view as the nurse scrolls to the details
    page.evaluate("window.scrollTo(0, 1500)")
    assert page.evaluate("window.scrollY") > 1000
    assert in_viewport(page, "#summary")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360


@pytest.mark.parametrize(
    ("words", "total", "grade"),
    [(["Always"] * 4 + ["Never"] * 4, 0, "0"), (["Rarely"] * 4 + ["Often"] * 4, 24, "3"), (["Often"] * 4 + ["Rarely"] * 3 + ["Sometimes"], 9, "3")],
    ids=["well-child", "delirious-child", "at-the-cut-off"],
)
def test_capd_answered_in_words(phone: BrowserContext, words: list[str], total: int, grade: str) -> None:
    page = phone.new_page()
    page.goto("/")
    page.fill(by_id("patient.age_years"), "6")
    expect(page.locator(by_id("neuro.ice"))).to_be_hidden()
    for item, word in enumerate(words):
        page.locator(by_id(f"neuro.capd.{item}")).locator("label", has_text=word).click()
    expect(page.locator("#capd-total")).to_have_text(f"Total {total} of 32")
    reversed_score = dict(zip(["Never", "Rarely", "Sometimes", "Often", "Always"], [4, 3, 2, 1, 0], strict=True))
    expect(page.locator(by_id("neuro.capd.0-score"))).to_have_text(f"score {reversed_score[words[0]]}")  # item 1 reversed
    expect(page.locator(by_id("neuro.capd.4-score"))).to_have_text(f"score {4 - reversed_score[words[4]]}")
    for name in ("neuro.seizure", "neuro.motor", "neuro.cerebral_edema"):
        tap(page, name, "none")
    tap(page, "neuro.consciousness", "alert")
    page.check(by_id("neuro.icp_signs--none"))
    page.get_by_role("button", name="Grade").click()
    assert shown_grade(page, "ICANS") == (grade, "graded")
    expect(page.locator('section.grade-card[aria-label="ICANS"] h3')).to_contain_text("CAPD")


def test_enter_in_a_number_field_does_not_submit_and_clear_asks_first(page: Page) -> None:
    page.goto("/")
    page.fill(by_id("patient.age_years"), "40")
    page.locator(by_id("vitals.temperature")).fill("38,5")
    page.locator(by_id("vitals.temperature")).press("Enter")
    assert page.locator("#result").count() == 0, "nothing was graded or recorded"
    assert page.evaluate("document.activeElement.id") == "vitals.sbp_mmhg"
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("#clear-confirm")).to_be_visible()
    page.get_by_role("link", name="Keep the values").click()
    expect(page.locator("#clear-confirm")).to_be_hidden()
    expect(page.locator(by_id("vitals.temperature"))).to_have_value("38,5")
    page.get_by_role("link", name="Clear").click()
    page.get_by_role("link", name="Yes, clear").click()
    expect(page.locator(by_id("vitals.temperature"))).to_have_value("")
    page.fill(by_id("patient.age_years"), "40")
    page.fill(by_id("vitals.temperature"), "38,5")  # a decimal comma is read
    page.get_by_role("button", name="Grade").click()
    assert shown_grade(page, "CRS") == ("1", "incomplete")


def test_fahrenheit_is_shown_with_its_celsius(page: Page) -> None:
    page.goto("/")
    tap(page, "vitals.temperature_unit", "f")
    page.fill(by_id("vitals.temperature"), "101.3")
    expect(page.locator("#temperature-celsius")).to_have_text("= 38.5 °C")
    tap(page, "vitals.temperature_unit", "c")
    expect(page.locator("#temperature-celsius")).to_have_text("")


def test_the_sticky_bars_never_hide_the_focused_field(phone: BrowserContext) -> None:
    """WCAG 2.2 SC 2.4.11: tabbing through the result page's form on a phone, every focused control
    is between the summary bar at the top and the button bar at the bottom."""
    page = phone.new_page()
    page.goto("/")
    fill(page, {"patient.age_years": ["40"], "vitals.temperature": ["39"]})
    page.get_by_role("button", name="Grade").click()
    expect(page.locator("#summary")).to_be_visible()
    page.locator(by_id("patient.age_years")).focus()
    hidden = []
    for _ in range(40):
        page.keyboard.press("Tab")
        state = page.evaluate(
            """() => {
                const e = document.activeElement, r = e.getBoundingClientRect();
                const top = document.getElementById('summary').getBoundingClientRect().bottom;
                const bottom = document.getElementById('submit-row').getBoundingClientRect().top;
                const inBar = e.closest('#submit-row') !== null;
                return {id: e.id || e.tagName, covered: !inBar && (r.top < top - 1 || r.bottom > bottom + 1)};
            }"""
        )
        if state["covered"]:
            hidden.append(state["id"])
    assert hidden == []


def test_copy_to_notes_puts_the_server_rendered_note_on_the_clipboard(browser: Browser, server: Server) -> None:
    context = browser.new_context(base_url=server.url, timezone_id="Asia/Shanghai", locale="en-GB")
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto("/")
    fill(page, ICANS3_WITHHOLD)
    page.get_by_role("button", name="Grade").click()
    page.get_by_role("button", name="Copy to notes").click()
    expect(page.locator("#copy-status")).to_have_text("Copied: paste it into the notes.")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.locator("#note-text").input_value()
    assert "ICANS (ASTCT 2019, ICE): grade 3" in copied and "Withhold blinatumomab" in copied
    assert page.locator("#assessment-id").inner_text() in copied
    # the time is local, with its zone; the note keeps UTC
    shown = page.locator("time[data-local]").inner_text()
    assert "UTC" not in shown and ("GMT+8" in shown or "CST" in shown), shown
    assert " UTC" in copied.splitlines()[1]
    context.close()


def test_no_serious_accessibility_violations_on_the_phone_pages(browser: Browser, server: Server, axe_source: str) -> None:
    context = browser.new_context(base_url=server.url, bypass_csp=True, **PHONE)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto("/")
    assert serious_violations(page, axe_source) == []
    fill(page, ICANS3_WITHHOLD)
    page.get_by_role("button", name="Grade").click()
    expect(page.locator("#summary")).to_be_visible()
    page.locator(".record-details > summary").click()
    page.locator(".note > summary").click()
    assert serious_violations(page, axe_source) == []
    page.goto("/?lang=zh_CN")
    page.fill(by_id("vitals.sbp_mmhg"), "85/50")
    page.locator(".submit-row button[type=submit]").click()  # "Grade", in whatever words the catalogue has
    expect(page.locator("#error-summary")).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    assert serious_violations(page, axe_source) == []
    context.close()
