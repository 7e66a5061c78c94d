"""Request bodies the size of real prefetches, and JSON that parses but cannot be used: a number beyond
a float's range (a 310-digit integer) and nesting deeper than MAX_JSON_DEPTH. Each is answered at the
door (service/http.py BodyLimit), 413 or 422 naming where, on every JSON route; never a 500, and
never met by a route, a serializer or an audit record.

The limits are checked exactly (at, and one byte over) on BodyLimit around a small echo application,
and end to end on the service."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.http import MAX_JSON_DEPTH, BodyLimit, json_structure_errors, parse_json
from service.settings import ServiceSettings

Scope = MutableMapping[str, Any]


async def echo(scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
    """Answers 200 with the number of body bytes it received."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


SMALL, LARGE = 1024, 2048
limited = TestClient(BodyLimit(echo, max_bytes=SMALL, large_bytes=LARGE))
roomy = TestClient(BodyLimit(echo, max_bytes=64 * 1024))


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/v1/assessments", SMALL), ("/v1/fhir/assessments", LARGE), ("/cds-services/aegrade-toxicity", LARGE),
     ("/cds-services/aegrade-toxicity/feedback", LARGE), ("/v1/fhirx", SMALL), ("/cds-servicesx", SMALL)],
)
def test_each_route_has_its_limit_at_and_one_byte_over(path: str, limit: int) -> None:
    at = limited.post(path, content=b"x" * limit, headers={"content-type": "text/plain"})
    assert at.status_code == 200 and at.text == str(limit)
    over = limited.post(path, content=b"x" * (limit + 1), headers={"content-type": "text/plain"})
    assert over.status_code == 413 and over.json()["code"] == "body_too_large"
    assert str(limit) in over.json()["message"]

    def streamed() -> Any:  # no Content-Length: counted as it arrives
        yield b"x" * limit
        yield b"x"

    assert limited.post(path, content=streamed(), headers={"content-type": "text/plain"}).status_code == 413


def test_the_defaults_fit_real_prefetches_and_keep_the_small_limit_elsewhere() -> None:
    defaults = ServiceSettings()
    assert defaults.max_fhir_body_bytes >= 5 * 1024 * 1024
    assert defaults.max_body_bytes == 65536


def _nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@pytest.mark.parametrize(("depth", "refused"), [(MAX_JSON_DEPTH - 1, False), (MAX_JSON_DEPTH, False), (MAX_JSON_DEPTH + 1, True)])
def test_nesting_up_to_the_limit_passes_and_one_deeper_is_422_naming_where(depth: int, refused: bool) -> None:
    # the document {"a": [[...]]}: one object and depth - 1 arrays
    body = '{"a": ' + _nested(depth - 1) + "}"
    response = limited.post("/v1/assessments", content=body, headers={"content-type": "application/json"})
    if not refused:
        assert response.status_code == 200
        return
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "nesting_too_deep"
    assert error["loc"] == ["body", "a", *[0] * (MAX_JSON_DEPTH - 1)]


@pytest.mark.parametrize(
    ("number", "refused"),
    [
        ("1.7976931348623157e308", False),  # the largest float
        ("1.7976931348623159e308", True),  # rounds past it: infinity
        ("-1e309", True),
        ("1" + "0" * 307, False),  # 308 digits
        ("1" + "0" * 308, False),  # 309 digits, 1e308: within range
        ("2" + "0" * 308, True),  # 309 digits, 2e308: beyond
        ("1" + "0" * 309, True),  # the 310-digit number of the report
        ("-" + "9" * 5000, True),  # past Python's 4300-digit conversion limit: still 422, not 400
    ],
)
def test_numbers_beyond_a_float_are_422_naming_the_field(number: str, refused: bool) -> None:
    body = '{"vitals": {"temperature_c": ' + number + "}}"
    response = roomy.post("/v1/assessments", content=body, headers={"content-type": "application/json"})
    assert response.status_code == (422 if refused else 200), response.text[:300]
    if refused:
        [error] = response.json()["detail"]
        assert error == {"loc": ["body", "vitals", "temperature_c"], "msg": error["msg"], "type": "number_too_large"}
        assert number[:10] in error["msg"] and len(error["msg"]) < 120


