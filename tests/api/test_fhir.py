"""POST /v1/fhir/assessments: the vignettes as FHIR Bundles grade as through the JSON API; every
rejection names the resource at fault; the Bundle and its mapping are on record."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aegrade.fhir_codes import AEGRADE_SYSTEM, LOINC, RXNORM, SNOMED, UCUM
from service.app import create_app
from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "fhir"
VIGNETTES = [json.loads(line) for line in (ROOT / "golden" / "vignettes" / "crs_icans.jsonl").read_text().splitlines() if line.strip()]
AT = "2026-06-01T10:00:00Z"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fhir') / 'a.sqlite3'}"
    with TestClient(create_app(ServiceSettings(database_url=url))) as test_client:
        yield test_client


def bundle(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())  # type: ignore[no-any-return]


BOUNDS = ("grade", "grade_max", "status", "undetermined_by")


def _open_for_fever_masking(part: dict[str, Any]) -> bool:
    """Below 38 °C with fever masking not charted: not assessable, grade_max >= 1 (v1.1)."""
    return (
        part["grade"] is None and part["status"] == "not_assessable" and (part["grade_max"] or 0) >= 1
        and "crs.fever_masked" in [u["input"] for u in part["undetermined_by"]]
    )


def _grades(body: dict[str, Any]) -> tuple[Any, ...]:
    return tuple((body[d] or {}).get(k) for d in ("crs", "icans") for k in ("grade", "status"))


@pytest.mark.parametrize("case", VIGNETTES, ids=[c["id"] for c in VIGNETTES])
def test_vignette_bundle_grades_as_the_json_api(case: dict[str, Any], client: TestClient) -> None:
    fhir = client.post("/v1/fhir/assessments", json=bundle(case["id"]))
    assert fhir.status_code == 200, fhir.text
    body = fhir.json()
    record = client.get(f"/v1/assessments/{body['id']}").json()
    # graded as the JSON API grades the assessment the Bundle was mapped to
    mapped = client.post("/v1/assessments", json=record["request"]["assessment"]).json()
    for part in ("crs", "icans"):
        assert {k: body[part][k] for k in BOUNDS} == {k: mapped[part][k] for k in BOUNDS}
    # A Bundle says less than the vignette's request (no fever-masked Observation, no "no vasopressor"):
    # what it leaves unknown stays open (v1.1), and the vignette's grade lies within the bound.
    plain = client.post("/v1/assessments", json=case["request"]).json()
    for part in ("crs", "icans"):
        expected = case["expected"][f"{part}_grade"]
        low, high = body[part]["grade"], body[part]["grade_max"]
        if low == high:
            assert (low, body[part]["status"]) == (plain[part]["grade"], plain[part]["status"])
        else:
            assert high is not None and expected is not None and expected <= high
            assert low is None or low <= expected
            assert body[part]["undetermined_by"]
            # no_crs with grade_max 1: the documented relaxation (afebrile, no findings, fever_masked unknown)
            assert body[part]["status"] in ("incomplete", "not_assessable") or (
                (part, body[part]["status"], low, high) == ("crs", "no_crs", 0, 1)
            )
    assert body["icans"]["tool"] == plain["icans"]["tool"]
    assert body["mapping"]["ignored"] == []
    # the Bundle, the assessment it gave and the mapping are on record with the answer
    assert record["request"]["fhir_bundle"]["entry"][0]["resource"]["resourceType"] == "Patient"
    assert record["request"]["mapping"] == body["mapping"]
    assert record["result"] == body


def test_fixture_bundles_cover_every_vignette() -> None:
    assert {p.stem for p in FIXTURES.glob("V*.json")} == {c["id"] for c in VIGNETTES}


def test_fhir_json_media_type_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/v1/fhir/assessments", content=json.dumps(bundle("V02")), headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 200
    assert response.json()["crs"]["grade"] == 1


def test_masked_fever_comes_from_the_tocilizumab_administration(client: TestClient) -> None:
    # tocilizumab at 08:00 with no fever before it in the Bundle: an anticytokine is given in practice
    # for CRS, whose onset may lie outside what was sent, so masking is undecided and left unknown
    unmasked = client.post("/v1/fhir/assessments", json=bundle("V19")).json()
    assert not unmasked["mapping"]["masking_applied"]
    assert unmasked["mapping"]["masking_decisions"][0]["masks"] is None
    assert "crs.fever_masked" in [u["input"] for u in unmasked["mapping"]["undetermined"]]
    assert "crs.fever_masked" in [u["input"] for u in unmasked["crs"]["undetermined_by"]]
    # with a fever charted at 07:00 (CRS onset), the 08:00 tocilizumab masks fever, and says why
    with_fever = bundle("V19")
    with_fever["entry"].append(_obs("8310-5", _qty(39.0, "Cel"), when="2026-06-01T07:00:00Z", oid="onset-fever"))
    body = client.post("/v1/fhir/assessments", json=with_fever).json()
    assert body["mapping"]["masking_decisions"][0]["masks"] is True
    assert "Observation/onset-fever" in body["mapping"]["masking_decisions"][0]["reason"]
    masked = [m for m in body["mapping"]["mapped"] if m["field"] == "crs.fever_masked"]
    assert masked[0]["value"] is True and "tocilizumab" in masked[0]["code"]
    assert any(i["setting"] == "fhir_administrations_mask_fever" for i in body["crs"]["interpretations"])
    assert body["crs"]["grade"] == 3


@pytest.mark.slow  # a service of its own
def test_masking_can_be_turned_off(tmp_path: Path) -> None:
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'b.sqlite3'}", fhir_administrations_mask_fever=False)
    with TestClient(create_app(settings)) as other:
        body = other.post("/v1/fhir/assessments", json=bundle("V19")).json()
    # 37.2 °C and the administrations not read as masking: whether fever is masked is unknown, so
    # CRS is not assessable, and the oxygen support says how high it could go
    assert _open_for_fever_masking(body["crs"])
    assert "not read as masking" in body["crs"]["notes"][0]


# ---- helpers to make bad Bundles ---------------------------------------------------------------


def _patient() -> dict[str, Any]:
    return {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p", "birthDate": "1980-06-01"}}


def _obs(code: str, value: dict[str, Any], *, system: str = LOINC, when: str = AT, oid: str = "o1", **extra: Any) -> dict[str, Any]:
    resource = {"resourceType": "Observation", "id": oid, "status": "final", "code": {"coding": [{"system": system, "code": code}]},
                "effectiveDateTime": when, **value, **extra}
    return {"resource": resource}


def _qty(value: Any, unit: str, system: str = UCUM) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "system": system, "code": unit}}


def _bundle(*entries: dict[str, Any], kind: str = "collection") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [_patient(), *entries]}


def _errors(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The field errors of a 422, as {msg, where}: from our error body ({code, message, detail}) or
    from the OperationOutcome the /v1/fhir routes answer with (service/fhir_native.py)."""
    if answer.get("resourceType") == "OperationOutcome":
        return [{"msg": i["details"]["text"], "where": (i.get("expression") or [""])[0]} for i in answer["issue"]]
    return [{"msg": e["msg"], "where": ".".join(str(p) for p in e["loc"])} for e in answer["detail"]]


