"""Reading an error answer in either of the service's two shapes, for tests that span routes.

Every route answers an error as our body `{"code", "message", "detail"}` (README: Errors,
service/http.py), except /v1/fhir/*, which answers the same error as a FHIR OperationOutcome
(service/fhir_native.py, `FhirErrors`): our `code` is `extension[0].valueCode` (url
ERROR_CODE_EXTENSION), the `message` the narrative, and each per-field entry an issue whose
`details.coding[0].code` is the entry's `type`, `details.text` its `msg` and `expression[0]` the
FHIRPath of its `loc` (no expression when the loc is no path in the body: a JSON syntax error's
character offset, which its message names).

Each reader checks the shape it reads before reading it: a body that is neither shape, an
OperationOutcome without our code or with an issue that lost its code or message, a problem with a
field list (or the reverse) fails the test. The URLs are written here again, not imported from the
service, so that a changed URL is caught.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

ERROR_CODE_EXTENSION = "http://aegrade.org/fhir/StructureDefinition/error-code"
ERROR_SYSTEM = "http://aegrade.org/fhir/CodeSystem/error"
_NARRATIVE = re.compile(r'<div xmlns="http://www.w3.org/1999/xhtml"><p>(.*)</p></div>', re.DOTALL)
_OUR_KEYS = {"code", "message", "detail"}
_OUTCOME_KEYS = {"resourceType", "text", "extension", "issue"}
_ISSUE_KEYS = {"severity", "code", "details", "expression"}


class FieldError(NamedTuple):
    """One per-field error. `where`: our body's `loc` (a list), or the OperationOutcome issue's
    FHIRPath (a str; None when the issue has no expression)."""

    type: str
    where: list[Any] | str | None
    msg: str


def _body(answer: Any) -> dict[str, Any]:
    """The JSON body of a response (TestClient's or httpx's), or the body itself; for a response,
    its media type is checked against the shape."""
    if isinstance(answer, Mapping):
        return dict(answer)
    body = answer.json()
    assert isinstance(body, dict), body
    media_type = answer.headers.get("content-type", "").split(";")[0].strip()
    wanted = ("application/fhir+json", "application/json") if is_outcome(body) else ("application/json",)
    assert media_type in wanted, (media_type, body)
    return body


def is_outcome(body: Mapping[str, Any]) -> bool:
    """Whether `body` is an OperationOutcome (the shape of /v1/fhir/*), checked whole if it is."""
    if body.get("resourceType") != "OperationOutcome":
        assert set(body) == _OUR_KEYS, body
        return False
    assert set(body) == _OUTCOME_KEYS, body
    assert isinstance(body["issue"], list) and body["issue"], body
    for issue in body["issue"]:
        assert set(issue) <= _ISSUE_KEYS and issue["severity"] in ("error", "fatal") and issue["code"], issue
        assert [set(c) for c in issue["details"]["coding"]] == [{"system", "code"}], issue
        assert issue["details"]["coding"][0]["system"] == ERROR_SYSTEM and issue["details"]["text"], issue
        if "expression" in issue:
            assert isinstance(issue["expression"], list) and len(issue["expression"]) == 1, issue
            assert isinstance(issue["expression"][0], str) and issue["expression"][0], issue
    return True


def error_code(answer: Any) -> str:
    """Our error code: `code`, or the OperationOutcome's error-code extension (exactly one)."""
    body = _body(answer)
    if is_outcome(body):
        [extension] = body["extension"]
        assert set(extension) == {"url", "valueCode"} and extension["url"] == ERROR_CODE_EXTENSION, extension
        code = extension["valueCode"]
    else:
        code = body["code"]
    assert isinstance(code, str) and code, body
    return code


def error_message(answer: Any) -> str:
    """The answer's message: `message`, or the OperationOutcome's narrative (unescaped)."""
    body = _body(answer)
    if is_outcome(body):
        assert body["text"]["status"] == "generated", body
        narrative = _NARRATIVE.fullmatch(body["text"]["div"])
        assert narrative, body["text"]
        message = html.unescape(narrative.group(1))
    else:
        message = body["message"]
    assert isinstance(message, str) and message, body
    return message


def problem(answer: Any) -> dict[str, str]:
    """A problem answer's {code, message} (no per-field list): our `detail`, the same two again; or
    the OperationOutcome's one issue, with no expression, carrying the same code and message."""
    body = _body(answer)
    code, message = error_code(body), error_message(body)
    if is_outcome(body):
        [issue] = body["issue"]
        assert "expression" not in issue, issue
        assert issue["details"]["coding"][0]["code"] == code and issue["details"]["text"] == message, (code, message, issue)
    else:
        assert body["detail"] == {"code": code, "message": message}, body
    return {"code": code, "message": message}


def field_errors(answer: Any) -> list[FieldError]:
    """The per-field errors (400 json_invalid, 422), in order: from our `detail`, each exactly
    {loc, msg, type}; or from the OperationOutcome's issues."""
    body = _body(answer)
    error_code(body)
    if is_outcome(body):
        return [
            FieldError(i["details"]["coding"][0]["code"], (i.get("expression") or [None])[0], i["details"]["text"])
            for i in body["issue"]
        ]
    detail = body["detail"]
    assert isinstance(detail, list) and detail and all(isinstance(e, dict) and set(e) == {"loc", "msg", "type"} for e in detail), body
    return [FieldError(e["type"], e["loc"], e["msg"]) for e in detail]


def where(answer: Any, loc: list[Any]) -> list[Any] | str | None:
    """How an answer of this shape names the field at `loc`: the loc itself, or its FHIRPath
    (["body", "entry", 1, "resource", "birthDate"] -> "Bundle.entry[1].resource.birthDate"; only
    keys that are FHIRPath identifiers, which is all the tests name). In an OperationOutcome a loc
    ["body", <int>, ...] is no expression (None): that is a JSON syntax error's character offset,
    and a body whose top is an array is no FHIR resource."""
    if not is_outcome(_body(answer)):
        return loc
    assert loc[:1] == ["body"], loc
    if len(loc) > 1 and isinstance(loc[1], int):
        return None
    path = "Bundle"
    for part in loc[1:]:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part), part
            path += f".{part}"
    return path
