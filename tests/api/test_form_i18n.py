"""The bedside pages are ready for translation (issue 17, item 6): every word they show goes through
gettext, the catalogue template holds every marked string, and the language is chosen by ?lang=,
the switch's cookie or Accept-Language, with <html lang> following it.

The completeness check renders the pages in a pseudo-language that brackets every translated
string (⟦...⟧) and then reads the page as a nurse sees it: any word left outside brackets was
rendered from an unmarked string. The rule files' English (criteria, notes, action texts) is marked
lang="en" and is left out on purpose: quoted criteria stay in the source's English.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

import service.i18n
from aegrade.models import ThrombosisSection
from service.app import create_app
from service.form import THROMBOSIS, THROMBOSIS_OPTIONS, THROMBOSIS_WORDS
from service.i18n import Translator
from service.settings import ServiceSettings
from tests.form_filling import post_form

REPO = Path(__file__).resolve().parents[2]
POT = REPO / "service" / "locales" / "messages.pot"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('form-i18n') / 'audit.sqlite3'}"
    with TestClient(create_app(ServiceSettings(database_url=url))) as test_client:
        yield test_client


def fresh(app: TestClient) -> TestClient:
    """The module's browser with no cookies: a new visitor (a language chosen by an earlier test is gone).
    One client for all: a second TestClient of the same app would run on another event loop than the
    grading path's."""
    app.cookies.clear()
    return app


def html_lang(page: str) -> str:
    found = re.search(r'<html lang="([^"]+)">', page)
    assert found is not None
    return found.group(1)


# ---- choosing the language ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "lang"),
    [("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"), ("zh", "zh-CN"), ("zh-Hans-CN", "zh-CN"), ("zh-TW", "en"),
     ("en-GB,en;q=0.9", "en"), ("fr-FR", "en"), ("", "en"), ("zh;q=0, en", "en")],
)
def test_the_language_follows_accept_language(app: TestClient, accept: str, lang: str) -> None:
    page = fresh(app).get("/", headers={"accept-language": accept} if accept else {})
    assert html_lang(page.text) == lang


def test_the_switch_keeps_the_pages_other_parameters(app: TestClient) -> None:
    """On every page with a switch: /patients/start?assessment=... in Chinese is still that page."""
    page = fresh(app).get("/patients/start?assessment=" + "a" * 32 + "&lang=en").text
    assert f'href="/patients/start?assessment={"a" * 32}&amp;lang=zh_CN"' in page


def test_the_switch_is_a_plain_link_whose_choice_is_kept_in_a_cookie(app: TestClient) -> None:
    browser = fresh(app)
    page = browser.get("/", headers={"accept-language": "en"}).text
    assert '<a href="/?lang=zh_CN" hreflang="zh-CN" lang="zh-CN">简体中文</a>' in page
    assert '<a href="/?lang=en" hreflang="en" lang="en" aria-current="true">English</a>' in page
    chosen = browser.get("/?lang=zh_CN", headers={"accept-language": "en"})
    assert html_lang(chosen.text) == "zh-CN"
    cookie = chosen.headers["set-cookie"]
    assert "aegrade_lang=zh_CN" in cookie and "Max-Age=" in cookie and "Path=/" in cookie
    # the next page, and the result of a POST, stay in the chosen language without ?lang=
    assert html_lang(browser.get("/", headers={"accept-language": "en"}).text) == "zh-CN"
    graded = post_form(browser, {"patient.age_years": "40", "vitals.temperature": "38.2"})
    assert html_lang(graded.text) == "zh-CN"
    assert html_lang(browser.get("/?lang=en").text) == "en"
    assert html_lang(browser.get("/").text) == "en"


def test_an_unknown_lang_is_ignored_and_sets_no_cookie(app: TestClient) -> None:
    page = fresh(app).get("/?lang=xx-YY", headers={"accept-language": "zh-CN"})
    assert html_lang(page.text) == "zh-CN" and "aegrade_lang" not in page.headers.get("set-cookie", "")


# ---- every word through gettext --------------------------------------------------------------------