def _reject(client: TestClient, body: dict[str, Any], *, names: str) -> list[dict[str, Any]]:
    response = client.post("/v1/fhir/assessments", json=body)
    assert response.status_code == 422, response.text
    detail = _errors(response.json())
    assert any(names in e["msg"] for e in detail), detail
    return detail


def _ignored(client: TestClient, body: dict[str, Any], source: str) -> str:
    """Posted with one usable heart rate added: 200, and the reason `source` was listed as ignored."""
    body["entry"].append(_obs("8867-4", _qty(80, "/min"), oid="hr-ok"))
    response = client.post("/v1/fhir/assessments", json=body)
    assert response.status_code == 200, response.text
    reasons = {i["source"]: i["reason"] for i in response.json()["mapping"]["ignored"]}
    assert source in reasons, reasons
    return str(reasons[source])


# ---- tolerant reading: units, values (ignored, named); conflicts (refused) -----------------------


@pytest.mark.parametrize(
    ("code", "quantity"),
    [
        ("8310-5", _qty(311.0, "K")),  # kelvin: not Cel or [degF]
        ("8310-5", _qty(38.0, "degC")),  # not a UCUM code
        ("8310-5", _qty(38.0, "Cel", system="http://example.org/units")),
        ("8480-6", _qty(120, "kPa")),
        ("2708-6", _qty(4, "L/min")),  # SpO2 sent in the flow's unit
        ("3151-8", _qty(95, "%")),  # the flow sent as a saturation
        ("8867-4", {"valueQuantity": {"value": 80}}),  # no unit at all
    ],
)
def test_wrong_or_unknown_unit_is_ignored_naming_the_observation(client: TestClient, code: str, quantity: dict[str, Any]) -> None:
    reason = _ignored(client, _bundle(_obs(code, quantity)), "Observation/o1")
    assert "UCUM" in reason


