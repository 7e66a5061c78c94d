"""The episode rules without a store: when fever is masked, and the course of a domain."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from aegrade.episodes import (
    MASKING_AGENTS,
    GivenTreatment,
    GradePoint,
    Observation,
    Treatment,
    apply_fever_masking,
    domain_course,
    fever_masking,
)
from aegrade.models import Assessment

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def toci(hours: float) -> GivenTreatment:
    return GivenTreatment("tocilizumab", at(hours))


# ---- fever_masking: onset <= treatment < observation --------------------------------------------


def test_no_onset_no_masking() -> None:
    assert fever_masking(at(5), None, [toci(1)]) is None


def test_treatment_after_onset_masks_later_observations() -> None:
    masking = fever_masking(at(5), at(0), [toci(1)])
    assert masking is not None
    assert (masking.agent, masking.administered_at, masking.onset_at) == ("tocilizumab", at(1), at(0))


def test_treatment_at_the_onset_counts() -> None:
    assert fever_masking(at(5), at(1), [toci(1)]) is not None


def test_treatment_just_before_the_onset_does_not_count() -> None:
    """Premedication before CRS began is not the ASTCT 'therapy for CRS'."""
    assert fever_masking(at(5), at(1), [GivenTreatment("dexamethasone", at(1) - timedelta(microseconds=1))]) is None


def test_treatment_at_the_observation_time_does_not_mask_it() -> None:
    assert fever_masking(at(1), at(0), [toci(1)]) is None
    assert fever_masking(at(1) + timedelta(microseconds=1), at(0), [toci(1)]) is not None


def test_onset_at_the_observation_itself_is_not_history() -> None:
    assert fever_masking(at(0), at(0), [toci(0)]) is None


@pytest.mark.parametrize("agent", sorted(MASKING_AGENTS))
def test_every_anticytokine_steroid_and_antipyretic_masks(agent: str) -> None:
    assert fever_masking(at(5), at(0), [GivenTreatment(agent, at(1))]) is not None


@pytest.mark.parametrize("agent", ["blinatumomab_start", "blinatumomab_stop", "pegaspargase", "other_asparaginase"])
def test_other_agents_never_mask(agent: str) -> None:
    assert fever_masking(at(5), at(0), [GivenTreatment(agent, at(1))]) is None


def test_the_earliest_qualifying_treatment_is_named() -> None:
    masking = fever_masking(at(9), at(0), [GivenTreatment("acetaminophen", at(3)), toci(1), toci(-1)])
    assert masking is not None and masking.administered_at == at(1)


def test_masking_window_boundaries() -> None:
    given = [toci(1)]
    assert fever_masking(at(7), at(0), given, window_hours=6) is not None  # exactly 6 h later: in
    assert fever_masking(at(7) + timedelta(microseconds=1), at(0), given, window_hours=6) is None
    assert fever_masking(at(500), at(0), given) is not None  # no window: the rest of the episode


# ---- apply_fever_masking --------------------------------------------------------------------------

ADULT = {"patient": {"age_years": 40}, "vitals": {"temperature_c": 37.0}}


def test_derived_masking_is_applied_and_explained() -> None:
    masking = fever_masking(at(5), at(0), [toci(1)])
    graded, notes, interpretations = apply_fever_masking(Assessment.model_validate(ADULT), masking, at(0))
    assert graded.crs is not None and graded.crs.fever_masked is True
    assert "tocilizumab at 2026-11-20T09:00Z" in notes[0] and "onset at 2026-11-20T08:00Z" in notes[0]
    assert interpretations[0].setting == "episode_masking_window_hours"


def test_no_masking_sets_false_and_says_why() -> None:
    graded, notes, _ = apply_fever_masking(Assessment.model_validate(ADULT), None, at(0))
    assert graded.crs is not None and graded.crs.fever_masked is False
    assert "between CRS onset at 2026-11-20T08:00Z and this observation" in notes[0]


@pytest.mark.parametrize("sent", [True, False])
def test_an_explicit_value_wins_and_a_conflict_is_noted(sent: bool) -> None:
    assessment = Assessment.model_validate({**ADULT, "crs": {"fever_masked": sent}})
    masking = None if sent else fever_masking(at(5), at(0), [toci(1)])
    graded, notes, _ = apply_fever_masking(assessment, masking, at(0))
    assert graded.crs is not None and graded.crs.fever_masked is sent
    assert notes and "the sent value was used" in notes[0]


def test_an_explicit_value_that_agrees_adds_no_note() -> None:
    assessment = Assessment.model_validate({**ADULT, "crs": {"fever_masked": True}})
    _, notes, _ = apply_fever_masking(assessment, fever_masking(at(5), at(0), [toci(1)]), at(0))
    assert notes == []


def test_neuro_only_observation_is_left_alone() -> None:
    assessment = Assessment.model_validate({"patient": {"age_years": 40}, "neuro": {"ice_score": 10}})
    graded, notes, _ = apply_fever_masking(assessment, fever_masking(at(5), at(0), [toci(1)]), at(0))
    assert graded is assessment and notes == []


# ---- domain_course --------------------------------------------------------------------------------


def points(*grades: int | None) -> list[GradePoint]:
    return [
        GradePoint(at(i), g, "graded" if g else "no_crs" if g == 0 else "not_assessable") for i, g in enumerate(grades)
    ]


def test_course_of_a_resolved_episode() -> None:
    course = domain_course(points(0, 1, 3, 2, 0, 0))
    assert (course.current_grade, course.peak_grade, course.peak_at) == (0, 3, at(2))
    assert (course.onset_at, course.resolved_at) == (at(1), at(4))


def test_a_relapse_is_not_resolved() -> None:
    course = domain_course(points(1, 0, 2))
    assert course.resolved_at is None and course.current_grade == 2 and course.peak_at == at(2)


def test_not_assessable_at_the_end_is_not_resolved() -> None:
    course = domain_course(points(2, 0, None))
    assert course.resolved_at is None and course.current_grade is None and course.current_status == "not_assessable"


def test_zero_without_onset_is_not_resolved() -> None:
    course = domain_course(points(0, 0))
    assert (course.onset_at, course.resolved_at, course.peak_grade) == (None, None, 0)


def test_peak_at_is_the_first_time_the_peak_was_reached() -> None:
    assert domain_course(points(2, 1, 2)).peak_at == at(0)


def test_empty_course() -> None:
    course = domain_course([])
    assert course.model_dump() == dict.fromkeys(course.model_dump())


# ---- request models -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("observed_at", "error"),
    [
        ("2026-11-20T08:00:00", "timezone"),
        ("2026-11-20", "timezone"),
        (1_763_625_600, "ISO 8601"),
        (True, "ISO 8601"),
        ("1999-12-31T23:59:59Z", "year 2000 on"),
        ("0001-01-01T00:00:00+01:00", "year 2000 on"),
        ("9999-12-31T23:59:59-01:00", "year 2000 on"),
        ("not a time", "datetime"),
    ],
)
def test_bad_observation_times_are_refused(observed_at: object, error: str) -> None:
    with pytest.raises(ValidationError, match=error) as info:
        Observation.model_validate({"patient": {"age_years": 5}, "observed_at": observed_at})
    assert info.value.errors()[0]["loc"] == ("observed_at",)


def test_future_tolerance_is_five_minutes() -> None:
    now = datetime.now(timezone.utc)
    Observation.model_validate({"patient": {"age_years": 5}, "observed_at": (now + timedelta(minutes=4, seconds=50)).isoformat()})
    with pytest.raises(ValidationError, match="5 minutes in the future"):
        Observation.model_validate({"patient": {"age_years": 5}, "observed_at": (now + timedelta(minutes=5, seconds=10)).isoformat()})


def test_times_are_kept_in_utc() -> None:
    observation = Observation.model_validate({"patient": {"age_years": 5}, "observed_at": "2026-11-20T09:00:00+01:00"})
    assert observation.observed_at == T0 and observation.observed_at.utcoffset() == timedelta(0)
    assert "observed_at" not in observation.assessment().model_dump()


def test_treatment_dose_unit_needs_a_dose() -> None:
    with pytest.raises(ValidationError) as info:
        Treatment.model_validate({"agent": "tocilizumab", "administered_at": "2026-11-20T09:00:00Z", "dose_unit": "mg/kg"})
    assert info.value.errors()[0]["loc"] == ("dose_unit",)


@pytest.mark.parametrize(
    "change",
    [{"agent": "aspirin"}, {"dose_mg": True}, {"dose_mg": float("nan")}, {"dose_mg": 0}, {"route": "iv"}, {"dose_mg": "8"}],
)
def test_bad_treatments_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Treatment.model_validate({"agent": "tocilizumab", "administered_at": "2026-11-20T09:00:00Z", **change})
