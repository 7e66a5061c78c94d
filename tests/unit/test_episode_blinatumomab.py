"""Seizures, recurrence and resolution derived from the episode for the blinatumomab label
(blinatumomab-actions.md v1.1 §4-5): the pure logic of aegrade.episodes.blinatumomab_course."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import aegrade
from aegrade.episodes import GivenTreatment, NeuroPoint, blinatumomab_course
from aegrade.models import Assessment

T0 = datetime(2026, 11, 1, 8, tzinfo=timezone.utc)
COURSE = {"grade_at_least": 3, "resolved_at_most": 1, "resolution_days": 7}


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def observation(**blinatumomab: Any) -> Assessment:
    return Assessment.model_validate({
        "patient": {"age_years": 40, "weight_kg": 70},
        "neuro": {"ice_score": 2, "consciousness": "alert", "seizure": "none", "motor": "none",
                  "cerebral_edema": "none", "icp_signs": []},
        "blinatumomab": {"dose": {"value": 28, "unit": "mcg/day"}, **blinatumomab},
    })


def test_two_seizures_in_one_exposure_give_discontinue() -> None:
    treatments = [GivenTreatment("blinatumomab_start", hours(0))]
    earlier = [NeuroPoint(hours(10), 3, True)]
    now = observation()
    now = now.model_copy(update={"neuro": now.neuro.model_copy(update={"seizure": "resolved_rapidly"})})  # type: ignore[union-attr]
    derived, notes = blinatumomab_course(now, hours(30), earlier, treatments, **COURSE)
    assert derived.blinatumomab is not None and derived.blinatumomab.seizures_this_course == 2
    assert any("seizures_this_course derived" in n for n in notes)
    assert [a.id for a in aegrade.assess(derived).actions] == ["BLIN-SEIZURE-DISCONTINUE"]


def test_seizures_before_the_current_start_do_not_count() -> None:
    treatments = [GivenTreatment("blinatumomab_start", hours(0)), GivenTreatment("blinatumomab_start", hours(20))]
    derived, _ = blinatumomab_course(observation(), hours(30), [NeuroPoint(hours(10), 3, True)], treatments, **COURSE)
    assert derived.blinatumomab is not None and derived.blinatumomab.seizures_this_course == 0


def test_icans_3_stop_restart_icans_3_again_is_a_recurrence() -> None:
    treatments = [
        GivenTreatment("blinatumomab_start", hours(0)),
        GivenTreatment("blinatumomab_stop", hours(25)),
        GivenTreatment("blinatumomab_start", hours(120)),
    ]
    earlier = [NeuroPoint(hours(24), 3, False), NeuroPoint(hours(100), 0, False)]
    derived, notes = blinatumomab_course(observation(), hours(150), earlier, treatments, **COURSE)
    assert derived.blinatumomab is not None and derived.blinatumomab.recurred_after_restart is True
    assert any("recurrence" in n for n in notes)
    assert [a.id for a in aegrade.assess(derived).actions] == ["BLIN-NEURO-G3-DISCONTINUE"]


def test_a_first_event_is_not_a_recurrence_and_withholds() -> None:
    treatments = [GivenTreatment("blinatumomab_start", hours(0))]
    derived, _ = blinatumomab_course(observation(), hours(30), [], treatments, **COURSE)
    assert derived.blinatumomab is not None and derived.blinatumomab.recurred_after_restart is None
    assert aegrade.assess(derived).actions[0].id == "BLIN-NEURO-G3-WITHHOLD"


def test_unresolved_for_more_than_7_days_discontinues_and_at_7_it_does_not() -> None:
    earlier = [NeuroPoint(hours(0), 3, False), NeuroPoint(hours(72), 2, False)]
    late, notes = blinatumomab_course(observation(), hours(7 * 24 + 1), earlier, [], **COURSE)
    assert late.blinatumomab is not None and late.blinatumomab.days_to_resolution is not None
    assert any("days_to_resolution derived" in n for n in notes)
    assert [a.id for a in aegrade.assess(late).actions] == ["BLIN-NEURO-G3-DISCONTINUE"]
    on_time, _ = blinatumomab_course(observation(), hours(7 * 24), earlier, [], **COURSE)
    assert on_time.blinatumomab is not None and on_time.blinatumomab.days_to_resolution is None


def test_a_resolution_in_between_restarts_the_count() -> None:
    earlier = [NeuroPoint(hours(0), 3, False), NeuroPoint(hours(48), 1, False), NeuroPoint(hours(100), 3, False)]
    derived, _ = blinatumomab_course(observation(), hours(8 * 24), earlier, [], **COURSE)
    assert derived.blinatumomab is not None and derived.blinatumomab.days_to_resolution is None


def test_values_sent_by_the_clinician_win() -> None:
    treatments = [GivenTreatment("blinatumomab_start", hours(0))]
    derived, notes = blinatumomab_course(
        observation(seizures_this_course=0), hours(30), [NeuroPoint(hours(10), 3, True)], treatments, **COURSE
    )
    assert derived.blinatumomab is not None and derived.blinatumomab.seizures_this_course == 0
    assert not any("seizures_this_course" in n for n in notes)