@pytest.mark.parametrize("value", ["38", True, None])
def test_a_value_that_is_not_a_json_number_is_ignored(client: TestClient, value: Any) -> None:
    _ignored(client, _bundle(_obs("8310-5", _qty(value, "Cel"))), "Observation/o1")


def test_nan_in_the_body_is_refused(client: TestClient) -> None:
    text = json.dumps(_bundle(_obs("8310-5", _qty(38.0, "Cel")))).replace("38.0", "NaN")
    response = client.post("/v1/fhir/assessments", content=text, headers={"Content-Type": "application/json"})
    assert response.status_code == 422  # the only Observation is not usable: nothing to grade, and it is named
    assert "Observation/o1" in json.dumps(response.json())


def test_conflicting_values_across_a_threshold_leave_the_input_undetermined(client: TestClient) -> None:
    """38.5 °C and 100.4 °F (38.0 °C) at one time: both fevers, but 38.0 is the rule file's threshold,
    so the two could grade differently: temperature is left unreported, the conflict listed once."""
    body = _bundle(_obs("8310-5", _qty(38.5, "Cel"), oid="c"), _obs("8310-5", _qty(100.3, "[degF]"), oid="f"), _obs("8867-4", _qty(80, "/min"), oid="hr"))
    response = client.post("/v1/fhir/assessments", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    [conflict] = result["mapping"]["conflicts"]
    assert (conflict["kind"], conflict["resolution"], conflict["count"]) == ("temperature", "undetermined", 2)
    assert {v.split(":")[0] for v in conflict["values"]} == {"Observation/c", "Observation/f"}
    assert not [m for m in result["mapping"]["mapped"] if m["field"] and m["field"].startswith("vitals.temperature")]
    assert result["crs"]["grade"] is None


def test_conflicting_values_on_one_side_of_every_threshold_use_the_worse(client: TestClient) -> None:
    body = _bundle(_obs("8310-5", _qty(38.5, "Cel"), oid="c"), _obs("8310-5", _qty(103.0, "[degF]"), oid="f"))
    result = client.post("/v1/fhir/assessments", json=body).json()
    [conflict] = result["mapping"]["conflicts"]
    assert conflict["resolution"] == "worse" and conflict["used"] == "Observation/f: 103.0 [degF]"
    assert result["crs"]["grade"] == 1


def test_the_same_value_in_two_units_at_one_time_is_no_conflict(client: TestClient) -> None:
    body = _bundle(_obs("8310-5", _qty(38.0, "Cel"), oid="c"), _obs("8310-5", _qty(100.4, "[degF]"), oid="f"))
    assert client.post("/v1/fhir/assessments", json=body).status_code == 200


def test_the_latest_value_in_the_window_is_used_and_older_ones_are_listed(client: TestClient) -> None:
    body = _bundle(
        _obs("8310-5", _qty(39.0, "Cel"), oid="early", when="2026-06-01T08:00:00Z"),
        _obs("8310-5", _qty(37.0, "Cel"), oid="late"),
        _obs("8310-5", _qty(40.0, "Cel"), oid="stale", when="2026-06-01T05:59:00Z"),  # > 4 h before
    )
    result = client.post("/v1/fhir/assessments", json=body).json()
    used = [m for m in result["mapping"]["mapped"] if m["field"] == "vitals.temperature_c"]
    assert [(m["value"], m["source"]) for m in used] == [(37.0, "Observation/late")]
    reasons = {i["source"]: i["reason"] for i in result["mapping"]["ignored"]}
    assert "later value" in reasons["Observation/early"] and "older than 4 h" in reasons["Observation/stale"]
    assert _open_for_fever_masking(result["crs"])  # 37.0 °C, fever masking not charted


def test_fahrenheit_boundary_through_fhir(client: TestClient) -> None:
    fever = client.post("/v1/fhir/assessments", json=_bundle(_obs("8310-5", _qty(100.4, "[degF]")))).json()
    below = client.post("/v1/fhir/assessments", json=_bundle(_obs("8310-5", _qty(100.3, "[degF]")))).json()
    assert (fever["crs"]["grade"], fever["crs"]["status"]) == (1, "incomplete")
    assert _open_for_fever_masking(below["crs"])


# ---- rejections: structure ----------------------------------------------------------------------


def test_a_resource_that_is_not_valid_fhir_is_ignored(client: TestClient) -> None:
    reason = _ignored(client, _bundle(_obs("8310-5", _qty(38.0, "Cel"), temperatureish=1)), "Observation/o1")
    assert "not valid FHIR R4" in reason


def test_no_patient_and_two_patients_are_refused(client: TestClient) -> None:
    body = {"resourceType": "Bundle", "type": "collection", "entry": [_obs("8310-5", _qty(38.0, "Cel"))]}
    _reject(client, body, names="no Patient")
    second = {"resource": {"resourceType": "Patient", "id": "q", "birthDate": "1990-01-01"}}
    _reject(client, _bundle(second, _obs("8310-5", _qty(38.0, "Cel"))), names="a second Patient")


def test_a_birth_year_is_read_when_no_age_cut_off_lies_within_it(client: TestClient) -> None:
    body = _bundle(_obs("8310-5", _qty(38.0, "Cel")))
    body["entry"][0]["resource"]["birthDate"] = "1980"
    result = client.post("/v1/fhir/assessments", json=body).json()
    assert result["mapping"]["mapped"][0]["value"] == 45.416  # the youngest it allows on 2026-06-01
    body["entry"][0]["resource"]["birthDate"] = "2014"  # 11 or 12 on 2026-06-01: ICE or CAPD
    _reject(client, body, names="a full date is needed")


def test_an_observation_about_another_patient_is_refused(client: TestClient) -> None:
    _reject(client, _bundle(_obs("8310-5", _qty(38.0, "Cel"), subject={"reference": "Patient/someone-else"})), names="not the Bundle's Patient")


@pytest.mark.parametrize("when", ["2026-06-01", "2026-06-01T10:00:00", "2999-01-01T00:00:00Z"])
def test_an_observation_time_without_a_zone_or_in_the_future_is_ignored(client: TestClient, when: str) -> None:
    reason = _ignored(client, _bundle(_obs("8310-5", _qty(38.0, "Cel"), when=when)), "Observation/o1")
    assert ("cannot be placed inside the 4 h window" in reason) if when == "2026-06-01" else ("time zone" in reason or "future" in reason or "not valid FHIR R4" in reason)


def test_a_bundle_of_another_type_or_with_nothing_to_grade_is_refused(client: TestClient) -> None:
    assert client.post("/v1/fhir/assessments", json=_bundle(kind="document")).status_code == 422
    _reject(client, _bundle(), names="nothing to grade")


def test_unread_resource_types_are_listed_as_ignored(client: TestClient) -> None:
    other = {"resource": {"resourceType": "Encounter", "id": "e", "status": "in-progress"}}
    unknown = {"resource": {"resourceType": "NotAResource", "id": "x"}}
    result = client.post("/v1/fhir/assessments", json=_bundle(other, unknown, _obs("8310-5", _qty(38.0, "Cel")))).json()
    assert {i["source"] for i in result["mapping"]["ignored"]} == {"Encounter/e", "NotAResource/x"}


def test_cancelled_and_absent_observations_are_not_reported(client: TestClient) -> None:
    cancelled = _obs("8310-5", _qty(40.0, "Cel"), oid="x", status="cancelled")
    absent = _obs("8480-6", {"dataAbsentReason": {"text": "patient refused"}}, oid="y")
    result = client.post("/v1/fhir/assessments", json=_bundle(cancelled, absent, _obs("8310-5", _qty(37.0, "Cel")))).json()
    assert _open_for_fever_masking(result["crs"])  # the cancelled 40.0 °C is not a fever
    assert "vitals.sbp_mmhg" not in [m["field"] for m in result["mapping"]["mapped"]]
    assert {i["source"] for i in result["mapping"]["ignored"]} == {"Observation/x", "Observation/y"}


# ---- rejections: assessment items and treatments -------------------------------------------------


def _own(code: str, value: dict[str, Any], oid: str) -> dict[str, Any]:
    return _obs(code, value, system=AEGRADE_SYSTEM, oid=oid)


def test_ice_items_count_only_all_together(client: TestClient) -> None:
    body = _bundle(_obs("8310-5", _qty(38.0, "Cel")), _own("ice-orientation", {"valueInteger": 4}, "a"), _own("ice-naming", {"valueInteger": 3}, "b"))
    result = client.post("/v1/fhir/assessments", json=body).json()
    assert "count only all together" in {i["source"]: i["reason"] for i in result["mapping"]["ignored"]}["Observation/a"]
    assert [u["input"] for u in result["mapping"]["undetermined"]] == ["neuro.ice"]


def test_all_ice_items_give_the_ice_score(client: TestClient) -> None:
    items = {"ice-orientation": 3, "ice-naming": 2, "ice-commands": 1, "ice-writing": 0, "ice-attention": 0}
    body = _bundle(*[_own(code, {"valueInteger": v}, code) for code, v in items.items()])
    result = client.post("/v1/fhir/assessments", json=body).json()
    assert result["icans"]["grade"] == 2  # ICE 6: grade 2


def test_an_engine_contradiction_is_moved_to_the_resource(client: TestClient) -> None:
    body = _bundle(_own("ice-total", {"valueInteger": 11}, "ice"))
    detail = _reject(client, body, names="Observation/ice")
    assert detail[0]["where"] in ("body.entry.1.resource", "Bundle.entry[1].resource")


def test_a_boolean_item_needs_a_json_boolean(client: TestClient) -> None:
    assert "valueBoolean" in _ignored(client, _bundle(_own("crs-hypotension", {"valueInteger": 1}, "h")), "Observation/h")


def test_an_unrecognised_device_is_refused_not_guessed(client: TestClient) -> None:
    device = _own("oxygen-device", {"valueCodeableConcept": {"text": "some oxygen"}}, "d")
    assert "no code or text recognised" in _ignored(client, _bundle(device), "Observation/d")
    snomed = _own("oxygen-device", {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "123456"}]}}, "d")
    assert "no code or text recognised" in _ignored(client, _bundle(snomed), "Observation/d")


