"""The bedside pages' Simplified Chinese: the catalogues are complete and current, and the pages use them.

- service/locales/messages.pot is what Babel extracts from the sources now (service/babel.cfg), and
  every string the page code hands to a translator is in it (so a call Babel's keywords miss shows);
- the zh_CN catalogue has every msgid of the template, each with a non-empty, non-fuzzy msgstr in
  Chinese, keeping the msgid's placeholders ({name}, %(name)d);
- every text the form quotes from the rule files (the CRS and ICANS criteria; the flag messages and
  label-action texts) has our Chinese rendering in service/locales/zh_CN/criteria.yaml and
  messages.yaml, made from the English it shows, and every number of the English is in the Chinese;
- a zh-CN request (Accept-Language or ?lang=) gets <html lang="zh-CN"> and none of the catalogue's
  English outside the parts that stay English (lang="en"), and English stays the default.
"""

from __future__ import annotations

import ast
import hashlib
import re
import string
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from babel.messages.catalog import Catalog, Message
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.form_filling import form_fields, post_form

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "service"
LOCALES = SERVICE / "locales"
TEMPLATE = LOCALES / "messages.pot"
ZH_PO = LOCALES / "zh_CN" / "LC_MESSAGES" / "messages.po"
UPDATE = (
    "re-extract and update: .venv/bin/pybabel extract -F service/babel.cfg -o service/locales/messages.pot service"
    " && .venv/bin/pybabel update -i service/locales/messages.pot -d service/locales -l zh_CN (README, 'Simplified Chinese')"
)
CJK = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff01-\uff5e]")  # Han, CJK and full-width punctuation
# msgstrs that are rightly the same as their msgid in Chinese: abbreviations Chinese clinicians use as
# they are, and a conversion that is only a number and a unit.
SAME_IN_CHINESE = {"CRS", "ICANS", "= {celsius} °C"}


def _read(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle)


def _key(message: Message) -> Any:
    return message.id  # a str, or (singular, plural) for an ngettext entry


def _texts(message: Message) -> tuple[list[str], list[str]]:
    """A message's msgids (singular, plural) and msgstrs, as lists of text ("" for none)."""
    ids = message.id if isinstance(message.id, (tuple, list)) else [message.id]
    strings = message.string if isinstance(message.string, (tuple, list)) else [message.string]
    return [str(i or "") for i in ids], [str(s or "") for s in strings]


def _ids(catalog: Catalog) -> set[Any]:
    return {_key(m) for m in catalog if m.id}


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """What Babel extracts from the sources now, with the project's mapping (service/babel.cfg)."""
    out = tmp_path_factory.mktemp("pot") / "messages.pot"
    CommandLineInterface().run(  # type: ignore[no-untyped-call]
        ["pybabel", "-q", "extract", "-F", str(SERVICE / "babel.cfg"), "-o", str(out), "--omit-header", str(SERVICE)]
    )
    return _read(out)


@pytest.fixture(scope="module")
def zh() -> Catalog:
    return _read(ZH_PO)


# ---- the catalogues ----------------------------------------------------------------------------------


def test_the_template_is_what_the_sources_hold_now(extracted: Catalog) -> None:
    in_sources, in_template = _ids(extracted), _ids(_read(TEMPLATE))
    assert in_sources, "nothing extracted: is service/babel.cfg read?"
    assert sorted(map(str, in_sources - in_template)) == [], f"new text not in messages.pot: {UPDATE}"
    assert sorted(map(str, in_template - in_sources)) == [], f"messages.pot has text the sources no longer have: {UPDATE}"


