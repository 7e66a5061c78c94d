"""The bedside pages' languages: English (the source text) and Simplified Chinese, as gettext catalogues.

Catalogues live in service/locales/<locale>/LC_MESSAGES/messages.po, extracted with Babel
(`pybabel extract -F service/babel.cfg -o service/locales/messages.pot service`) and compiled in
memory when first used, so no binary .mo file is kept in the repository.

The language of a request is, in order: `?lang=` on the URL, the `aegrade_lang` cookie (set by the
page's language switch), then the browser's Accept-Language; English otherwise.

Templates call `_("text")` and `ngettext(...)`, given to them per request by `context(request)`;
Python code that makes page text takes a `Translator` (the same two callables); text defined at
import time (form labels, hints, option words) is marked with `N_` (Babel's default keywords include
it), kept in English in the code and translated where it is shown.

Which text stays in English in every language: the rule files' quoted criteria, citations, notes,
flag messages and action texts (data, not page text; the template marks them lang="en"), and the
field paths and rule ids behind the "details for the record" toggle. Beside a criterion, a flag
message or an action text, a page in another language shows our own rendering of it, marked as an
unofficial translation (`Translator.rendering`: service/locales/<locale>/criteria.yaml and
messages.yaml, keyed by rule id); only when it was made from the English shown, so a rule changed
since is shown in its English alone, never with a stale translation.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlencode
from typing import Any, Callable

import yaml
from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "ENGLISH", "LANG_COOKIE", "LOCALES", "LOCALES_DIR", "N_", "Translator", "context", "negotiate", "remember_choice",
    "translator",
]

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
# The locales offered, with the name each is shown under in the language switch (in itself).
LOCALES: dict[str, str] = {"en": "English", "zh_CN": "简体中文"}
SOURCE_LOCALE = "en"
LANG_COOKIE = "aegrade_lang"
LANG_COOKIE_MAX_AGE_S = 365 * 24 * 3600


def N_(text: str) -> str:
    """Marks `text` for extraction where it is defined; it is translated where it is shown."""
    return text


@dataclass(frozen=True)
class Translator:
    locale: str
    gettext: Callable[[str], str]
    ngettext: Callable[[str, str, int], str]
    renders_rules: bool = False
    """Whether `rendering` gives our translations of the rule files' English: true for the catalogue
    translators `translator()` makes; a Translator made by hand (a test's pseudo-language) gives none."""

    def __call__(self, text: str) -> str:
        return self.gettext(text)

    @property
    def html_lang(self) -> str:
        """The value for <html lang>: BCP 47 (zh-CN), not the POSIX form (zh_CN)."""
        return self.locale.replace("_", "-")

    def rendering(self, kind: str, rule: str | None, english: str | None) -> str | None:
        """Our translation of a rule file's English (kind "criteria": a criterion; "messages": a flag
        message or an action text) for rule `rule`, to show beside the English; None when there is
        none, or when it was made from other English than `english` (the rule changed since)."""
        if not self.renders_rules:
            return None
        found = _renderings(self.locale, kind).get(rule or "")
        if found is None or english is None or found[0] != english_digest(english):
            return None
        return found[1]


def english_digest(text: str) -> str:
    """The digest a rendering records of the English it was made from (its `en_sha256`)."""
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


@cache
def _renderings(locale: str, kind: str) -> dict[str, tuple[str, str]]:
    """rule id -> (digest of the English, our translation), from service/locales/<locale>/<kind>.yaml."""
    path = LOCALES_DIR / locale / f"{kind}.yaml"
    if locale == SOURCE_LOCALE or not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(rule): (str(entry["en_sha256"]), str(entry["translation"])) for rule, entry in loaded.items()}


def _parse(tag: str) -> str | None:
    """The offered locale a language tag asks for ("zh", "zh-CN", "zh-Hans-CN" -> zh_CN), or None."""
    try:
        asked = Locale.parse(tag.strip().replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return None
    if asked.language == "zh":
        # Traditional-script Chinese (zh-TW, zh-Hant) is not offered: fall through to English rather
        # than show Simplified characters to a reader who asked for Traditional.
        return "zh_CN" if asked.script in (None, "Hans") and asked.territory in (None, "CN", "SG") else None
    return asked.language if asked.language in LOCALES else None


def _accept_language(header: str) -> list[str]:
    """Accept-Language's tags, best first (RFC 9110 §12.5.4: q-values; q=0 means 'not this')."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(weighted)]


def negotiate(request: Request) -> str:
    """The locale for this request: ?lang=, then the cookie, then Accept-Language, then English."""
    for tag in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if tag and (chosen := _parse(tag)):
            return chosen
    for tag in _accept_language(request.headers.get("accept-language", "")):
        if chosen := _parse(tag):
            return chosen
    return SOURCE_LOCALE


@cache
def _translations(locale: str) -> NullTranslations:
    po = LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po"
    if locale == SOURCE_LOCALE or not po.exists():
        return NullTranslations()
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer)


def translator(locale: str) -> Translator:
    translations = _translations(locale if locale in LOCALES else SOURCE_LOCALE)
    return Translator(locale, translations.gettext, translations.ngettext, renders_rules=True)


ENGLISH = translator(SOURCE_LOCALE)
"""The source text: for callers that word things outside a request (the API, the tests)."""


def remember_choice(request: Request, response: Response) -> Response:
    """Keep the language chosen with `?lang=` (the page's switch, a plain link) in the cookie, so the
    next page (a POST of the form, the result) is in it too. Works without JavaScript."""
    asked = request.query_params.get("lang")
    chosen = _parse(asked) if asked else None
    if chosen is not None:
        response.set_cookie(
            LANG_COOKIE, chosen, max_age=LANG_COOKIE_MAX_AGE_S, path="/", httponly=True, samesite="lax",
            secure=request.url.scheme == "https",
        )
    return response


def context(request: Request) -> dict[str, Any]:
    """What every page template gets for its language: _, ngettext, the locale and the switch's choices."""
    chosen = translator(negotiate(request))
    return {
        "_": chosen.gettext,
        "ngettext": chosen.ngettext,
        "locale": chosen.locale,
        "html_lang": chosen.html_lang,
        "locales": LOCALES,
        "language_links": language_links(request),
        "translator": chosen,
    }


def language_links(request: Request) -> list[tuple[str, str, str]]:
    """The language switch: (locale, its name, this page's URL in it), keeping the page's other
    query parameters (a course's ?assessment= stays) and replacing only `lang`."""
    kept = [(key, value) for key, value in request.query_params.multi_items() if key != "lang"]
    return [(code, name, f"{request.url.path}?{urlencode([*kept, ('lang', code)])}") for code, name in LOCALES.items()]