def test_errors_are_listed_in_order_and_capped() -> None:
    document, found = parse_json(json.dumps({"values": []})[:-2] + ",".join(["1e999"] * 50) + "]}")
    errors = json_structure_errors(document, found)
    assert found and len(errors) == 20
    assert [e["loc"] for e in errors[:2]] == [["values", 0], ["values", 1]]
    assert json_structure_errors(json.loads('{"a": [1, 2.5, {"b": null}]}'), True) == []


def test_a_wide_document_is_walked_without_recursion() -> None:
    """20,000 siblings and 64 levels: one pass, no recursion, nothing reported."""
    wide = {"entry": [{"resource": {"value": i}} for i in range(20_000)], "deep": json.loads(_nested(MAX_JSON_DEPTH - 1))}
    assert json_structure_errors(wide, True) == []


# ---- end to end: every JSON route -----------------------------------------------------------------

HUGE = "1" + "0" * 309  # 310 digits
DEEP = _nested(256)


def _bodies(client: TestClient) -> list[tuple[str, str, str]]:
    """(route, body with HUGE, body with DEEP) for the JSON, FHIR and CDS routes."""
    patient = '{"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01", "x": %s}'
    cds = '{"hook": "patient-view", "hookInstance": "h1", "context": {"userId": "u", "patientId": "p1"}, "prefetch": {"patient": ' + patient + "}}"
    feedback = '{"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-06-01T10:00:00Z", "extension": {"x": %s}}]}'
    templates = [
        ("/v1/assessments", '{"patient": {"age_years": 40}, "vitals": {"temperature_c": %s}}'),
        ("/v1/fhir/assessments", '{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": ' + patient + "}]}"),
        ("/cds-services/aegrade-toxicity", cds),
        ("/cds-services/aegrade-toxicity/feedback", feedback),
        ("/v1/patients/p1/observations", '{"observed_at": "2026-06-01T10:00:00Z", "vitals": {"temperature_c": %s}}'),
    ]
    return [(route, body % HUGE, body % DEEP) for route, body in templates]


def test_a_310_digit_number_and_256_deep_nesting_are_422_on_every_json_route(client: TestClient) -> None:
    for route, huge, deep in _bodies(client):
        for label, body, kind in (("huge", huge, "number_too_large"), ("deep", deep, "nesting_too_deep")):
            for media_type in ("application/json", "application/fhir+json"):
                response = client.post(route, content=body, headers={"content-type": media_type})
                assert response.status_code == 422, (route, label, response.status_code, response.text[:300])
                assert kind in response.text, (route, label, response.text[:300])


@pytest.mark.slow
def test_a_five_mib_prefetch_is_taken_on_the_cds_route_and_refused_on_v1(client: TestClient) -> None:
    """A prefetch of 5 MiB (thousands of Observations, most older than the window, as an EHR's
    search returns them) is read; the same size on POST /v1/assessments is 413."""
    now = datetime.now(timezone.utc)
    entries = []
    for i in range(12_000):
        when = (now - timedelta(hours=10, minutes=i % 600)).isoformat().replace("+00:00", "Z") if i else (now - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
        entries.append({"fullUrl": f"https://ehr.example.org/fhir/Observation/t{i}", "search": {"mode": "match"}, "resource": {
            "resourceType": "Observation", "id": f"t{i}", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5", "display": "Body temperature"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when,
            "valueQuantity": {"value": 39.0, "unit": "C", "system": "http://unitsofmeasure.org", "code": "Cel"}}})
    call = {
        "hook": "patient-view", "hookInstance": "big-1", "context": {"userId": "u", "patientId": "p1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01"},
            "vitals": {"resourceType": "Bundle", "type": "searchset", "entry": entries},
            "assessments": None, "medications": None,
        },
    }
    body = json.dumps(call).encode()
    assert 4.5 * 1024 * 1024 < len(body) <= 8 * 1024 * 1024
    response = client.post("/cds-services/aegrade-toxicity", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text[:500]
    assert any(card["summary"].startswith("CRS") for card in response.json()["cards"])
    refused = client.post("/v1/assessments", content=body, headers={"content-type": "application/json"})
    assert refused.status_code == 413
