"""From an API request to the bedside form's fields: how a nurse would fill the form for it.

Shared by the form tests (TestClient) and the browser tests (Playwright). A total ICE or CAPD
score is entered as items that add up to it, since the form asks for items.
"""

from __future__ import annotations

from typing import Any

from service.form import FIELDS

ICE_MAXIMA = (("orientation", 4), ("naming", 3), ("commands", 1), ("writing", 1), ("attention", 1))


class Unfillable(Exception):
    """The request has a field the form does not ask for."""


def split_total(total: int, maxima: list[int]) -> list[int]:
    """Item scores, each within its maximum, that add up to `total` (filled from the first item)."""
    items = []
    for maximum in maxima:
        take = min(maximum, total)
        items.append(take)
        total -= take
    if total:
        raise Unfillable(f"total too large for items {maxima}")
    return items


def form_fields(request: dict[str, Any]) -> dict[str, list[str]]:
    """name -> values, as the browser would post them."""
    out: dict[str, list[str]] = {}

    def put(name: str, value: Any) -> None:
        if name not in FIELDS:
            raise Unfillable(name)
        if isinstance(value, bool):
            kind = FIELDS[name].kind
            if kind == "check":
                if value:
                    out[name] = ["yes"]
            else:
                out[name] = ["yes" if value else "no"]
        elif isinstance(value, list):
            out[name] = [str(v) for v in value] or (["none"] if any(o == "none" for o, _ in FIELDS[name].options) else [])
        else:
            out[name] = [str(value)]

    for section, content in request.items():
        for key, value in content.items():
            path = f"{section}.{key}"
            if path in ("vitals.temperature_c", "vitals.temperature_f"):
                out["vitals.temperature"] = [str(value)]
                out["vitals.temperature_unit"] = [path[-1]]
            elif path == "crs.oxygen" or path == "blinatumomab.dose":
                for k, v in value.items():
                    put(f"{path}.{k}", v)
            elif path == "neuro.ice_score":
                for (item, _), score in zip(ICE_MAXIMA, split_total(value, [m for _, m in ICE_MAXIMA]), strict=True):
                    out[f"neuro.ice.{item}"] = [str(score)]
            elif path == "neuro.ice":
                for item, score in value.items():
                    out[f"neuro.ice.{item}"] = [str(score)]
            elif path == "neuro.capd_score":
                for i, score in enumerate(split_total(value, [4] * 8)):
                    out[f"neuro.capd.{i}"] = [str(score)]
            elif path == "neuro.capd":
                for i, score in enumerate(value):
                    out[f"neuro.capd.{i}"] = [str(score)]
            else:
                put(path, value)
        if section == "blinatumomab":
            out["blinatumomab.on"] = ["yes"]
    return out


# ---- posting the form as a browser does: with the page's CSRF token -------------------------------

CSRF_FIELD = "csrf_token"


def csrf_token(html: str) -> str:
    """The hidden CSRF token of a form page (the form, the login page)."""
    import re

    found = re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', html)
    if found is None:
        raise AssertionError("the page has no CSRF token")
    return found.group(1)


def post_form(client: Any, fields: dict[str, Any], path: str = "/") -> Any:
    """POST the form as a browser would after opening it: GET the page (which sets the cookie the
    token is bound to), then send the fields with its token. `client` is a TestClient or an
    httpx.Client (which keeps the cookies)."""
    page = client.get(path if path != "/logout" else "/")
    return client.post(path, data={**fields, CSRF_FIELD: csrf_token(page.text)})
