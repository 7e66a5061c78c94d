"""aegrade.fhir: fever masking follows the episode rule (issue 15 part 4), and resources that cannot be
used are listed as ignored instead of refusing the request (part 1)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from aegrade.fhir import Located, bundle_resources, default_fever_threshold_c, map_resources
from aegrade.fhir_codes import AEGRADE_SYSTEM, LOINC, RXNORM, UCUM

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
PATIENT = {"resourceType": "Patient", "id": "p", "birthDate": "1980-06-01"}


def _temp(value: float, when: str, oid: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"coding": [{"system": LOINC, "code": "8310-5"}]},
            "effectiveDateTime": when, "valueQuantity": {"value": value, "system": UCUM, "code": "Cel"}}


def _device(when: str = "2026-06-01T10:00:00Z") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "dev", "status": "final",
            "code": {"coding": [{"system": AEGRADE_SYSTEM, "code": "crs-hypotension"}]}, "effectiveDateTime": when, "valueBoolean": True}


def _admin(name: str, when: str | None, aid: str = "m", reason: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": aid, "status": "completed",
                                "medicationCodeableConcept": {"text": name}, "subject": {"reference": "Patient/p"}}
    if when is not None:
        resource["effectiveDateTime"] = when
    if reason is not None:
        resource["reasonCode"] = [{"text": reason}]
    return resource


def _map(*resources: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    located = [Located(r, ("body", "entry", i, "resource")) for i, r in enumerate([PATIENT, *resources])]
    assessment, _, mapping = map_resources(located, now=NOW, window_hours=4.0, masking_window_hours=None, administrations_mask_fever=True)
    return assessment, mapping


def test_the_fever_threshold_comes_from_the_crs_rule_file() -> None:
    assert default_fever_threshold_c() == 38.0


def test_dexamethasone_premedication_12_days_earlier_does_not_mask() -> None:
    vitals = (_temp(37.2, "2026-06-01T10:00:00Z", "t"), _device())
    plain, _ = _map(*vitals)
    assessment, mapping = _map(*vitals, _admin("dexamethasone 10 mg IV", "2026-05-20T08:00:00Z"))
    assert assessment == plain and "fever_masked" not in assessment.get("crs", {})
    assert not mapping.masking_applied
    [decision] = mapping.masking_decisions
    assert decision.masks is False and decision.source == "MedicationAdministration/m" and "no fever" in decision.reason


def test_premedication_reason_never_masks_even_after_a_fever() -> None:
    _, mapping = _map(_temp(38.5, "2026-06-01T07:00:00Z", "f"), _temp(37.2, "2026-06-01T10:00:00Z", "t"),
                      _admin("dexamethasone", "2026-06-01T08:00:00Z", reason="Premedication for blinatumomab"))
    assert not mapping.masking_applied and "premedication" in mapping.masking_decisions[0].reason


def test_tocilizumab_after_a_fever_in_the_bundle_masks_and_says_why() -> None:
    assessment, mapping = _map(_temp(38.6, "2026-06-01T07:00:00Z", "f"), _temp(37.2, "2026-06-01T10:00:00Z", "t"),
                               _admin("tocilizumab", "2026-06-01T08:00:00Z"))
    assert assessment["crs"]["fever_masked"] is True and mapping.masking_applied
    [decision] = mapping.masking_decisions
    assert decision.masks is True and "Observation/f" in decision.reason and "onset" in decision.reason
    masked = [m for m in mapping.mapped if m.field == "crs.fever_masked"]
    assert masked[0].source == "MedicationAdministration/m" and "Observation/f" in masked[0].note


def test_tocilizumab_before_the_fever_does_not_mask() -> None:
    _, mapping = _map(_temp(38.6, "2026-06-01T09:00:00Z", "f"), _temp(37.2, "2026-06-01T10:00:00Z", "t"),
                      _admin("tocilizumab", "2026-06-01T08:00:00Z"))
    assert not mapping.masking_applied


def test_an_administration_with_reason_crs_masks() -> None:
    assessment, mapping = _map(_temp(37.2, "2026-06-01T10:00:00Z", "t"),
                               _admin("tocilizumab", "2026-06-01T08:00:00Z", reason="Cytokine release syndrome grade 2"))
    assert assessment["crs"]["fever_masked"] is True
    assert "cytokine release syndrome" in mapping.masking_decisions[0].reason


def test_an_administration_without_a_usable_time_leaves_masking_undecided() -> None:
    assessment, mapping = _map(_temp(38.6, "2026-06-01T07:00:00Z", "f"), _temp(37.2, "2026-06-01T10:00:00Z", "t"),
                               _admin("tocilizumab", "2026-06-01"))
    assert "fever_masked" not in assessment.get("crs", {})
    [decision] = mapping.masking_decisions
    assert decision.masks is None and "a date without a time" in decision.reason and "left unreported" in decision.reason
    assert decision.reason.index("cannot be told") > 0  # the day straddles the onset at 07:00


def test_unusable_resources_are_listed_as_ignored() -> None:
    medication_ref = _admin("x", "2026-06-01T09:00:00Z", "ref")
    del medication_ref["medicationCodeableConcept"]
    medication_ref["medicationReference"] = {"reference": "Medication/elsewhere"}
    _, mapping = _map(
        _temp(37.2, "2026-06-01T10:00:00Z", "t"),
        _temp(39.0, "2026-06-01", "date-only"),
        _temp(39.0, "1999-12-31T10:00:00Z", "old"),
        _temp(39.0, "2026-05-01T10:00:00Z", "outside"),
        {**_temp(39.0, "2026-06-01T10:00:00Z", "cancelled"), "status": "cancelled"},
        {**_temp(39.0, "2026-06-01T10:00:00Z", "unknown"), "code": {"coding": [{"system": LOINC, "code": "0000-0"}]}},
        {"resourceType": "OperationOutcome", "id": "oo", "issue": [{"severity": "error", "code": "not-found"}]},
        medication_ref,
    )
    reasons = {i.source: i.reason for i in mapping.ignored}
    assert "a date without a time (2026-06-01) cannot be placed inside the 4 h window" in reasons["Observation/date-only"]
    assert "before 2000" in reasons["Observation/old"]
    assert "older than 4 h" in reasons["Observation/outside"]
    assert "status 'cancelled'" in reasons["Observation/cancelled"]
    assert "no code read" in reasons["Observation/unknown"]
    assert "OperationOutcome" in reasons["OperationOutcome/oo"]
    assert "Medication/elsewhere" in reasons["MedicationAdministration/ref"]


def test_searchset_and_batch_response_bundles_are_read() -> None:
    searchset = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": PATIENT, "search": {"mode": "match"}},
        {"resource": {"resourceType": "Medication", "id": "med", "code": {"coding": [{"system": RXNORM, "code": "7512"}]}},
         "search": {"mode": "include"}},
    ]}
    batch = {"resourceType": "Bundle", "type": "batch-response", "entry": [
        {"resource": searchset, "response": {"status": "200 OK"}},
        {"resource": _temp(38.4, "2026-06-01T10:00:00Z", "t"), "response": {"status": "200 OK"}},
        {"resource": {"resourceType": "OperationOutcome", "id": "oo", "issue": []}, "response": {"status": "404 Not Found"}},
    ]}
    located = bundle_resources(batch, ("body",))
    assert [at.label for at in located] == ["Patient/p", "Medication/med", "Observation/t", "OperationOutcome/oo"]
    assessment, _, mapping = map_resources(located, now=NOW, window_hours=4.0, masking_window_hours=None, administrations_mask_fever=True)
    assert assessment["vitals"]["temperature_c"] == 38.4
    assert any(i.source == "OperationOutcome/oo" for i in mapping.ignored)