def test_a_flow_without_a_device_leaves_oxygen_undetermined(client: TestClient) -> None:
    result = client.post("/v1/fhir/assessments", json=_bundle(_obs("8310-5", _qty(38.0, "Cel")), _obs("3151-8", _qty(4, "L/min"), oid="flow"))).json()
    assert "without an oxygen-device" in {i["source"]: i["reason"] for i in result["mapping"]["ignored"]}["Observation/flow"]
    assert [u["input"] for u in result["mapping"]["undetermined"]] == ["crs.oxygen"]
    assert "crs.oxygen" in [u["input"] for u in result["crs"]["undetermined_by"]]


def _admin(medication: dict[str, Any], status: str = "in-progress", **extra: Any) -> dict[str, Any]:
    return {"resource": {"resourceType": "MedicationAdministration", "id": "m", "status": status, **medication,
                         "effectivePeriod": {"start": "2026-06-01T09:00:00Z"}, "subject": {"reference": "Patient/p"}, **extra}}


def test_an_unresolvable_medication_reference_is_ignored(client: TestClient) -> None:
    body = _bundle(_obs("8310-5", _qty(38.0, "Cel")), _admin({"medicationReference": {"reference": "Medication/elsewhere"}}))
    response = client.post("/v1/fhir/assessments", json=body)
    assert response.status_code == 200, response.text
    reasons = {i["source"]: i["reason"] for i in response.json()["mapping"]["ignored"]}
    assert any("cannot be told" in r for r in reasons.values()), reasons