def _bracket(text: str) -> str:
    return f"⟦{text}⟧"


PSEUDO = Translator("zh_CN", _bracket, lambda one, many, n: _bracket(one if n == 1 else many))

# What may be shown untranslated: proper names and symbols, not words.
ALLOWED = {
    "CRS", "ICANS", "ICE", "CAPD", "API", "UTC", "English", "简体中文", "mmHg", "kg", "°C", "°F", "%", "L/min",
    "P", "R1", "R2", "U", "LOCAL", "O", "A", "B", "AB",
}
SYMBOL = re.compile(r"^[\d\s.,:;()\[\]/=+\-–—?!'\"“”·⚠]*$")
RULESET = re.compile(r"^[a-z0-9-]+@[0-9.]+$")


class Untranslated(HTMLParser):
    """Visible text and labelling attributes left outside the pseudo-language's brackets."""

    SKIP = {"script", "style", "textarea", "code", "title"}
    ATTRIBUTES = ("aria-label", "title", "placeholder", "alt")

    def __init__(self) -> None:
        super().__init__()
        self.left: list[str] = []
        self._skip: list[str] = []

    def _check(self, text: str) -> None:
        previous = None
        while previous != text:  # innermost brackets first: a translated text can hold another
            previous, text = text, re.sub(r"⟦[^⟦⟧]*⟧", " ", text)
        for token in text.split():
            bare = token.strip(".,:;()[]?!'\"“”")
            if bare and not SYMBOL.match(token) and bare not in ALLOWED and not RULESET.match(bare):
                self.left.append(token)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self._skip or tag in self.SKIP or a.get("lang") == "en":
            if tag not in ("input", "meta", "link", "br"):
                self._skip.append(tag)
            return
        for name in self.ATTRIBUTES:
            if a.get(name):
                self._check(a[name] or "")
        for name, value in attrs:
            if name.startswith("data-i18n-") and value:
                self._check(value)

    def handle_endtag(self, tag: str) -> None:
        if self._skip and self._skip[-1] == tag:
            self._skip.pop()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._check(data)


def untranslated(page: str) -> list[str]:
    parser = Untranslated()
    parser.feed(page.split("<body", 1)[1].split(">", 1)[1])
    return parser.left


