"""aegrade.fhir, issue 15 part A: tolerant, safe reading. Simultaneous values (arterial over cuff,
the worse when no threshold lies between them, otherwise undetermined; linear), pulse oximetry
components, oxygen device codes and text (no Unicode folding), dates without a time, a birthDate
without a day, vasopressors (ingredients, brands, contained and included Medications by the Bundle
rules, point events in the LOCAL window, statements and orders), and fever masking (anticytokines
with no onset in view are undecided, reason codes)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import aegrade
from aegrade.fhir import FhirInputError, FhirMapping, Located, map_resources
from aegrade.fhir_codes import AEGRADE_SYSTEM, LOINC, RXNORM, SNOMED, UCUM, fold, terms, words_of

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
AT = "2026-06-01T10:00:00Z"
AS_OF = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
PATIENT = {"resourceType": "Patient", "id": "p", "birthDate": "1980-06-01"}


def _map(*resources: dict[str, Any], patient: dict[str, Any] = PATIENT, full_urls: dict[str, str] | None = None,
         **options: Any) -> tuple[dict[str, Any], FhirMapping]:
    urls = full_urls or {}
    located = [Located(r, ("body", "entry", i, "resource"), urls.get(str(r.get("id"))))
               for i, r in enumerate([patient, *resources])]
    settings = {"now": NOW, "window_hours": 4.0, "masking_window_hours": None, "administrations_mask_fever": True, **options}
    assessment, _, mapping = map_resources(located, **settings)
    return assessment, mapping


def _obs(code: str, value: dict[str, Any], oid: str, when: str = AT, system: str = LOINC, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": {"coding": [{"system": system, "code": code}]},
            "effectiveDateTime": when, **value, **extra}


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "system": UCUM, "code": unit}}


def _temp(celsius: float, oid: str, when: str = AT) -> dict[str, Any]:
    return _obs("8310-5", _qty(celsius, "Cel"), oid, when)


def _device(device: dict[str, Any], oid: str = "dev") -> dict[str, Any]:
    return _obs("oxygen-device", device, oid, system=AEGRADE_SYSTEM)


def _grade(engine: aegrade.Engine, assessment: dict[str, Any]) -> Any:
    return engine.assess(assessment)


# ---- simultaneous values ------------------------------------------------------------------------


def test_an_arterial_pressure_is_used_over_a_cuff_pressure_of_the_same_time() -> None:
    assessment, mapping = _map(_temp(38.5, "t"), _obs("76215-3", _qty(85, "mm[Hg]"), "art"), _obs("8480-6", _qty(95, "mm[Hg]"), "cuff"))
    assert assessment["vitals"]["sbp_mmhg"] == 85
    [conflict] = mapping.conflicts
    assert (conflict.kind, conflict.resolution, conflict.used) == ("sbp", "invasive", "Observation/art: 85.0 mm[Hg]")
    # and over a cuff reading coded as such (76534-7), whichever comes first
    assessment, _ = _map(_obs("76534-7", _qty(120, "mm[Hg]"), "cuff"), _obs("76215-3", _qty(70, "mm[Hg]"), "art"))
    assert assessment["vitals"]["sbp_mmhg"] == 70


@pytest.mark.parametrize(
    ("low", "resolution"),
    [(89.0, "undetermined"), (90.0, "undetermined"), (91.0, "worse")],  # the adult systolic threshold is 90 mmHg
)
def test_two_cuff_pressures_use_the_worse_only_when_no_threshold_lies_between(low: float, resolution: str) -> None:
    assessment, mapping = _map(_temp(38.5, "t"), _obs("8480-6", _qty(low, "mm[Hg]"), "a"), _obs("8480-6", _qty(120, "mm[Hg]"), "b"))
    [conflict] = mapping.conflicts
    assert conflict.resolution == resolution
    if resolution == "worse":
        assert assessment["vitals"]["sbp_mmhg"] == low  # lower is worse for a pressure
    else:
        assert "sbp_mmhg" not in assessment["vitals"]
        assert [u.input for u in mapping.undetermined] == ["vitals.sbp_mmhg"]


@pytest.mark.parametrize(("high", "used"), [(37.9, 37.9), (38.0, None), (38.1, None)])
def test_two_temperatures_below_the_fever_threshold_use_the_higher(high: float, used: float | None) -> None:
    assessment, mapping = _map(_temp(37.5, "a"), _temp(high, "b"), _obs("8867-4", _qty(80, "/min"), "hr"))
    assert assessment["vitals"].get("temperature_c") == used
    assert mapping.conflicts[0].resolution == ("worse" if used is not None else "undetermined")


def test_two_fevers_on_one_side_use_the_higher_and_grade(engine: aegrade.Engine) -> None:
    assessment, mapping = _map(_temp(38.1, "a"), _temp(39.4, "b"))
    assert assessment["vitals"]["temperature_c"] == 39.4 and mapping.conflicts[0].resolution == "worse"
    assert _grade(engine, assessment).crs.domains["fever"] == 1


def test_conflicting_booleans_leave_the_input_undetermined(engine: aegrade.Engine) -> None:
    yes = _obs("crs-hypotension", {"valueBoolean": True}, "y", system=AEGRADE_SYSTEM)
    no = _obs("crs-hypotension", {"valueBoolean": False}, "n", system=AEGRADE_SYSTEM)
    assessment, mapping = _map(_temp(38.5, "t"), yes, no)
    assert "hypotension" not in assessment.get("crs", {})
    assert mapping.conflicts[0].resolution == "undetermined" and mapping.undetermined[0].input == "crs.hypotension"
    assert "crs.hypotension" in [u.input for u in _grade(engine, assessment).crs.undetermined_by]


def test_thousands_of_simultaneous_components_give_one_conflict_listed_once() -> None:
    """A blood-pressure panel with 4,000 different systolic components: one conflict, five values
    shown, the count given; the work is linear (one pass, no pairs)."""
    components = [{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": 60 + n / 100, "system": UCUM,
                   "code": "mm[Hg]"}} for n in range(4000)]
    panel = _obs("85354-9", {"component": components}, "panel")
    assessment, mapping = _map(_temp(38.5, "t"), panel)
    [conflict] = mapping.conflicts
    assert (conflict.count, len(conflict.values), conflict.resolution) == (4000, 5, "undetermined")
    assert "sbp_mmhg" not in assessment["vitals"]
    [unknown] = mapping.undetermined
    assert unknown.sources == ["Observation/panel"]


def test_the_conflict_rule_is_cited_in_the_terminology_file() -> None:
    rule = terms().simultaneous_values
    assert rule.evidence_level == "LOCAL" and "Surviving Sepsis" in rule.citation
    assert rule.worse["sbp"] == "lower" and rule.worse["temperature"] == "higher"


# ---- pulse oximetry, devices, text ---------------------------------------------------------------


def _pulse_ox(components: list[dict[str, Any]], code: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "pox", "status": "final",
            "code": {"coding": code or [{"system": LOINC, "code": "2708-6"}, {"system": LOINC, "code": "59408-5"},
                                        {"system": "urn:iso:std:iso:11073:10101", "code": "150456"}]},
            "effectiveDateTime": AT, "valueQuantity": {"value": 95, "unit": "%", "system": UCUM, "code": "%"}, "component": components}


FLOW_COMPONENT = {"code": {"coding": [{"system": LOINC, "code": "3151-8"}]}, "valueQuantity": {"value": 6, "system": UCUM, "code": "L/min"}}
FIO2_COMPONENT = {"code": {"coding": [{"system": LOINC, "code": "3150-0"}]}, "valueQuantity": {"value": 40, "system": UCUM, "code": "%"}}


def test_the_us_core_pulse_oximetry_profile_is_read_with_its_components() -> None:
    nasal = _device({"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "336623009"}]}})
    assessment, mapping = _map(_pulse_ox([FLOW_COMPONENT, FIO2_COMPONENT]), nasal)
    assert assessment["vitals"]["spo2_pct"] == 95
    assert assessment["crs"]["oxygen"] == {"device": "nasal_cannula", "flow_l_min": 6}
    assert [m.field for m in mapping.mapped if m.code == f"{LOINC}|3150-0"] == [None]  # FiO2 recorded, not graded


def test_a_flow_in_the_profile_without_a_device_leaves_oxygen_undetermined() -> None:
    assessment, mapping = _map(_pulse_ox([FLOW_COMPONENT]))
    assert "crs" not in assessment and assessment["vitals"]["spo2_pct"] == 95
    assert [u.input for u in mapping.undetermined] == ["crs.oxygen"]


def test_an_spo2_carried_only_in_a_component_is_read() -> None:
    """Oracle Health: a proprietary code on the Observation, SpO2 in a component."""
    spo2 = {"code": {"coding": [{"system": LOINC, "code": "59408-5"}]}, "valueQuantity": {"value": 91, "system": UCUM, "code": "%"}}
    resource = _pulse_ox([spo2], code=[{"system": "https://fhir.cerner.com/ec2458f2-1e24-41c8-b71b-0e701af7583d/codeSet/72",
                                        "code": "703558"}])
    del resource["valueQuantity"]
    assessment, _ = _map(resource)
    assert assessment["vitals"]["spo2_pct"] == 91


@pytest.mark.parametrize(("text", "device"), [("Nasal Cannula", "nasal_cannula"), ("NON-REBREATHER", "nonrebreather"),
                                              ("Face Mask", "simple_facemask"), ("BiPAP", "bipap")])
def test_the_loinc_method_of_oxygen_delivery_with_flowsheet_text(text: str, device: str) -> None:
    assessment, _ = _map(_temp(38.5, "t"), _obs("107117-4", {"valueString": text}, "dev"), _obs("3151-8", _qty(4, "L/min"), "f"))
    assert assessment["crs"]["oxygen"]["device"] == device


@pytest.mark.parametrize("text", ["Face MAS\u212a", "\uff26ace mask", "face mask\u200b", "NASAL CANNULA\u0130"])
def test_device_text_is_not_read_through_unicode_folding(text: str) -> None:
    """The Kelvin sign is not a K, a full-width F not an F: compared without compatibility folding."""
    assert fold("Face MAS\u212a") != fold("face mask") and " mask " not in words_of("MAS\u212a")
    _, mapping = _map(_temp(38.5, "t"), _device({"valueCodeableConcept": {"text": text}}))
    assert "no code or text recognised" in {i.source: i.reason for i in mapping.ignored}["Observation/dev"]


def test_a_ventilator_by_snomed_ct() -> None:
    assessment, _ = _map(_temp(38.5, "t"), _device({"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "706172005"}]}}))
    assert assessment["crs"]["oxygen"] == {"device": "mechanical_ventilation"}


# ---- dates without a time, birth dates without a day ----------------------------------------------


def test_a_date_without_a_time_is_used_only_when_the_whole_day_lies_in_the_window() -> None:
    as_of = datetime(2026, 6, 3, 12, 0, tzinfo=timezone.utc)
    inside, _ = _map(_temp(38.3, "day", when="2026-06-02"), as_of=as_of, now=as_of, window_hours=72.0)
    assert inside["vitals"]["temperature_c"] == 38.3  # 2026-06-02 in any zone: 06-01T10:00Z to 06-03T12:00Z
    _, mapping = _map(_temp(38.3, "day", when="2026-06-01"), _obs("8867-4", _qty(80, "/min"), "hr"), as_of=as_of, now=as_of,
                      window_hours=72.0)
    assert "cannot be placed inside the 72 h window" in {i.source: i.reason for i in mapping.ignored}["Observation/day"]


def test_a_date_that_may_be_later_than_a_timed_value_is_taken_with_it() -> None:
    as_of = datetime(2026, 6, 3, 12, 0, tzinfo=timezone.utc)
    both, mapping = _map(_temp(38.3, "day", when="2026-06-02"), _temp(36.8, "timed", when="2026-06-02T08:00:00Z"), as_of=as_of,
                         now=as_of, window_hours=72.0)
    assert "temperature_c" not in both.get("vitals", {}) and mapping.conflicts[0].resolution == "undetermined"
    # a date wholly before the latest timed value is older: the timed value is used
    older, mapping = _map(_temp(38.3, "day", when="2026-06-01"), _temp(36.8, "timed", when="2026-06-03T11:00:00Z"), as_of=as_of,
                          now=as_of, window_hours=80.0)
    assert older["vitals"]["temperature_c"] == 36.8 and "before a later timed value" in mapping.ignored[0].reason


def test_a_period_with_only_an_end_is_read_at_its_end() -> None:
    ended = {**_temp(38.4, "e"), "effectivePeriod": {"end": AT}}
    del ended["effectiveDateTime"]
    assessment, _ = _map(ended)
    assert assessment["vitals"]["temperature_c"] == 38.4


@pytest.mark.parametrize(
    ("birth", "accepted"),
    [
        ("1980-03", True),  # 46 whatever the day
        ("2014-06", False),  # 11 or 12 on 2026-06-01: ICE or CAPD
        ("2014-05", False),  # 12 whatever the day, but the ranges of age settings (11-18, 12-13 years) cover it
        ("2025-06", False),  # 0 or 1 on 2026-06-01: infant or child thresholds
        ("2026-01", True),  # 4 to 5 months: between the 28-day and the 1-year cut-offs
        ("2026-05", False),  # 0 to 31 days: meets the 28-day cut-off
    ],
)
def test_a_birth_date_without_a_day_is_read_when_no_age_cut_off_lies_within(birth: str, accepted: bool) -> None:
    patient = {**PATIENT, "birthDate": birth}
    if accepted:
        assessment, mapping = _map(_temp(38.0, "t"), patient=patient)
        assert "no day" in mapping.mapped[0].note and assessment["patient"]["age_years"] >= 0
    else:
        with pytest.raises(FhirInputError, match="a full date is needed"):
            _map(_temp(38.0, "t"), patient=patient)


# ---- vasopressors ---------------------------------------------------------------------------------


def _admin(medication: dict[str, Any], *, aid: str = "m", status: str = "in-progress", when: dict[str, Any] | None = None,
           kind: str = "MedicationAdministration", **extra: Any) -> dict[str, Any]:
    timing = when if when is not None else {"effectivePeriod": {"start": "2026-06-01T09:00:00Z"}}
    return {"resourceType": kind, "id": aid, "status": status, **medication, "subject": {"reference": "Patient/p"}, **timing, **extra}


NOREPINEPHRINE_ING = {"resourceType": "Medication", "id": "norepi",
                      "ingredient": [{"itemCodeableConcept": {"coding": [{"system": RXNORM, "code": "7512"}]}},
                                     {"itemCodeableConcept": {"text": "sodium chloride 0.9%"}}]}


def test_fever_and_norepinephrine_coded_only_on_a_contained_ingredient_is_crs_3(engine: aegrade.Engine) -> None:
    admin = _admin({"medicationReference": {"reference": "#norepi"}}, contained=[NOREPINEPHRINE_ING])
    assessment, _ = _map(_temp(38.5, "t"), admin)
    assert assessment["crs"]["vasopressors"] == ["norepinephrine"]
    assert _grade(engine, assessment).crs.grade == 3


@pytest.mark.parametrize(("text", "agent"), [("Levophed 4 mg in 250 mL", "norepinephrine"), ("NEO-SYNEPHRINE drip", "phenylephrine"),
                                             ("NORepinephrine-in-dextrose 5%", "norepinephrine"),
                                             ("Vasostrict 20 units", "vasopressin"), ("Giapreza", "other"), ("Adrenalin", "epinephrine")])
def test_brand_names_in_text(text: str, agent: str) -> None:
    assessment, _ = _map(_temp(38.5, "t"), _admin({"medicationCodeableConcept": {"text": text}}))
    assert assessment["crs"]["vasopressors"] == [agent]


def test_an_included_medication_resolves_against_the_entrys_base() -> None:
    base = "https://ehr.example.org/fhir/r4/"
    med = {**NOREPINEPHRINE_ING, "id": "med-1"}
    admin = _admin({"medicationReference": {"reference": "Medication/med-1"}}, aid="ma-1")
    urls = {"med-1": f"{base}Medication/med-1", "ma-1": f"{base}MedicationAdministration/ma-1", "p": f"{base}Patient/p"}
    assessment, _ = _map(_temp(38.5, "t"), med, admin, full_urls=urls)
    assert assessment["crs"]["vasopressors"] == ["norepinephrine"]
    # a Medication of that id on another server is not the one referred to
    elsewhere = {**urls, "med-1": "https://other.example.org/fhir/Medication/med-1"}
    _, mapping = _map(_temp(38.5, "t"), med, admin, full_urls=elsewhere)
    assert "does not resolve" in {i.source: i.reason for i in mapping.ignored}["MedicationAdministration/ma-1"]


def test_a_urn_reference_resolves_to_its_fullurl() -> None:
    med_url, admin_url = "urn:uuid:0b0e4a2c-62f4-4e4b-9f7e-2f1c43c3b1d1", "urn:uuid:5a1d3e58-4b41-4a0c-8e0f-7a3c5f9b8d2e"
    admin = _admin({"medicationReference": {"reference": med_url}}, aid="ma")
    assessment, _ = _map(_temp(38.5, "t"), {**NOREPINEPHRINE_ING, "id": "x"}, admin, full_urls={"x": med_url, "ma": admin_url})
    assert assessment["crs"]["vasopressors"] == ["norepinephrine"]


EVENT = {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "7512"}]}}


@pytest.mark.parametrize(("minutes_before", "running"), [(119, True), (120, True), (121, False)])  # the LOCAL window: 2 h
def test_a_completed_point_event_runs_within_the_event_window(minutes_before: int, running: bool) -> None:
    when = (AS_OF - timedelta(minutes=minutes_before)).isoformat()
    assessment, _ = _map(_temp(38.5, "t"), _admin(EVENT, status="completed", when={"effectiveDateTime": when}))
    assert ("vasopressors" in assessment.get("crs", {})) is running


def test_the_event_window_is_the_crs_rule_files_local_setting(engine: aegrade.Engine) -> None:
    [setting] = [s for s in engine.primary("crs").file.settings if s.id == "fhir_vasopressor_event_window_hours"]
    assert setting.evidence_level == "LOCAL" and setting.default == 2
    when = (AS_OF - timedelta(hours=3)).isoformat()
    assessment, _ = _map(_temp(38.5, "t"), _admin(EVENT, status="completed", when={"effectiveDateTime": when}),
                         vasopressor_event_window_hours=4.0)
    assert assessment["crs"]["vasopressors"] == ["norepinephrine"]


def test_a_stop_charted_after_the_event_ends_it() -> None:
    event = _admin(EVENT, aid="rate", status="completed", when={"effectiveDateTime": "2026-06-01T09:00:00Z"})
    stop = _admin(EVENT, aid="stop", status="stopped", when={"effectiveDateTime": "2026-06-01T09:30:00Z"})
    assessment, mapping = _map(_temp(38.5, "t"), event, stop)
    assert "crs" not in assessment
    assert "a stop of the same agent" in {i.source: i.reason for i in mapping.ignored}["MedicationAdministration/rate"]


def test_an_active_statement_runs_and_an_active_order_cannot_tell() -> None:
    statement = _admin(EVENT, kind="MedicationStatement", status="active")
    assessment, _ = _map(_temp(38.5, "t"), statement)
    assert assessment["crs"]["vasopressors"] == ["norepinephrine"]
    order = _admin({"medicationCodeableConcept": {"text": "epinephrine infusion"}}, kind="MedicationRequest", status="active",
                   when={"authoredOn": "2026-06-01T08:00:00Z"}, intent="order")
    assessment, mapping = _map(_temp(38.5, "t"), statement, order)
    assert "vasopressors" not in assessment.get("crs", {})  # epinephrine may run too: grade 3 or 4
    [unknown] = mapping.undetermined
    assert unknown.input == "crs.vasopressors" and "epinephrine" in unknown.reason and "MedicationRequest/m" in unknown.sources


def test_an_order_for_an_agent_already_running_changes_nothing() -> None:
    order = _admin(EVENT, aid="o", kind="MedicationRequest", status="active", when={"authoredOn": "2026-06-01T08:00:00Z"}, intent="order")
    assessment, mapping = _map(_temp(38.5, "t"), _admin(EVENT), order)
    assert assessment["crs"]["vasopressors"] == ["norepinephrine"] and mapping.undetermined == []


@pytest.mark.parametrize(("end", "running"), [("2026-06-01T09:59:00Z", False), ("2026-06-01T10:30:00Z", None)])
def test_a_period_with_only_an_end(end: str, running: bool | None) -> None:
    admin = _admin(EVENT, status="completed", when={"effectivePeriod": {"end": end}})
    assessment, mapping = _map(_temp(38.5, "t"), admin)
    assert "crs" not in assessment
    assert bool(mapping.undetermined) is (running is None)


# ---- fever masking -----------------------------------------------------------------------------------


def _masking(text: str, reason: dict[str, Any] | None = None) -> dict[str, Any]:
    resource = _admin({"medicationCodeableConcept": {"text": text}}, status="completed", when={"effectiveDateTime": "2026-06-01T08:00:00Z"})
    if reason is not None:
        resource["reasonCode"] = [reason]
    return resource


def test_tocilizumab_with_no_onset_in_view_is_undecided_a_steroid_does_not_mask(engine: aegrade.Engine) -> None:
    assessment, mapping = _map(_temp(37.2, "t"), _masking("tocilizumab 8 mg/kg"))
    assert mapping.masking_decisions[0].masks is None and "given in practice for CRS" in mapping.masking_decisions[0].reason
    assert "crs.fever_masked" in [u.input for u in mapping.undetermined]
    assert "crs.fever_masked" in [u.input for u in _grade(engine, assessment).crs.undetermined_by]
    _, mapping = _map(_temp(37.2, "t"), _masking("dexamethasone 10 mg"))
    assert mapping.masking_decisions[0].masks is False


@pytest.mark.parametrize(("code", "masks"), [("D89.832", True), ("D89.839", True), ("D89.89", False)])
def test_an_icd_10_cm_cytokine_release_syndrome_reason_masks(code: str, masks: bool) -> None:
    reason = {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]}
    assessment, mapping = _map(_temp(37.2, "t"), _masking("dexamethasone 10 mg", reason))
    assert mapping.masking_decisions[0].masks is masks
    assert assessment.get("crs", {}).get("fever_masked") is (True if masks else None)


def test_a_hyphenated_premedication_reason_never_masks() -> None:
    _, mapping = _map(_temp(38.6, "f", "2026-06-01T07:00:00Z"), _temp(37.2, "t"), _masking("dexamethasone", {"text": "Pre-medication"}))
    assert mapping.masking_decisions[0].masks is False


# ---- references and outcomes -------------------------------------------------------------------------


def test_a_subject_that_resolves_to_no_patient_is_ignored_not_refused() -> None:
    lost = {**_temp(39.0, "lost"), "subject": {"reference": "urn:uuid:6f1c2b3a-0d4e-4f5a-8b6c-7d8e9f0a1b2c"}}
    assessment, mapping = _map(_temp(37.0, "t"), lost)
    assert assessment["vitals"]["temperature_c"] == 37.0
    assert "does not resolve" in {i.source: i.reason for i in mapping.ignored}["Observation/lost"]


@pytest.mark.parametrize("when", ["0001-01-01", "9999-12-31", "0001-01-01T00:00:00+14:00", "2026-02-30", "1999-12-31T23:59:59Z"])
def test_times_at_the_ends_of_the_calendar_are_ignored_not_failed(when: str) -> None:
    _, mapping = _map(_temp(37.0, "t"), _temp(39.0, "edge", when=when),
                      _admin(EVENT, aid="edge-admin", status="completed", when={"effectiveDateTime": when}))
    reasons = {i.source: i.reason for i in mapping.ignored}
    assert "Observation/edge" in reasons and "MedicationAdministration/edge-admin" in reasons


def test_a_masking_administration_with_no_usable_time_is_undecided_and_premedication_still_never_masks() -> None:
    untimed = _admin({"medicationCodeableConcept": {"text": "acetaminophen 650 mg"}}, aid="a", status="completed",
                     when={"effectiveDateTime": "2026-06"})  # a month alone: no usable time
    _, mapping = _map(_temp(38.6, "t"), untimed)
    assert mapping.masking_decisions[0].masks is None and "a year or month alone" in mapping.masking_decisions[0].reason
    premedication = {**untimed, "reasonCode": [{"text": "premedication"}]}
    _, mapping = _map(_temp(38.6, "t"), premedication)
    assert mapping.masking_decisions[0].masks is False


# ---- oxygen devices from DeviceUseStatement ----------------------------------------------------------


HFNC_DEVICE = {"resourceType": "Device", "id": "hfnc", "status": "active", "patient": {"reference": "Patient/p"},
               "type": {"coding": [{"system": SNOMED, "code": "426854004", "display": "High flow oxygen nasal cannula (physical object)"}]}}


def _use(status: str, timing: dict[str, Any], device: str = "Device/hfnc") -> dict[str, Any]:
    return {"resourceType": "DeviceUseStatement", "id": "use", "status": status, "subject": {"reference": "Patient/p"},
            "device": {"reference": device}, **timing}


@pytest.mark.parametrize(
    ("status", "timing", "in_use"),
    [
        ("active", {"timingPeriod": {"start": "2026-05-30T08:00:00Z"}}, True),  # days ago, still active: in use now
        ("completed", {"timingPeriod": {"start": "2026-05-30T08:00:00Z", "end": "2026-06-01T09:59:00Z"}}, False),
        ("completed", {"timingPeriod": {"start": "2026-05-30T08:00:00Z", "end": "2026-06-01T10:00:00Z"}}, True),
        ("active", {"timingDateTime": "2026-06-01T09:00:00Z"}, True),  # charted at one time, in the window
        ("on-hold", {"timingPeriod": {"start": "2026-05-30T08:00:00Z"}}, False),
    ],
)
def test_a_device_use_statement_gives_the_device_in_use(status: str, timing: dict[str, Any], in_use: bool, engine: aegrade.Engine) -> None:
    flow = _obs("3151-8", _qty(30, "L/min"), "flow")
    assessment, mapping = _map(_temp(38.5, "t"), flow, HFNC_DEVICE, _use(status, timing))
    if in_use:
        assert assessment["crs"]["oxygen"] == {"device": "high_flow_nasal_cannula", "flow_l_min": 30}
        assert _grade(engine, assessment).crs.grade == 3
    else:
        assert "crs" not in assessment and "DeviceUseStatement/use" in {i.source for i in mapping.ignored}


def test_a_device_use_statement_whose_device_cannot_be_read_is_ignored() -> None:
    _, mapping = _map(_temp(38.5, "t"), _use("active", {"timingPeriod": {"start": "2026-06-01T08:00:00Z"}}, "Device/missing"))
    assert "does not resolve" in {i.source: i.reason for i in mapping.ignored}["DeviceUseStatement/use"]
    pump = {**HFNC_DEVICE, "type": {"text": "Infusion pump"}}
    _, mapping = _map(_temp(38.5, "t"), pump, _use("active", {"timingPeriod": {"start": "2026-06-01T08:00:00Z"}}))
    assert "not an oxygen device" in {i.source: i.reason for i in mapping.ignored}["DeviceUseStatement/use"]


def test_the_same_patient_twice_is_one_patient_another_is_refused() -> None:
    assessment, _ = _map(_temp(38.0, "t"), dict(PATIENT))  # e.g. a Patient read and an _include of it
    assert assessment["vitals"]["temperature_c"] == 38.0
    with pytest.raises(FhirInputError, match="a second Patient"):
        _map(_temp(38.0, "t"), {**PATIENT, "id": "q"})
    with pytest.raises(FhirInputError, match="a second Patient"):
        _map(_temp(38.0, "t"), {**PATIENT, "birthDate": "1981-06-01"})


def test_an_engines_rule_sets_give_the_same_reading_as_the_default(engine: aegrade.Engine) -> None:
    """map_resources(rulesets=...) reads thresholds, age cut-offs, the event window and the devices
    that need a flow from the rule sets given (the service passes its engine's)."""
    resources = (_temp(37.5, "a"), _temp(37.9, "b"), _obs("3151-8", _qty(4, "L/min"), "f"),
                 _admin(EVENT, status="completed", when={"effectiveDateTime": "2026-06-01T08:30:00Z"}))
    assert _map(*resources, rulesets=engine.rulesets) == _map(*resources)
    shorter, _ = _map(*resources, rulesets=engine.rulesets, vasopressor_event_window_hours=1.0)
    assert "vasopressors" not in shorter.get("crs", {})