def _literal_calls(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """The string literals the page code hands to a translator: _(), N_(), tr(), gettext(),
    t.gettext(), tr.ngettext()/ngettext() (singular and plural)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name not in {"_", "N_", "tr", "gettext", "ngettext"}:
            continue
        count = 2 if name == "ngettext" else 1
        for arg in node.args[:count]:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield node.lineno, arg.value


def test_every_string_the_code_hands_a_translator_is_extracted(extracted: Catalog) -> None:
    """Babel finds only the keywords it is told of: a translator called under another name (tr(...))
    would show its English in every language. This reads the code itself."""
    known = {part for key in _ids(extracted) for part in (key if isinstance(key, tuple) else (key,))}
    missed = [
        f"{path.relative_to(REPO)}:{line}: {text!r}"
        for path in sorted(SERVICE.glob("*.py"))
        for line, text in _literal_calls(ast.parse(path.read_text(), str(path)))
        if text not in known
    ]
    assert missed == [], f"marked for translation but not extracted (keywords in service/babel.cfg?): {missed}"


def test_the_chinese_catalogue_has_every_entry_of_the_template(zh: Catalog) -> None:
    template, chinese = _ids(_read(TEMPLATE)), _ids(zh)
    assert sorted(map(str, template - chinese)) == [], f"not in the zh_CN catalogue: {UPDATE}"
    assert sorted(map(str, chinese - template)) == [], f"the zh_CN catalogue has entries the template lost: {UPDATE}"


def test_every_entry_is_translated_and_none_is_fuzzy(zh: Catalog) -> None:
    assert not zh.fuzzy, "the zh_CN catalogue's header is marked fuzzy"
    untranslated, fuzzy, not_chinese = [], [], []
    for message in zh:
        if not message.id:
            continue
        strings = _texts(message)[1]
        if not all(s.strip() for s in strings):
            untranslated.append(message.id)
        if message.fuzzy:
            fuzzy.append(message.id)
        if not all(CJK.search(s) for s in strings) and message.id not in SAME_IN_CHINESE:
            not_chinese.append(message.id)
    assert untranslated == []
    assert fuzzy == [], "fuzzy entries are guesses by pybabel update: translate them and drop the flag"
    assert not_chinese == [], "a msgstr with no Chinese in it (left in English?)"
    assert len(zh) > 400


def _placeholders(text: str) -> set[str]:
    braces = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    percent = set(re.findall(r"%\(\w+\)[diouxXeEfFgGcrs]", text))
    return braces | percent


@pytest.mark.parametrize(
    ("english", "chinese", "right"),
    [
        ("grade {grade}", "{grade} 级", True),
        ("grade {grade}", "{grad} 级", False),
        ("{n} observations", "次观察", False),
        ("%(num)d points", "%(num)d 分", True),
        ("%(num)d points", "%(num)s 分", False),
    ],
)
def test_the_placeholder_check_itself(english: str, chinese: str, right: bool) -> None:
    assert (_placeholders(english) == _placeholders(chinese)) is right


def test_placeholders_match_between_msgid_and_msgstr(zh: Catalog) -> None:
    wrong = []
    for message in zh:
        if not message.id:
            continue
        ids, strings = _texts(message)
        expected = _placeholders(ids[-1]) | _placeholders(ids[0])
        for text in strings:
            if _placeholders(text) != expected:
                wrong.append((message.id, text))
    assert wrong == []


def test_the_catalogue_uses_the_chinese_clinical_terms(zh: Catalog) -> None:
    """The terms the README lists for review are the ones the pages use, spelled one way."""
    by_id = {m.id: _texts(m)[1][0] for m in zh if isinstance(m.id, str) and m.id}
    assert by_id["Tocilizumab"] == "托珠单抗"
    assert by_id["Dexamethasone"] == "地塞米松"
    assert by_id["Mechanical ventilation"] == "机械通气"
    assert by_id["High-flow nasal cannula"] == "高流量鼻导管"
    assert by_id["Cerebral sinus venous thrombosis"].startswith("脑静脉窦血栓形成")
    assert "博纳吐单抗" in by_id["On blinatumomab now"]
    assert "门冬酰胺酶" in by_id["Asparaginase product"]
    assert by_id["Withhold {drug}"].startswith("暂停") and by_id["Stop {drug} permanently"].startswith("永久停用")
    assert "贝林妥欧" not in "".join(str(s) for s in by_id.values())  # one name for blinatumomab throughout


# ---- the renderings of the rule files' English ---------------------------------------------------------

RENDERED = {  # what the form quotes from the rule files, and where our Chinese renderings of it are
    "criterion": (("rules/crs/astct-2019.yaml", "rules/crs/ctcae-v4.03.yaml", "rules/icans/astct-2019.yaml"), "criteria.yaml"),
    "message": (("rules/asparaginase/thrombosis-flags.yaml", "rules/blinatumomab/label-actions.yaml"), "messages.yaml"),
}
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _rules(files: tuple[str, ...]) -> list[dict[str, Any]]:
    return [rule for name in files for rule in yaml.safe_load((REPO / name).read_text())["rules"]]


def _digest(text: str) -> str:
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


def _renderings(field: str) -> dict[str, dict[str, str]]:
    loaded: dict[str, dict[str, str]] = yaml.safe_load((LOCALES / "zh_CN" / RENDERED[field][1]).read_text())
    return loaded


@pytest.mark.parametrize("field", sorted(RENDERED))
def test_every_rule_text_the_form_quotes_has_a_chinese_rendering_of_its_english(field: str) -> None:
    """The form's "Why" list quotes the driving rules' criteria (CRS and ICANS), and its flags and
    label actions the rules' messages. Each has our Chinese rendering, made from the English the rule
    file has now: a changed text fails here until its rendering is reviewed (and `en_sha256` set to
    the digest this test gives)."""
    renderings, rules = _renderings(field), _rules(RENDERED[field][0])
    assert len(rules) > 10
    problems = []
    for rule in rules:
        rendering = renderings.get(rule["id"])
        if rendering is None:
            problems.append(f"{rule['id']}: no rendering")
        elif rendering.get("en_sha256") != _digest(rule[field]):
            problems.append(f"{rule['id']}: the English changed; review the rendering, then en_sha256: {_digest(rule[field])}")
        elif not CJK.search(rendering.get("translation") or ""):
            problems.append(f"{rule['id']}: the rendering has no Chinese")
    assert problems == []
    assert sorted(set(renderings) - {rule["id"] for rule in rules}) == [], "renderings of rules that no longer exist"


def _numbers_lost(english: str, chinese: str) -> list[str]:
    return [n for n in NUMBER.findall(english) if n not in NUMBER.findall(chinese)]


def test_the_number_check_itself() -> None:
    assert _numbers_lost("dexamethasone 8 mg every 8 hours, maximum 20 mg", "地塞米松 8 mg，每 8 小时一次，最大 20 mg") == []
    assert _numbers_lost("5 mg/m2 (maximum 8 mg)", "5 mg/m2（最大 80 mg）") == ["8"]
    assert _numbers_lost("above 2.5 x ULN", "高于 2 × 正常值上限") == ["2.5"]


def test_every_number_of_the_english_is_in_its_chinese() -> None:
    """Doses, thresholds, grades, ages and times are carried over as they are: a translation that
    loses or changes one would be a wrong instruction. (Rendering a number as a word would fail here.)"""
    lost = []
    for message in _read(ZH_PO):
        if message.id:
            ids, strings = _texts(message)
            lost += [(message.id, n) for text in strings for n in _numbers_lost(ids[-1], text)]
    for field, (files, _) in RENDERED.items():
        renderings = _renderings(field)
        lost += [(rule["id"], n) for rule in _rules(files) if rule["id"] in renderings for n in _numbers_lost(rule[field], renderings[rule["id"]]["translation"])]
    assert lost == []


# ---- the pages in Chinese -----------------------------------------------------------------------------


class _VisibleText(HTMLParser):
    """The text of a page outside <script>, <style> and any element marked lang="en" (the parts
    that stay in the source's English), and the values of its title, aria-label and placeholder."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, hidden: inside script/style/lang="en")
        self.parts: list[str] = []

    def _hidden(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        hidden = self._hidden() or tag in {"script", "style"} or (tag != "html" and named.get("lang") == "en")
        if not hidden:
            self.parts += [value for key, value in attrs if key in {"title", "aria-label", "placeholder"} and value]
        if tag not in self.VOID:
            self.stack.append((tag, hidden))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if not self._hidden():
            self.parts.append(data)

    @classmethod
    def of(cls, page: str) -> str:
        parser = cls()
        parser.feed(page)
        return " ".join(" ".join(parser.parts).split())


def _english_ui_strings(zh: Catalog) -> list[str]:
    """The catalogue's English that is whole words of UI text (3 words or more, no placeholders),
    whose Chinese differs: what must not show on a Chinese page."""
    out = []
    for message in zh:
        if message.id and isinstance(message.id, str) and message.string != message.id:
            if not _placeholders(message.id) and len(message.id.split()) >= 3:
                out.append(message.id)
    return out


def _rule_texts() -> set[str]:
    """The rule files' own English that pages quote (criteria, flag messages, action texts), as a
    page may show it (one line, without its last full stop)."""
    texts = set()
    for name in sorted((REPO / "rules").glob("*/*.yaml")):
        for rule in yaml.safe_load(name.read_text()).get("rules") or []:
            for field in ("criterion", "message"):
                if isinstance(rule.get(field), str):
                    texts.add(" ".join(rule[field].split()).rstrip("."))
    return texts


def _html_lang(page: str) -> str | None:
    found = re.search(r"<html lang=\"([^\"]+)\"", page)
    return found.group(1) if found else None


CASE = {  # a child with CRS 3 and ICANS 3 on blinatumomab: grades, a flag, an action and open inputs
    "patient": {"age_years": 8},
    "vitals": {"temperature_c": 38.6, "sbp_mmhg": 70},
    "crs": {"fever_masked": False, "hypotension": True, "vasopressors": ["norepinephrine"],
            "oxygen": {"device": "nasal_cannula", "flow_l_min": 4}},
    "neuro": {"consciousness": "awakens_to_tactile", "capd_score": 12},
    "blinatumomab": {"seizures_this_course": 0},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('i18n') / 'audit.sqlite3'}"
    with TestClient(create_app(ServiceSettings(database_url=url))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def pages(client: TestClient) -> dict[str, dict[str, str]]:
    """The form, a graded result and its record page, an error round, the patients page and a course
    page, in English (no Accept-Language) and in Chinese (Accept-Language: zh-CN)."""
    out: dict[str, dict[str, str]] = {}
    for language, accept in (("en", None), ("zh", "zh-CN,zh;q=0.9,en;q=0.5")):
        client.cookies.clear()
        client.headers.pop("Accept-Language", None)
        if accept:
            client.headers["Accept-Language"] = accept
        result = post_form(client, form_fields(CASE))
        assert result.status_code == 200, result.text[-2000:]
        errors = post_form(client, {"vitals.temperature": "38,5,1", "vitals.sbp_mmhg": "85/50", "vitals.spo2_pct": "94%"})
        assert errors.status_code == 422
        record = re.search(r'<code id="assessment-id">([0-9a-f]{32})</code>', result.text)
        assert record is not None, "the result names its record"
        out[language] = {
            "form": client.get("/").text,
            "result": result.text,
            "record": client.get(f"/assessments/{record.group(1)}").text,
            "errors": errors.text,
            "patients": client.get("/patients").text,
            "course": client.get("/patients/i18n-test-course").text,
        }
    client.headers.pop("Accept-Language", None)
    return out


@pytest.mark.slow  # a service with its grading process, and ten pages
def test_a_chinese_browser_gets_chinese_pages_and_english_stays_the_default(pages: dict[str, dict[str, str]]) -> None:
    for name in pages["en"]:
        assert _html_lang(pages["en"][name]) == "en", name
        assert _html_lang(pages["zh"][name]) == "zh-CN", name
    assert "Blank fields count as not reported, never as normal." in pages["en"]["form"]
    assert "空白项视为未报告，绝不视为正常。" in pages["zh"]["form"]


@pytest.mark.slow  # a service with its grading process, and ten pages
def test_no_english_ui_text_of_the_catalogue_is_left_on_a_chinese_page(
    pages: dict[str, dict[str, str]], zh: Catalog
) -> None:
    """Every catalogue string the English page shows is gone from the Chinese one (outside the
    rule files' English, marked lang="en"). The check is shown to see: the English pages have them."""
    english = _english_ui_strings(zh)
    quoted = sorted(_rule_texts(), key=len, reverse=True)
    for name in pages["en"]:
        english_text, chinese_text = _VisibleText.of(pages["en"][name]), _VisibleText.of(pages["zh"][name])
        for text in quoted:  # the rule files' English, quoted in the plain-text note too, may stay
            chinese_text = chinese_text.replace(text, " ")
        on_english = [s for s in english if s in english_text]
        assert len(on_english) >= 3, f"{name}: the check would see nothing"
        left = [s for s in on_english if s in chinese_text]
        assert left == [], f"{name} in zh-CN still shows English UI text"


@pytest.mark.slow  # a service with its grading process, and ten pages
def test_lang_on_the_url_chooses_chinese_and_is_kept_for_the_next_page(client: TestClient) -> None:
    client.cookies.clear()
    chosen = client.get("/?lang=zh_CN")
    assert _html_lang(chosen.text) == "zh-CN"
    assert _html_lang(client.get("/").text) == "zh-CN"  # the cookie the switch set
    assert _html_lang(client.get("/?lang=en").text) == "en"
    assert _html_lang(client.get("/").text) == "en"
    client.cookies.clear()
    assert _html_lang(client.get("/", headers={"Accept-Language": "zh-TW"}).text) == "en"  # Traditional: not offered


@pytest.mark.slow  # a service with its grading process, and ten pages
def test_a_chinese_result_quotes_the_criteria_in_english_with_our_rendering_marked_as_ours(
    pages: dict[str, dict[str, str]],
) -> None:
    rendering = _renderings("criterion")["crs.hypotension.one_vasopressor"]["translation"]
    english = "Grade 3: hypotension requiring a vasopressor with or without vasopressin."
    for name in ("result", "record"):
        zh_page, en_page = pages["zh"][name], pages["en"][name]
        assert re.search(rf'<q lang="en">{re.escape(english)}</q>', zh_page), "the criterion stays in the source's English"
        assert rendering in zh_page and "译文（非官方）" in zh_page, name
        assert rendering not in en_page and "译文" not in en_page, name
    # the flags and label actions too: the critical CSVT flag and the blinatumomab action of this case
    messages = _renderings("message")
    assert messages["asp.neuro_csvt_red_flag"]["translation"] in pages["zh"]["result"]
    assert messages["blin.crs_g4_discontinue"]["translation"] in pages["zh"]["result"]
