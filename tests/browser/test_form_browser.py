"""The bedside form in a real browser (Debian's Chromium, Playwright) against a real uvicorn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from service.form import FIELDS
from tests.api.server import Server
from tests.form_filling import form_fields

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "vignettes" / "crs_icans.jsonl"
VIGNETTES = {v["id"]: v for v in (json.loads(line) for line in GOLDEN.read_text().splitlines() if line.strip())}
CASES = {
    "V04": "adult scored by ICE",
    "V24": "child scored by CAPD",
    "V19": "fever masked after tocilizumab",
    "V01": "no CRS",
}


def by_id(name: str) -> str:
    return f'[id="{name}"]'


def tap(page: Page, name: str, value: str) -> None:
    """Tap the button (the label of a radio input) that answers `name` with `value`."""
    page.click(f'label[for="{name}--{value}"]')


def fill(page: Page, fields: dict[str, list[str]]) -> int:
    """Fill the form as a person would: age first (it decides which tool is shown), opening an
    optional section before its first field. Returns the taps and fills it took (a select is two:
    open it, choose)."""
    taps = 0
    ordered = sorted(fields.items(), key=lambda item: item[0] != "patient.age_years")
    for name, values in ordered:
        spec = FIELDS[name]
        section = name.split(".", 1)[0]
        if section in ("thrombosis", "blinatumomab") and page.locator(f"#section-{section}[open]").count() == 0:
            page.locator(f"#section-{section} > summary").click()
            taps += 1
        if spec.kind == "check":
            page.check(by_id(name))
            taps += 1
        elif spec.kind == "multi":
            for value in values:
                page.check(by_id(f"{name}--{value}"))
                taps += 1
        elif spec.segmented:
            if values[0] != ("c" if name == "vitals.temperature_unit" else ""):
                tap(page, name, values[0])
                taps += 1
        elif spec.kind in ("choice", "yesno"):
            page.select_option(by_id(name), values[0])
            taps += 2
        else:
            page.fill(by_id(name), values[0])
            taps += 1
    return taps


def shown_grade(page: Page, title: str) -> tuple[str | None, str | None]:
    card = page.locator(f'section.grade-card[aria-label="{title}"]')
    return card.get_attribute("data-grade"), card.get_attribute("data-status")


def serious_violations(page: Page, axe_source: str) -> list[dict[str, Any]]:
    page.add_script_tag(content=axe_source)
    results = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("vignette_id", list(CASES), ids=lambda v: f"{v}-{CASES[v].replace(' ', '-')}")
def test_vignette_graded_in_the_browser_as_by_the_api(
    page: Page, server: Server, screenshots: Path, vignette_id: str
) -> None:
    vignette = VIGNETTES[vignette_id]
    page.goto("/")
    fill(page, form_fields(vignette["request"]))
    page.screenshot(path=screenshots / f"{vignette_id}-filled.png", full_page=True)
    page.get_by_role("button", name="Grade").click()
    expect(page.locator("#result")).to_be_attached()
    page.screenshot(path=screenshots / f"{vignette_id}-result.png", full_page=True)

    api = httpx.post(f"{server.url}/v1/assessments", json=vignette["request"]).json()
    crs, icans = shown_grade(page, "CRS"), shown_grade(page, "ICANS")
    assert crs == (str(api["crs"]["grade"]), api["crs"]["status"])
    assert icans == (str(api["icans"]["grade"]), api["icans"]["status"])
    assert (crs[0], icans[0]) == (str(vignette["expected"]["crs_grade"]), str(vignette["expected"]["icans_grade"]))
    # the grade is written out, not only coloured
    expect(page.locator('section.grade-card[aria-label="CRS"] .grade-text')).to_contain_text(
        f"Grade {api['crs']['grade']}"
    )
    assert api["icans"]["tool"] in page.locator('section.grade-card[aria-label="ICANS"] h3').inner_text()
    assert len(page.locator("#assessment-id").inner_text()) == 32


def test_invalid_value_shows_an_inline_error_and_keeps_the_input(page: Page, screenshots: Path) -> None:
    page.goto("/")
    page.fill(by_id("patient.age_years"), "forty")
    page.fill(by_id("vitals.temperature"), "38.6")
    page.get_by_role("button", name="Grade").click()
    error = page.locator(by_id("patient.age_years-error"))
    expect(error).to_be_visible()
    expect(error).to_contain_text("Enter a number")
    field = page.locator(by_id("patient.age_years"))
    expect(field).to_have_value("forty")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator(by_id("vitals.temperature"))).to_have_value("38.6")
    expect(page.locator("#error-summary")).to_be_focused()
    assert page.locator("#result").count() == 0
    page.screenshot(path=screenshots / "invalid-inline-error.png", full_page=True)


@pytest.mark.parametrize(("fahrenheit", "crs_grade"), [("100.4", "1"), ("100.3", "0")])
def test_fahrenheit_switch(page: Page, fahrenheit: str, crs_grade: str) -> None:
    page.goto("/")
    fill(page, {"patient.age_years": ["45"], "crs.fever_masked": ["no"], "crs.hypotension": ["no"],
                "crs.vasopressors": ["none"], "crs.oxygen.device": ["none"]})
    tap(page, "vitals.temperature_unit", "f")
    expect(page.locator(by_id("vitals.temperature"))).to_have_attribute("placeholder", "e.g. 101.3 (°F)")
    page.fill(by_id("vitals.temperature"), fahrenheit)
    expect(page.locator("#temperature-celsius")).to_have_text("= 38.0 °C" if fahrenheit == "100.4" else "= 37.9 °C")
    page.get_by_role("button", name="Grade").click()
    assert shown_grade(page, "CRS")[0] == crs_grade
    expect(page.locator(by_id("vitals.temperature_unit--f"))).to_be_checked()  # kept for the next entry


def test_ice_total_is_computed_as_you_tick_and_capd_replaces_it_for_a_child(page: Page) -> None:
    page.goto("/")
    page.fill(by_id("patient.age_years"), "45")
    for item, score in (("orientation", "3"), ("naming", "2"), ("commands", "1"), ("writing", "0")):
        tap(page, f"neuro.ice.{item}", score)
    expect(page.locator("#ice-total")).to_have_text("4 of 5 answered")
    tap(page, "neuro.ice.attention", "1")
    expect(page.locator("#ice-total")).to_have_text("Total 7 of 10")
    expect(page.locator(by_id("neuro.capd"))).to_be_hidden()

    page.goto("/")
    page.fill(by_id("patient.age_years"), "7")
    expect(page.locator(by_id("neuro.ice"))).to_be_hidden()
    expect(page.locator(by_id("neuro.capd"))).to_be_visible()
    page.fill(by_id("patient.age_years"), "14")
    page.check(by_id("patient.developmental_delay"))
    expect(page.locator(by_id("neuro.capd"))).to_be_visible()
    for i in range(8):
        tap(page, f"neuro.capd.{i}", "2")  # "Sometimes": 2 points either way round
    expect(page.locator("#capd-total")).to_have_text("Total 16 of 32")


def test_flow_field_only_for_devices_that_need_it(page: Page) -> None:
    page.goto("/")
    flow = page.locator('[data-field="crs.oxygen.flow_l_min"]')
    page.select_option(by_id("crs.oxygen.device"), "bipap")
    expect(flow).to_be_hidden()
    page.select_option(by_id("crs.oxygen.device"), "nasal_cannula")
    expect(flow).to_be_visible()


def test_phone_layout(browser: Browser, server: Server, screenshots: Path) -> None:
    context = browser.new_context(base_url=server.url, viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto("/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360, "no sideways scrolling at 360 px"
    page.screenshot(path=screenshots / "phone-form.png", full_page=True)
    small = page.evaluate(
        """() => [...document.querySelectorAll('input[type=text], select, button, .button, .check, summary, .segment label, .languages a')]
              .filter(e => e.offsetParent !== null)
              .map(e => [e.id || e.className || e.tagName, e.getBoundingClientRect().height, e.getBoundingClientRect().width])
              .filter(([_, h, w]) => h < 44 || w < 44)"""
    )
    assert small == [], f"tap targets under 44 px: {small[:10]}"
    fill(page, form_fields(VIGNETTES["V24"]["request"]))
    page.get_by_role("button", name="Grade").click()
    expect(page.locator("#result")).to_be_attached()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.screenshot(path=screenshots / "phone-result.png", full_page=True)
    context.close()


def test_works_with_javascript_off(browser: Browser, server: Server) -> None:
    context = browser.new_context(base_url=server.url, java_script_enabled=False)
    page = context.new_page()
    page.goto("/")
    expect(page.locator(by_id("neuro.ice"))).to_be_visible()  # both tools shown, nothing hidden
    expect(page.locator(by_id("neuro.capd"))).to_be_visible()
    fill(page, form_fields(VIGNETTES["V04"]["request"]))
    page.get_by_role("button", name="Grade").click()
    assert shown_grade(page, "CRS") == ("2", "graded")
    assert shown_grade(page, "ICANS") == ("1", "graded")
    context.close()


def test_keyboard_only(page: Page) -> None:
    """Tab order follows the page (a row of buttons is one stop, arrows choose within it); Enter in
    a number field moves on instead of submitting; the Grade button submits."""
    page.goto("/")
    page.locator("nav.languages a").last.focus()
    order = []
    for _ in range(8):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
    assert order == [
        "patient.age_years",
        "patient.age_months",
        "patient.weight_kg",
        "patient.developmental_delay",
        "vitals.temperature",
        "vitals.temperature_unit--c",
        "vitals.sbp_mmhg",
        "vitals.map_mmhg",
    ]
    for _ in range(3):
        page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "vitals.temperature"
    page.keyboard.type("38.4")
    page.keyboard.press("Tab")
    page.keyboard.press("ArrowRight")  # °C -> °F, as radio buttons do
    assert page.evaluate("document.activeElement.id") == "vitals.temperature_unit--f"
    page.keyboard.press("ArrowLeft")
    for _ in range(5):
        page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "patient.age_years"
    page.keyboard.type("40")
    page.keyboard.press("Enter")  # does not submit a half-filled assessment: moves to the next field
    assert page.evaluate("document.activeElement.id") == "patient.age_months"
    assert page.locator("#result").count() == 0
    page.get_by_role("button", name="Grade").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#result")).to_be_attached()
    assert shown_grade(page, "CRS") == ("1", "incomplete")
    expect(page.locator("#summary")).to_be_focused()


def test_an_incomplete_grade_shows_its_bound_and_what_could_apply(page: Page, screenshots: Path) -> None:
    """v1.1: fever alone is CRS grade 1, up to 4 while hypotension and oxygen are not reported; the
    card says so in words, and a label action that could apply is listed as such."""
    page.goto("/")
    page.locator("#section-blinatumomab > summary").click()  # a collapsed, optional section
    fill(page, {"patient.age_years": ["30"], "vitals.temperature": ["39"], "blinatumomab.on": ["yes"],
                "blinatumomab.dose.value": ["9"], "blinatumomab.dose.unit": ["mcg/day"],
                **{f"neuro.ice.{k}": [v] for k, v in (("orientation", "2"), ("naming", "1"), ("commands", "1"),
                                                       ("writing", "0"), ("attention", "1"))}})
    page.get_by_role("button", name="Grade").click()
    expect(page.locator("#result")).to_be_attached()
    card = page.locator('section.grade-card[aria-label="CRS"]')
    assert shown_grade(page, "CRS") == ("1", "incomplete")
    expect(card.locator(".grade-text")).to_contain_text("Grade 1 (up to 4: ")
    expect(card.locator(".grade-text")).to_contain_text("Oxygen device")
    expect(card.locator(".undetermined-by")).to_contain_text("up to grade 4")
    expect(page.locator(".undetermined-actions")).to_contain_text("Could apply: ")
    expect(page.locator(".undetermined-actions")).to_contain_text("Motor findings")
    expect(page).to_have_title("CRS grade 1 (up to 4) / ICANS grade 2 (up to 4) - aegrade bedside grading")
    page.screenshot(path=screenshots / "incomplete-grade.png", full_page=True)


def test_no_serious_accessibility_violations(browser: Browser, server: Server, axe_source: str) -> None:
    # axe-core is injected as an inline script, which the service's policy forbids: this context
    # alone bypasses it (every other test runs under it).
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.goto("/")
    assert serious_violations(page, axe_source) == []
    page.fill(by_id("patient.age_years"), "forty")
    page.get_by_role("button", name="Grade").click()
    assert serious_violations(page, axe_source) == []
    page.goto("/")
    fill(page, form_fields(VIGNETTES["V14"]["request"]))
    page.get_by_role("button", name="Grade").click()
    expect(page.locator("#result")).to_be_attached()
    assert serious_violations(page, axe_source) == []
    context.close()


# ---- issue 16: the Content-Security-Policy, the CSRF token, the sign-in --------------------------


def test_the_form_works_under_its_content_security_policy_with_its_csrf_token(page: Page, server: Server) -> None:
    """form.js runs under `script-src 'self'` (the ICE total is its work); the form posts its hidden
    token; a post from another page (no token) grades nothing. The page fixture fails the test if the
    policy blocked anything."""
    response = page.goto("/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY" and response.headers["cache-control"] == "no-store"
    token = page.locator('input[name="csrf_token"]')
    assert token.count() == 1 and len(token.get_attribute("value") or "") == 64
    page.fill(by_id("patient.age_years"), "45")
    for item, score in (("orientation", "4"), ("naming", "3"), ("commands", "1"), ("writing", "1"), ("attention", "1")):
        tap(page, f"neuro.ice.{item}", score)
    expect(page.locator("#ice-total")).to_have_text("Total 10 of 10")  # the script ran
    page.get_by_role("button", name="Grade").click()
    expect(page.locator("#result")).to_be_attached()
    # the same fields from a page without the token: refused, nothing graded, the values kept
    refused = page.request.post("/", form={"patient.age_years": "45", "vitals.temperature": "38.5"})
    assert refused.status == 403 and 'id="assessment-id"' not in refused.text()


def test_with_api_keys_the_form_opens_after_signing_in(browser: Browser, tmp_path: Path) -> None:
    key = "bedside-key-0123456789"
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    keyed = Server({"AEGRADE_DATABASE_URL": url, "AEGRADE_API_KEYS": key}).start()
    try:
        for javascript in (True, False):
            context = browser.new_context(base_url=keyed.url, java_script_enabled=javascript)
            page = context.new_page()
            blocked: list[str] = []
            page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
            page.goto("/")
            assert page.url.endswith("/login")
            page.fill("#key", "not-the-key-at-all-000")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#error-summary")).to_contain_text("not valid")
            page.fill("#key", key)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("button", name="Grade")).to_be_visible()
            cookies = {c["name"]: c for c in context.cookies()}
            assert cookies["aegrade_session"]["httpOnly"] and cookies["aegrade_session"]["sameSite"] == "Strict"
            fill(page, form_fields(VIGNETTES["V04"]["request"]))
            page.get_by_role("button", name="Grade").click()
            assert shown_grade(page, "CRS") == ("2", "graded")
            page.get_by_role("button", name="Sign out").click()
            assert page.url.endswith("/login")
            page.goto("/")
            assert page.url.endswith("/login")
            assert blocked == []
            context.close()
    finally:
        keyed.stop()
