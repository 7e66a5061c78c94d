"""Bad input never becomes a grade: each is refused with an error that names the field."""

from __future__ import annotations

import math
from typing import Any

import pytest

import aegrade

ADULT = {"age_years": 40}


def refused(engine: aegrade.Engine, payload: Any) -> list[tuple[Any, ...]]:
    with pytest.raises(aegrade.InvalidAssessment) as info:
        engine.assess(payload)
    return [e.loc for e in info.value.errors]


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        ({"patient": {"age_years": math.nan}}, ("patient", "age_years")),
        ({"patient": ADULT, "vitals": {"temperature_c": math.inf}}, ("vitals", "temperature_c")),
        ({"patient": ADULT, "vitals": {"temperature_c": -math.inf}}, ("vitals", "temperature_c")),
        ({"patient": ADULT, "vitals": {"temperature_c": True}}, ("vitals", "temperature_c")),
        ({"patient": ADULT, "vitals": {"temperature_c": "38.5"}}, ("vitals", "temperature_c")),
        ({"patient": ADULT, "vitals": {"temperature_c": 45.1}}, ("vitals", "temperature_c")),
        ({"patient": ADULT, "vitals": {"temperature_f": 76.9}}, ("vitals", "temperature_f")),
        ({"patient": {"age_years": 120.5}}, ("patient", "age_years")),
        ({"patient": {"age_years": -0.1}}, ("patient", "age_years")),
        ({"patient": {"age_years": 40, "weight_kg": 0}}, ("patient", "weight_kg")),
        ({"patient": {"age_years": 40, "developmental_delay": 1}}, ("patient", "developmental_delay")),
        ({"patient": ADULT, "neuro": {"ice_score": 7.5}}, ("neuro", "ice_score")),
        ({"patient": ADULT, "neuro": {"ice_score": True}}, ("neuro", "ice_score")),
        ({"patient": ADULT, "neuro": {"ice_score": "7"}}, ("neuro", "ice_score")),
        ({"patient": ADULT, "neuro": {"ice_score": 11}}, ("neuro", "ice_score")),
        ({"patient": ADULT, "neuro": {"ice": {"orientation": 5, "naming": 3, "commands": 1, "writing": 1, "attention": 1}}}, ("neuro", "ice", "orientation")),
        ({"patient": ADULT, "neuro": {"ice": {"orientation": 4}}}, ("neuro", "ice", "naming")),
        ({"patient": {"age_years": 5}, "neuro": {"capd": [0] * 7}}, ("neuro", "capd")),
        ({"patient": {"age_years": 5}, "neuro": {"capd": [0] * 7 + [5]}}, ("neuro", "capd", 7)),
        ({"patient": ADULT, "neuro": {"consciousness": "drowsy"}}, ("neuro", "consciousness")),
        ({"patient": ADULT, "crs": {"oxygen": {"device": "high_flow"}}}, ("crs", "oxygen", "device")),
        ({"patient": ADULT, "crs": {"oxygen": {"device": "bipap", "flow_l_min": 81}}}, ("crs", "oxygen", "flow_l_min")),
        ({"patient": ADULT, "crs": {"vasopressors": ["noradrenaline"]}}, ("crs", "vasopressors", 0)),
        ({"patient": ADULT, "crs": {"fever_masked": "no"}}, ("crs", "fever_masked")),
        ({"patient": ADULT, "temperature": 38}, ("temperature",)),
        ({"patient": {"age_years": 40, "sex": "f"}}, ("patient", "sex")),
        ({"patient": ADULT, "vitals": {"temp_c": 38}}, ("vitals", "temp_c")),
        ({"patient": ADULT, "neuro": {"ICE": 3}}, ("neuro", "ICE")),
        ({"vitals": {"temperature_c": 38}}, ("patient",)),
    ],
)
def test_invalid_value_is_refused_naming_the_field(engine: aegrade.Engine, payload: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert loc in refused(engine, payload)


@pytest.mark.parametrize(
    ("payload", "loc", "words"),
    [
        ({"patient": ADULT, "vitals": {"temperature_c": 38, "temperature_f": 100.4}}, ("vitals", "temperature_f"), "not both"),
        ({"patient": ADULT, "vitals": {"sbp_mmhg": 80, "dbp_mmhg": 90}}, ("vitals", "dbp_mmhg"), "above systolic"),
        ({"patient": ADULT, "vitals": {"sbp_mmhg": 80, "map_mmhg": 90}}, ("vitals", "map_mmhg"), "above systolic"),
        ({"patient": ADULT, "crs": {"hypotension": False, "vasopressors": ["dopamine"]}}, ("crs", "hypotension"), "imply hypotension"),
        ({"patient": ADULT, "crs": {"vasopressors": ["dopamine", "dopamine"]}}, ("crs", "vasopressors", 1), "twice"),
        ({"patient": ADULT, "crs": {"oxygen": {"device": "nasal_cannula"}}}, ("crs", "oxygen", "flow_l_min"), "required"),
        ({"patient": ADULT, "crs": {"oxygen": {"device": "high_flow_nasal_cannula"}}}, ("crs", "oxygen", "flow_l_min"), "required"),
        ({"patient": ADULT, "crs": {"oxygen": {"device": "nasal_cannula", "flow_l_min": 0}}}, ("crs", "oxygen", "flow_l_min"), "device 'none'"),
        ({"patient": ADULT, "crs": {"oxygen": {"device": "none", "flow_l_min": 2}}}, ("crs", "oxygen", "flow_l_min"), "'none'"),
        ({"patient": ADULT, "neuro": {"ice_score": 5, "ice": {"orientation": 1, "naming": 1, "commands": 1, "writing": 1, "attention": 1}}}, ("neuro", "ice_score"), "not both"),
        ({"patient": {"age_years": 5}, "neuro": {"capd_score": 5, "capd": [0] * 8}}, ("neuro", "capd_score"), "not both"),
        ({"patient": {"age_years": 9}, "neuro": {"ice_score": 9}}, ("neuro", "ice_score"), "CAPD applies"),
        ({"patient": {"age_years": 30}, "neuro": {"capd_score": 9}}, ("neuro", "capd_score"), "ICE applies"),
        ({"patient": {"age_years": 30, "developmental_delay": True}, "neuro": {"ice_score": 9}}, ("neuro", "ice_score"), "developmental delay"),
        ({"patient": ADULT, "neuro": {"unable_to_perform": True, "ice_score": 3}}, ("neuro", "ice_score"), "only 0"),
        # v1.1: unable_to_perform means unarousable; any other consciousness is refused on unable_to_perform.
        ({"patient": ADULT, "neuro": {"unable_to_perform": True, "consciousness": "alert"}}, ("neuro", "unable_to_perform"), "alert"),
        (
            {"patient": ADULT, "neuro": {"unable_to_perform": True, "consciousness": "awakens_to_voice"}},
            ("neuro", "unable_to_perform"),
            "awakens_to_voice",
        ),
        (
            {"patient": ADULT, "neuro": {"unable_to_perform": True, "consciousness": "awakens_to_tactile"}},
            ("neuro", "unable_to_perform"),
            "awakens_to_tactile",
        ),
        ({"patient": {"age_years": 4}, "neuro": {"unable_to_perform": True, "capd_score": 20}}, ("neuro", "capd_score"), "unable_to_perform"),
        ({"patient": ADULT, "neuro": {"icp_signs": ["papilledema", "papilledema"]}}, ("neuro", "icp_signs", 1), "twice"),
    ],
)
def test_contradiction_is_refused_naming_the_field(
    engine: aegrade.Engine, payload: dict[str, Any], loc: tuple[Any, ...], words: str
) -> None:
    with pytest.raises(aegrade.InvalidAssessment) as info:
        engine.assess(payload)
    errors = {e.loc: e.msg for e in info.value.errors}
    assert loc in errors, errors
    assert words in errors[loc]


def test_unable_to_perform_without_consciousness_implies_unarousable(engine: aegrade.Engine) -> None:
    result = engine.assess({"patient": ADULT, "neuro": {"unable_to_perform": True}})
    assert result.icans is not None and result.icans.grade == 4
    assert any("taken as unarousable" in note for note in result.icans.notes)


def test_all_errors_are_reported_together(engine: aegrade.Engine) -> None:
    locs = refused(
        engine,
        {"patient": {"age_years": 9}, "vitals": {"temperature_c": 38, "temperature_f": 100.4}, "neuro": {"ice_score": 9}},
    )
    assert ("vitals", "temperature_f") in locs and ("neuro", "ice_score") in locs


def test_allowed_edge_values_are_accepted(engine: aegrade.Engine) -> None:
    engine.assess({"patient": {"age_years": 0}, "vitals": {"temperature_c": 25, "spo2_pct": 0}})
    engine.assess({"patient": {"age_years": 120, "weight_kg": 400}, "vitals": {"temperature_f": 113}})
    engine.assess({"patient": ADULT, "neuro": {"unable_to_perform": True, "ice_score": 0, "consciousness": "unarousable"}})
    engine.assess({"patient": ADULT, "crs": {"oxygen": {"device": "none", "flow_l_min": 0}}})


def test_whole_number_floats_count_as_integers(engine: aegrade.Engine) -> None:
    """JSON Schema calls 7.0 an integer; so does aegrade (but never 7.5, "7" or true)."""
    result = engine.assess({"patient": ADULT, "neuro": {"ice_score": 7.0}})
    assert result.icans is not None and result.icans.grade == 1


def test_json_schema_uses_only_json_schema_bounds() -> None:
    """Pydantic writes ge/le verbatim when it cannot place them: no client would honour those."""
    import json
    import re

    text = json.dumps(aegrade.Assessment.model_json_schema())
    assert re.findall(r'"(ge|le|gt|lt)":', text) == []
    assert '"minimum": 0' in text and '"maximum": 32' in text


def test_not_an_object_is_refused(engine: aegrade.Engine) -> None:
    for payload in (None, [], "{}", 3):
        assert refused(engine, payload) == [()]


def test_not_reported_is_not_normal(engine: aegrade.Engine) -> None:
    result = engine.assess({"patient": ADULT, "vitals": {"temperature_c": 38.6}})
    assert result.crs is not None
    assert result.crs.grade == 1
    assert set(result.crs.missing) == {"hypotension", "oxygen"}
    assert result.crs.domains["hypotension"] is None and result.crs.domains["oxygen"] is None
    assert result.icans is None  # no neuro section: no ICANS result at all, not "grade 0"
