"""aegrade.fhir never fails on messy but plausible FHIR: Observations, medication uses and device
uses with every kind of time (exact, a date alone, a month, before 2000, future, nonsense), status,
unit, value, code and reference. The mapping either refuses with FhirInputError (naming a resource)
or gives an assessment the engine accepts or refuses with InvalidAssessment: no other exception,
and everything it used or ignored names a resource that was sent."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aegrade
from aegrade.errors import InvalidAssessment
from aegrade.fhir import FhirInputError, Located, map_resources
from aegrade.fhir_codes import AEGRADE_SYSTEM, LOINC, RXNORM, SNOMED, UCUM
from tests.profiles import examples

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
TIMES = st.sampled_from([
    "2026-06-01T10:00:00Z", "2026-06-01T09:00:00+02:00", "2026-06-01T11:59:00Z", "2026-06-01", "2026-05-31", "2026-06",
    "1999-12-31T23:00:00Z", "2027-01-01T00:00:00Z", "2026-06-01T10:00:00", "yesterday", "0001-01-01", "9999-12-31",
])
LOINC_CODES = st.sampled_from(["8310-5", "8480-6", "76215-3", "76534-7", "8462-4", "8478-0", "8867-4", "2708-6", "59408-5", "3151-8",
                               "3150-0", "29463-7", "107117-4", "0000-0"])
UNITS = st.sampled_from(["Cel", "[degF]", "mm[Hg]", "%", "L/min", "/min", "kg", "mg"])
VALUES = st.one_of(st.floats(min_value=-50, max_value=300, allow_nan=False), st.integers(-5, 200), st.booleans(), st.text(max_size=3))
DEVICE_TEXT = st.sampled_from(["Nasal cannula", "HFNC", "NRB", "MAS\u212a", "room air", "ventilator", "?"])
DRUG = st.one_of(
    st.builds(lambda c: {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": c}]}},
              st.sampled_from(["7512", "3992", "612865", "3264", "161", "1"])),
    st.builds(lambda t: {"medicationCodeableConcept": {"text": t}},
              st.sampled_from(["Levophed", "Neo-Synephrine", "tocilizumab", "dexamethasone premed", "saline", "ADRENALIN"])),
    st.builds(lambda r: {"medicationReference": {"reference": r}}, st.sampled_from(["#med", "Medication/m1", "urn:uuid:nowhere"])),
)


def _observation(i: int, code: str, when: str, unit: str, value: Any, status: str, component: bool, device: str) -> dict[str, Any]:
    quantity: dict[str, Any] = {"valueQuantity": {"value": value, "system": UCUM, "code": unit}}
    if code == "107117-4":
        quantity = {"valueString": device}
    resource: dict[str, Any] = {"resourceType": "Observation", "id": f"o{i}", "status": status, "effectiveDateTime": when,
                                "subject": {"reference": "Patient/p"}}
    coded = {"code": {"coding": [{"system": LOINC, "code": code}]}, **quantity}
    if component:
        resource |= {"code": {"coding": [{"system": LOINC, "code": "85354-9"}]}, "component": [coded, coded]}
    else:
        resource |= coded
    return resource


OBSERVATIONS = st.lists(
    st.tuples(LOINC_CODES, TIMES, UNITS, VALUES, st.sampled_from(["final", "preliminary", "cancelled", "amended"]), st.booleans(), DEVICE_TEXT),
    max_size=8,
)
USES = st.lists(
    st.tuples(st.sampled_from(["MedicationAdministration", "MedicationStatement", "MedicationRequest"]), DRUG,
              st.sampled_from(["in-progress", "completed", "stopped", "active", "unknown", "on-hold"]), TIMES, st.booleans()),
    max_size=5,
)
OWN = st.lists(st.tuples(st.sampled_from(["ice-total", "ice-naming", "crs-hypotension", "fever-masked", "oxygen-device"]), TIMES,
                         st.one_of(st.integers(-1, 12), st.booleans())), max_size=4)


def _use(i: int, kind: str, drug: dict[str, Any], status: str, when: str, period: bool) -> dict[str, Any]:
    timing: dict[str, Any] = {"effectivePeriod": {"start": when}} if period else {"effectiveDateTime": when}
    if kind == "MedicationRequest":
        timing = {"authoredOn": when, "intent": "order"}
    contained = [{"resourceType": "Medication", "id": "med", "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "7512"}]}}]}]
    return {"resourceType": kind, "id": f"u{i}", "status": status, **drug, "subject": {"reference": "Patient/p"}, "contained": contained, **timing}


@pytest.mark.slow  # fhir.resources validates every resource of every example: seconds
@settings(max_examples=examples(60))
@given(OBSERVATIONS, USES, OWN, st.sampled_from(["1980-06-01", "1980-06", "2014", "2014-06-01", "2026-05"]))
def test_messy_resources_map_or_are_refused_naming_a_resource(
    engine: aegrade.Engine, observations: list[Any], uses: list[Any], own: list[Any], birth: str
) -> None:
    resources: list[dict[str, Any]] = [{"resourceType": "Patient", "id": "p", "birthDate": birth}]
    resources += [_observation(i, *o) for i, o in enumerate(observations)]
    resources += [_use(i, *u) for i, u in enumerate(uses)]
    for i, (code, when, value) in enumerate(own):
        shaped = {"valueInteger": value} if isinstance(value, int) and not isinstance(value, bool) else {"valueBoolean": value}
        if code == "oxygen-device":
            shaped = {"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "426854004"}]}}
        resources.append({"resourceType": "Observation", "id": f"own{i}", "status": "final", "effectiveDateTime": when,
                          "code": {"coding": [{"system": AEGRADE_SYSTEM, "code": code}]}, **shaped})
    resources.append({"resourceType": "Medication", "id": "m1", "code": {"text": "Levophed"}})
    located = [Located(r, ("body", "entry", i, "resource")) for i, r in enumerate(resources)]
    labels = {at.label for at in located}
    try:
        assessment, _, mapping = map_resources(located, now=NOW, window_hours=4.0, masking_window_hours=None, administrations_mask_fever=True)
    except FhirInputError as exc:
        assert exc.errors and all(e.loc for e in exc.errors)
        return
    assert {m.source for m in mapping.mapped} <= labels and {i.source for i in mapping.ignored} <= labels
    assert all(c.count >= 2 and c.values for c in mapping.conflicts)
    try:
        engine.validate(assessment)
    except InvalidAssessment:
        pass  # refused by the engine: moved to the resource by the route (errors_at_sources)
