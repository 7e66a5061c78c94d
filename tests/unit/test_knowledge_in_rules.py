"""Clinical knowledge lives in rules/ (issue 16): which oxygen devices need a flow, which treatments
mask fever and for how long, how vasopressors count, how a CDS card flags a grade, and the ICE/CAPD
age on the bedside form. Python reads these declarations; changing a rule file changes behaviour."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import aegrade
from aegrade import episodes
from aegrade.episodes import GivenTreatment, apply_fever_masking, default_fever_masking, fever_masking
from aegrade.errors import InvalidAssessment, RuleFileError
from aegrade.fhir import FhirAssessmentResult, FhirMapping
from aegrade.models import Assessment
from aegrade.rulefile import FactTest, default_rules_dir, iter_tests, load_ruleset, loaded_ruleset
from aegrade.testing import strategies
from service import form
from service.app import create_app
from service.settings import ServiceSettings

CRS = Path("crs") / "astct-2019.yaml"
ICANS = Path("icans") / "astct-2019.yaml"
HFNC_NO_FLOW = {
    "patient": {"age_years": 50},
    "vitals": {"temperature_c": 39.0},
    "crs": {"fever_masked": False, "hypotension": False, "vasopressors": [], "oxygen": {"device": "high_flow_nasal_cannula"}},
}


@pytest.fixture
def edited_rules(tmp_path: Path) -> Callable[[Path, str, str], Path]:
    """A copy of rules/ with one text replacement in one file (which must occur exactly once)."""
    root = tmp_path / "rules"
    shutil.copytree(default_rules_dir(), root)

    def edit(relative: Path, old: str, new: str) -> Path:
        path = root / relative
        text = path.read_text()
        assert text.count(old) == 1, old
        path.write_text(text.replace(old, new))
        return root

    return edit


# ---- oxygen devices that need a flow ----------------------------------------------------------


def test_validation_strategies_and_form_read_the_same_declaration(engine: aegrade.Engine) -> None:
    declared = engine.primary("crs").file.derivations.oxygen_flow
    assert declared is not None and declared is engine.oxygen_flow
    assert strategies.flow_devices() == declared
    assert form.FLOW_DEVICES == form.flow_devices(engine) == declared.flow_devices
    assert set(declared.required_with) <= set(form.FLOW_DEVICES)
    for device in declared.required_with:
        with pytest.raises(InvalidAssessment) as caught:
            engine.validate({**HFNC_NO_FLOW, "crs": {**HFNC_NO_FLOW["crs"], "oxygen": {"device": device}}})
        assert [e.loc for e in caught.value.errors] == [("crs", "oxygen", "flow_l_min")]


def test_the_declared_devices_are_those_whose_rules_read_the_flow(engine: aegrade.Engine) -> None:
    """A device whose grade some rule decides by flow is asked for its flow, and no other is."""
    by_flow: set[str] = set()
    for rule in engine.primary("crs").rules:
        tests = [t for t in iter_tests(rule.when) if isinstance(t, FactTest)]
        if any(t.fact == "oxygen_flow_l_min" for t in tests):
            for t in tests:
                if t.fact == "oxygen_device":
                    by_flow.update(t.value if isinstance(t.value, list) else [t.value])  # type: ignore[arg-type]
    assert by_flow == set(engine.oxygen_flow.flow_devices)


def test_changing_the_rule_files_device_list_changes_validation_and_the_form(
    edited_rules: Callable[[Path, str, str], Path], engine: aegrade.Engine
) -> None:
    with pytest.raises(InvalidAssessment):
        engine.validate(HFNC_NO_FLOW)
    rules = edited_rules(
        CRS,
        "required_with: [nasal_cannula, high_flow_nasal_cannula]\n    asked_with: [simple_facemask, nonrebreather, venturi]",
        "required_with: [nasal_cannula]\n    asked_with: [high_flow_nasal_cannula, simple_facemask, nonrebreather, venturi, blow_by]",
    )
    edited = aegrade.Engine(rules_dir=rules)
    edited.validate(HFNC_NO_FLOW)  # no longer required
    assert form.flow_devices(edited) == (
        "nasal_cannula", "high_flow_nasal_cannula", "simple_facemask", "nonrebreather", "venturi", "blow_by"
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("required_with: [nasal_cannula, high_flow_nasal_cannula]", "required_with: [nasal_cannula, hfnc]", "unknown value(s) ['hfnc']"),
        ("required_with: [nasal_cannula, high_flow_nasal_cannula]", "required_with: [nasal_cannula, none]", "unknown value(s) ['none']"),
        ("asked_with: [simple_facemask, nonrebreather, venturi]", "asked_with: [nasal_cannula]", "listed twice"),
        ("anticytokine: [tocilizumab, anakinra]", "anticytokine: [tocilizumab, siltuximab]", "unknown value(s) ['siltuximab']"),
        ("not_counted: [vasopressin]", "not_counted: [terlipressin]", "unknown value(s) ['terlipressin']"),
        ("listed_facts: {vasopressin: vasopressin}", "listed_facts: {vasopressin_on: vasopressin}", "not a boolean fact"),
        ("- {from_grade: 3, indicator: critical}", "- {from_grade: 1, indicator: critical}", "from_grade is given twice"),
    ],
)
def test_a_bad_declaration_is_refused_at_load(
    edited_rules: Callable[[Path, str, str], Path], old: str, new: str, message: str
) -> None:
    rules = edited_rules(CRS, old, new)
    with pytest.raises(RuleFileError) as caught:
        load_ruleset(rules / CRS)
    assert message in str(caught.value)


# ---- vasopressors ------------------------------------------------------------------------------

ONE_PRESSOR_WITH_VASOPRESSIN = {
    "patient": {"age_years": 55},
    "vitals": {"temperature_c": 39.1},
    "crs": {"fever_masked": False, "hypotension": True, "vasopressors": ["norepinephrine", "vasopressin"], "oxygen": {"device": "none"}},
}


def test_which_vasopressors_count_is_the_rule_files(edited_rules: Callable[[Path, str, str], Path], engine: aegrade.Engine) -> None:
    result = engine.assess(ONE_PRESSOR_WITH_VASOPRESSIN)
    assert result.crs is not None and result.crs.grade == 3
    rules = edited_rules(CRS, "not_counted: [vasopressin]", "not_counted: []")
    edited = aegrade.Engine(rules_dir=rules, self_test=False)  # its own cases say vasopressin is not counted
    result = edited.assess(ONE_PRESSOR_WITH_VASOPRESSIN)
    assert result.crs is not None and result.crs.grade == 4


def test_vasopressors_imply_hypotension_only_when_the_rule_file_says_so(
    edited_rules: Callable[[Path, str, str], Path], engine: aegrade.Engine
) -> None:
    contradiction = {**ONE_PRESSOR_WITH_VASOPRESSIN, "crs": {**ONE_PRESSOR_WITH_VASOPRESSIN["crs"], "hypotension": False}}
    with pytest.raises(InvalidAssessment):
        engine.validate(contradiction)
    rules = edited_rules(CRS, "imply_hypotension: true", "imply_hypotension: false")
    edited = aegrade.Engine(rules_dir=rules, self_test=False)
    edited.validate(contradiction)
    unreported = {**ONE_PRESSOR_WITH_VASOPRESSIN, "crs": {k: v for k, v in ONE_PRESSOR_WITH_VASOPRESSIN["crs"].items() if k != "hypotension"}}
    assert engine.assess(unreported).crs.grade == 3  # type: ignore[union-attr]
    open_hypotension = edited.assess(unreported).crs
    assert open_hypotension is not None and open_hypotension.grade == 1 and "hypotension" in open_hypotension.missing


# ---- fever masking -----------------------------------------------------------------------------


def _at(hours: float) -> datetime:
    return datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(hours=hours)


def test_the_masking_aliases_are_the_rule_files(engine: aegrade.Engine) -> None:
    declared = engine.fever_masking
    assert declared == default_fever_masking()
    assert episodes.MASKING_AGENTS == declared.all_agents
    assert episodes.ANTICYTOKINES == frozenset(declared.agents["anticytokine"])
    assert episodes.CORTICOSTEROIDS == frozenset(declared.agents["corticosteroid"])
    assert episodes.ANTIPYRETICS == frozenset(declared.agents["antipyretic"])
    assert "blinatumomab_start" not in episodes.MASKING_AGENTS
    assert declared.window.hours is None and declared.window.evidence_level in ("U", "LOCAL")


def test_the_masking_agents_and_window_follow_the_declaration(
    edited_rules: Callable[[Path, str, str], Path],
) -> None:
    given = [GivenTreatment("ibuprofen", _at(1))]
    assert fever_masking(_at(500), _at(0), given) is not None  # default: no window
    rules = edited_rules(
        CRS,
        "antipyretic: [acetaminophen, ibuprofen, other_antipyretic]\n",
        "antipyretic: [acetaminophen, other_antipyretic]\n",
    )
    no_ibuprofen = load_ruleset(rules / CRS).file.derivations.fever_masking
    assert no_ibuprofen is not None
    assert fever_masking(_at(5), _at(0), given, declaration=no_ibuprofen) is None

    given = [GivenTreatment("tocilizumab", _at(1))]
    rules = edited_rules(CRS, "      hours: null\n", "      hours: 6\n")
    six_hours = load_ruleset(rules / CRS).file.derivations.fever_masking
    assert six_hours is not None and six_hours.window.hours == 6
    assert fever_masking(_at(7), _at(0), given, declaration=six_hours) is not None  # exactly 6 h
    assert fever_masking(_at(8), _at(0), given, declaration=six_hours) is None
    assert fever_masking(_at(8), _at(0), given, window_hours=24, declaration=six_hours) is not None  # the override wins


def test_the_interpretation_says_where_the_window_comes_from() -> None:
    assessment = Assessment.model_validate({"patient": {"age_years": 50}, "vitals": {"temperature_c": 37.0}})
    masking = fever_masking(_at(5), _at(0), [GivenTreatment("tocilizumab", _at(1))])
    _, _, [from_file] = apply_fever_masking(assessment, masking, _at(0))
    assert "no limit" in from_file.text and "rule file" in from_file.text and from_file.value is None
    _, _, [overridden] = apply_fever_masking(assessment, masking, _at(0), window_hours=4)
    assert "4 h" in overridden.text and "AEGRADE_EPISODE_MASKING_WINDOW_HOURS" in overridden.text


# ---- CDS card indicators -----------------------------------------------------------------------

GRADE_3 = {
    "patient": {"age_years": 57},
    "vitals": {"temperature_c": 39.5},
    "crs": {"fever_masked": False, "hypotension": True, "vasopressors": ["norepinephrine"], "oxygen": {"device": "none"}},
}


def _crs_card(engine: aegrade.Engine) -> Any:
    from service.cds_hooks import _domain_card

    result = engine.assess(GRADE_3)
    mapping = FhirMapping(as_of=_at(0), window_hours=4, mapped=[], ignored=[], masking=[], masking_applied=False)
    fhir_result = FhirAssessmentResult.model_validate({**result.model_dump(), "mapping": mapping.model_dump()})
    assert fhir_result.crs is not None
    return _domain_card("CRS", fhir_result.crs, fhir_result, [])


def test_card_indicators_are_declared_for_each_grading_rule_set(engine: aegrade.Engine) -> None:
    for subject in ("crs", "icans"):
        cards = engine.primary(subject).file.card_indicators  # type: ignore[arg-type]
        assert cards is not None and cards.evidence_level == "LOCAL"
        assert [cards.for_grade(g) for g in (None, 0, 1, 2, 3, 4, 5)] == [None, None, "warning", "warning", "critical", "critical", "critical"]
        assert cards.threshold == 1
    assert loaded_ruleset(engine.primary("crs").sha256) is not None


def test_the_cds_card_indicator_follows_the_rule_file(edited_rules: Callable[[Path, str, str], Path], engine: aegrade.Engine) -> None:
    assert _crs_card(engine).indicator == "critical"
    rules = edited_rules(CRS, "- {from_grade: 3, indicator: critical}", "- {from_grade: 4, indicator: critical}")
    edited = aegrade.Engine(rules_dir=rules)
    assert _crs_card(edited).indicator == "warning"


# ---- the bedside form: the ICE/CAPD age and the flow devices are the engine's ----------------------


def test_the_form_page_shows_the_engines_capd_age_and_flow_devices(tmp_path: Path) -> None:
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}", rule_settings={"astct-icans": {"capd_age_cutoff_years": 13}}
    )
    with TestClient(create_app(settings)) as client:
        page = client.get("/").text
    assert 'data-capd-age="13"' in page
    assert "ICE (age 13 and over)" in page and "CAPD (under 13, or developmental delay)" in page
    assert "ICE for age 13 and over; CAPD under 13" in page
    assert "12" not in " ".join(line for line in page.splitlines() if "ICE" in line or "CAPD" in line)
    assert 'data-flow-devices="nasal_cannula high_flow_nasal_cannula simple_facemask nonrebreather venturi"' in page
    assert "Needed for nasal cannula / high flow nasal cannula." in page
    assert "{capd_age}" not in page and "{flow_required}" not in page


# ---- the bedside form: ASCII digits only ---------------------------------------------------------


@pytest.mark.parametrize("typed", ["3_9", "３９", "٣٩", "۳۹", "39\u0660", "1e2", "inf", "nan", "0x27", "1,200", "38.5.1", ""])
def test_a_number_field_takes_ascii_digits_only(typed: str) -> None:
    parsed = form.parse_form({"patient.age_years": ["40"], "vitals.temperature": [typed]})
    if not typed:
        assert "vitals.temperature" not in parsed.errors  # blank: not reported
        return
    [message] = parsed.errors["vitals.temperature"]
    assert "Temperature" in message, "the error names the field"
    assert "temperature" not in parsed.data.get("vitals", {}) and "temperature_c" not in parsed.data.get("vitals", {})
    if any(c.isdigit() and c not in "0123456789" for c in typed) or "_" in typed:
        assert "digits 0-9" in message


@pytest.mark.parametrize(("typed", "value"), [("38.5", 38.5), (" 39 ", 39.0), ("+38", 38.0), ("38.", 38.0), (".5", 0.5), ("-0.5", -0.5)])
def test_ascii_numbers_are_read(typed: str, value: float) -> None:
    parsed = form.parse_form({"vitals.temperature": [typed]})
    assert parsed.errors == {} and parsed.data["vitals"]["temperature_c"] == value


@pytest.mark.parametrize("typed", ["２", "٢", "2_0", "2.5"])
def test_a_whole_number_field_takes_ascii_digits_only(typed: str) -> None:
    parsed = form.parse_form({"blinatumomab.seizures_this_course": [typed]})
    [message] = parsed.errors["blinatumomab.seizures_this_course"]
    assert "Seizures in this course" in message and ("whole number" in message or "digits 0-9" in message)


def test_non_ascii_digits_are_refused_on_the_page(tmp_path: Path) -> None:
    settings = ServiceSettings(database_url=f"sqlite:///{tmp_path / 'a.sqlite3'}")
    with TestClient(create_app(settings)) as client:
        page = client.get("/")
        token = _csrf(page.text)
        for typed in ("３９", "٣٩", "3_9"):
            data = {"patient.age_years": "40", "vitals.temperature": typed}
            if token is not None:
                data["csrf_token"] = token
            response = client.post("/", data=data)
            assert response.status_code == 422, typed
            assert 'id="vitals.temperature-error"' in response.text
            assert "digits 0-9 only for Temperature" in response.text


def _csrf(page: str) -> str | None:
    import re

    found = re.search(r'name="csrf_token" value="([^"]*)"', page)
    return found.group(1) if found else None


# ---- engine wiring from the rule files -----------------------------------------------------------


def test_the_label_grade_facts_read_the_subjects_the_action_rule_file_names(engine: aegrade.Engine) -> None:
    from aegrade.engine import _open_inputs
    from aegrade.facts import CATALOGUES

    opened = _open_inputs({"crs": ["crs.vasopressors"], "icans": ["neuro.consciousness"]}, engine.primary("blinatumomab"), engine.rulesets)
    assert set(opened) == {name for name, spec in CATALOGUES["blinatumomab"].items() if spec.bounded}
    for fact, inputs in opened.items():
        assert inputs == (["crs.vasopressors"] if fact.startswith("crs") else ["neuro.consciousness"]), fact


def test_the_forms_capd_answers_are_scored_as_the_icans_rule_file_declares() -> None:
    """The form posts each CAPD answer's points from the ICANS rule file (derivations.capd_answers):
    items 1-4 in reverse. Python holds only the words."""
    from aegrade.rulefile import load_rulesets
    from service.form import CAPD_ANSWERS

    declared = next(r.file.derivations.capd_answers for r in load_rulesets() if r.file.derivations.capd_answers)
    assert declared.reversed_items == [1, 2, 3, 4] and declared.items == len(CAPD_ANSWERS) == 8
    for item, answers in enumerate(CAPD_ANSWERS, start=1):
        points = [int(score) for score, _ in answers]
        assert points == ([4, 3, 2, 1, 0] if item <= 4 else [0, 1, 2, 3, 4]), (item, points)
        assert points == declared.item_points(item)