def test_a_running_vasopressor_is_read_and_a_stopped_one_is_not(client: TestClient) -> None:
    norepinephrine = {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "7512"}]}}
    running = client.post("/v1/fhir/assessments", json=_bundle(_obs("8310-5", _qty(38.5, "Cel")), _admin(norepinephrine))).json()
    assert [m["value"] for m in running["mapping"]["mapped"] if m["field"] == "crs.vasopressors"] == [["norepinephrine"]]
    assert running["crs"]["grade"] == 3
    stopped = _admin(norepinephrine, status="stopped")
    result = client.post("/v1/fhir/assessments", json=_bundle(_obs("8310-5", _qty(38.5, "Cel")), stopped)).json()
    assert result["crs"]["grade"] == 1
    assert "not running" in result["mapping"]["ignored"][0]["reason"]


def test_other_drugs_are_listed_as_ignored(client: TestClient) -> None:
    ondansetron = {"medicationCodeableConcept": {"text": "ondansetron 4 mg"}}
    result = client.post("/v1/fhir/assessments", json=_bundle(_obs("8310-5", _qty(37.0, "Cel")), _admin(ondansetron))).json()
    assert result["mapping"]["ignored"][0]["source"] == "MedicationAdministration/m"


def test_the_codesystem_is_a_valid_fhir_codesystem(client: TestClient) -> None:
    from fhir.resources.R4B.codesystem import CodeSystem

    body = client.get("/v1/fhir/CodeSystem/assessment").json()
    CodeSystem.model_validate(body)
    codes = {c["code"] for c in body["concept"]}
    assert {"ice-total", "capd-item-8", "oxygen-device", "high_flow_nasal_cannula", "unarousable"} <= codes
    assert len(codes) == len(body["concept"])
    assert body["url"] == AEGRADE_SYSTEM


def test_a_variant_of_a_fixture_still_grades(client: TestClient) -> None:
    """The fixture's own Observation ids and fullUrls are not what decides: renumbered, same grade."""
    variant = copy.deepcopy(bundle("V12"))
    for n, entry in enumerate(variant["entry"][1:]):
        entry["resource"]["id"] = f"renumbered-{n}"
        entry["fullUrl"] = f"urn:uuid:renumbered-{n}"
    assert client.post("/v1/fhir/assessments", json=variant).json()["crs"]["grade"] == 3


@pytest.mark.parametrize("name", sorted(p.name for p in (FIXTURES / "realworld").glob("*.json")))
def test_real_world_shaped_bundles_are_read_through_the_service(client: TestClient, name: str) -> None:
    """US Core, FHIR R4 example, Oracle Health and Synthea shapes (tests/fixtures/fhir/realworld/):
    accepted as sent, graded, and on record with their mapping."""
    sent = json.loads((FIXTURES / "realworld" / name).read_text())
    response = client.post("/v1/fhir/assessments", json=sent)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["crs"] is not None and body["mapping"]["mapped"]
    record = client.get(f"/v1/assessments/{body['id']}").json()
    assert record["request"]["fhir_bundle"]["meta"] == sent["meta"]