CASES = {
    "empty form": None,
    "errors": {"patient.age_years": "forty", "vitals.sbp_mmhg": "85/50", "vitals.spo2_pct": "94%",
               "thrombosis.alt_U_L": "1,200", "crs.oxygen.device": "nasal_cannula", "patient.age_months": "40",
               "neuro.ice.orientation": "4", "blinatumomab.dose.value": "28"},
    "model bound and engine check": {"patient.age_years": "40", "vitals.temperature": "50", "crs.hypotension": "no",
                                     "crs.vasopressors": "norepinephrine", "crs.oxygen.device": "nasal_cannula"},
    "wrong tool": {"patient.age_years": "7", **{f"neuro.ice.{k}": "1" for k in ("orientation", "naming", "commands", "writing", "attention")}},
    "ICANS 3 withhold, flags, notes": {
        "patient.age_years": "7", "patient.weight_kg": "24", "vitals.temperature": "101.3", "vitals.temperature_unit": "f",
        "vitals.spo2_pct": "88", "crs.oxygen.device": "none", **{f"neuro.capd.{i}": "2" for i in range(8)},
        "neuro.consciousness": "awakens_to_tactile", "neuro.seizure": "none", "neuro.motor": "none",
        "neuro.cerebral_edema": "none", "neuro.icp_signs": "none", "blinatumomab.on": "yes",
        "blinatumomab.dose.value": "15", "blinatumomab.dose.unit": "mcg/m2/day", "thrombosis.cvc_present": "yes",
        "thrombosis.steroid": "dexamethasone", "thrombosis.thrombophilia_traits": "PROTEIN_C_DEF",
    },
    "incomplete grades, could apply": {"patient.age_years": "30", "vitals.temperature": "39", "blinatumomab.on": "yes",
                                       "blinatumomab.dose.value": "9", "blinatumomab.dose.unit": "mcg/day",
                                       **{f"neuro.ice.{k}": v for k, v in (("orientation", "2"), ("naming", "1"), ("commands", "1"), ("writing", "0"), ("attention", "1"))}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_nothing_on_the_form_is_rendered_from_an_unmarked_string(
    app: TestClient, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    real = service.i18n.translator
    monkeypatch.setattr(service.i18n, "translator", lambda locale: PSEUDO if locale == "zh_CN" else real(locale))
    browser = fresh(app)
    browser.cookies.set("aegrade_lang", "zh_CN")
    fields = CASES[case]
    page = browser.get("/") if fields is None else post_form(browser, fields)
    assert page.status_code in (200, 422), page.status_code
    assert "⟦" in page.text, "the pseudo-language is in use"
    assert untranslated(page.text) == []


def test_the_check_finds_an_unmarked_string(app: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The completeness check can fail: a translator that leaves one label out is caught."""
    monkeypatch.setattr(
        service.i18n, "translator",
        lambda locale: Translator("zh_CN", lambda t: t if t == "Weight" else _bracket(t), PSEUDO.ngettext),
    )
    browser = fresh(app)
    browser.cookies.set("aegrade_lang", "zh_CN")
    assert "Weight" in untranslated(browser.get("/").text)


@pytest.mark.slow  # a service of its own (keys set)
def test_the_login_page_is_translated_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = service.i18n.translator
    monkeypatch.setattr(service.i18n, "translator", lambda locale: PSEUDO if locale == "zh_CN" else real(locale))
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", api_keys=["k" * 20])
    with TestClient(create_app(settings)) as keyed:
        keyed.cookies.set("aegrade_lang", "zh_CN")
        page = keyed.get("/login")
        assert html_lang(page.text) == "zh-CN" and untranslated(page.text) == []
        wrong = keyed.post("/login", data={"key": "w" * 20, "csrf_token": re.findall(r'name="csrf_token" value="([^"]+)"', page.text)[0]})
        assert wrong.status_code == 401 and untranslated(wrong.text) == []


# ---- the catalogue template -----------------------------------------------------------------------


def test_the_catalogue_template_holds_every_marked_string(tmp_path: Path) -> None:
    """service/locales/messages.pot is what `pybabel extract` finds now: regenerate it when this fails
    (the command is in service/babel.cfg)."""
    fresh_pot = tmp_path / "messages.pot"
    subprocess.run(
        [str(Path(sys.executable).parent / "pybabel"), "extract", "-F", "service/babel.cfg", "-o", str(fresh_pot), "service"],
        cwd=REPO, check=True, capture_output=True,
    )
    with fresh_pot.open("rb") as handle:
        extracted = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(handle) if m.id}
    with POT.open("rb") as handle:
        kept = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(handle) if m.id}
    assert extracted - kept == set(), "strings missing from messages.pot"
    for text in ("Makes eye contact", "Withhold {drug}", "Check %(num)d field", "Total {sum} of {max}", "Access key"):
        assert text in kept


def test_every_thrombosis_field_and_option_has_words_of_ours() -> None:
    assert set(THROMBOSIS_WORDS) == set(ThrombosisSection.model_fields)
    for spec in THROMBOSIS.fields:
        for value, label in spec.options:
            assert value in THROMBOSIS_OPTIONS or spec.name.endswith("abo_group"), (spec.name, value, label)


def test_form_js_has_no_words_of_its_own() -> None:
    """Its text comes from the page's data-i18n-* attributes, which the template translates."""
    script = (REPO / "service" / "static" / "form.js").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    literals = re.findall(r'"([^"\n]*)"', code)
    worded = [s for s in literals if re.search(r"[A-Za-z]{2,} [A-Za-z]{2,}", s) and s != "use strict"]
    assert worded == []
    template = (REPO / "service" / "templates" / "form.html").read_text()
    for key in set(re.findall(r'words\("([a-z-]+)"', code)) | set(re.findall(r'"(placeholder-[cf])"', code)):
        assert f"data-i18n-{key}=" in template, key
